"""Plumbing shared by the ``cuda`` adapters (the ``_cuda_*`` functions at the end of each op module).

The kernels in ``csrc/cuda`` run on CuPy's current stream and never synchronise.  Bad input
that only the device sees (an id outside ``[0, V)``, bad CSR offsets, unsorted sparse-Adam
rows, a target outside ``[0, 1]``) is reported through a *device error word*: one uint64 per
(thread, device, stream) that stays at ``NO_ERROR`` until a kernel ``atomicMin``'s a code
into it (the encoding is in ``csrc/cuda/common.cuh``).  Kernels that write state the caller
keeps (an ``out=`` gradient, parameters, Adam moments) test the word first and write nothing
when a check failed, so an error still leaves every output untouched.

When the word is read (the documented choice):

* By default right after each op that can fail (embedding, embedding_bag and their
  backwards, sparse_adam_step): one device-to-host read of 16 bytes, so the same
  ``IndexError`` / ``ValueError`` as on the CPU comes from the call that caused it.
* Ops that synchronise anyway read it with their result in the same copy: bce_with_logits
  (the loss is returned as a Python float) and the sparse backwards (the number of unique
  rows sizes the values array) outside a training step.
* Inside ``with deferred_checks():`` (for a training loop) the failing ops do not
  synchronise: each call records how it would raise, and the word is read at the next op
  that synchronises anyway (the loss of the step), or when the block exits.  The earliest
  failing call raises, with the same message as in the default mode; later kernels of the
  step, Adam included, skip their writes, so parameters are never updated from bad input.
  The sparse backwards then return a ``PendingRows`` whose row count stays on the device
  (``sparse_gradient``), so lazy Adam's step needs no read-back either.

Scratch and workspaces are allocated here through CuPy (its memory pool, which is stream
ordered); the C++ launchers never allocate.
"""
from __future__ import annotations

import contextlib
import os
import threading

NO_ERROR = (1 << 64) - 1
I64_MAX = (1 << 63) - 1  # the launchers' sizes are int64
ERR_ID, ERR_OFFSET, ERR_ORDER, ERR_TARGET = 0, 1, 2, 3
_TAG_SHIFT = 48
_MAX_PENDING = (1 << 16) - 2  # tags must stay below the NO_ERROR pattern

# Set FASTSCALE_CUDA_ATOMIC_BACKWARD=1 to use the atomicAdd backward of embedding and
# embedding_bag (dense gradient) instead of the deterministic sort + segment reduction.
ATOMIC_ENV = "FASTSCALE_CUDA_ATOMIC_BACKWARD"

_local = threading.local()


def cupy():
    import cupy as cp

    return cp


class _State:
    """The error word and one result word (a count or a float64 loss) of one stream."""

    def __init__(self, cp):
        import numpy as np

        self.buf = cp.asarray(np.full(2, NO_ERROR, dtype=np.uint64))  # once per stream
        self.err = self.buf.data.ptr
        self.result = self.buf.data.ptr + 8
        self.pending: list = []  # how each call (by tag) raises


def _states() -> dict:
    d = getattr(_local, "states", None)
    if d is None:
        d = _local.states = {}
    return d


def state() -> _State:
    """The error-word state of this thread, device and current stream."""
    cp = cupy()
    stream = cp.cuda.get_current_stream()
    key = (cp.cuda.runtime.getDevice(), stream.ptr)
    st = _states().get(key)
    if st is None:
        st = _states()[key] = _State(cp)
    return st


def stream_ptr() -> int:
    return cupy().cuda.get_current_stream().ptr


def begin(raiser):
    """Before an op that can fail: ``(state, tag, stream)``.

    ``raiser(kind, pos)`` raises the op's exception for an error code of this call.
    """
    st = state()
    if getattr(_local, "deferred", 0) and len(st.pending) >= _MAX_PENDING:
        check(st)
    tag = len(st.pending) << _TAG_SHIFT
    st.pending.append(raiser)
    return st, tag, stream_ptr()


def finish(st: _State) -> None:
    """After an op that can fail: read the word now, unless checks are deferred."""
    if not getattr(_local, "deferred", 0):
        check(st)


def _read(st: _State):
    words = st.buf.get()  # synchronises with the stream
    return int(words[0]), words[1:2].copy()


def _raise(st: _State, code: int):
    cp = cupy()
    pending, st.pending = st.pending, []
    st.buf[:1].fill(cp.uint64(NO_ERROR))
    call = code >> _TAG_SHIFT
    pos = (code >> 2) & ((1 << 44) - 1)
    kind = code & 3
    if call < len(pending):
        pending[call](kind, pos)
    raise RuntimeError(f"fastscale cuda: unexpected device error code {code:#x} (call {call}, kind {kind}, position {pos})")


def check(st: _State):
    """Read the word (one synchronisation); raise the earliest pending error. Returns the result word."""
    code, result = _read(st)
    if code != NO_ERROR:
        _raise(st, code)
    st.pending.clear()
    return result


def result_count(st: _State) -> int:
    return int(check(st)[0])


def result_float(st: _State) -> float:
    return float(check(st).view("float64")[0])


@contextlib.contextmanager
def deferred_checks():
    """Defer the device-side input checks of the cuda ops to the next synchronising op or the
    end of the block (see the module docstring)."""
    _local.deferred = getattr(_local, "deferred", 0) + 1
    ok = False
    try:
        yield
        ok = True
    finally:
        _local.deferred -= 1
        if _local.deferred == 0:
            for st in list(_states().values()):
                if st.pending:
                    if ok:
                        check(st)
                    else:  # an exception is already on its way: drop what was pending
                        st.pending.clear()
                        st.buf[:1].fill(cupy().uint64(NO_ERROR))


def is_deferred() -> bool:
    return bool(getattr(_local, "deferred", 0))


def sparse_gradient(st: _State, launch_rows, launch_values, N: int, D: int, dtype, V: int):
    """The sparse backwards' two launches: ``launch_rows(rows, count_ptr)`` writes the unique
    rows and their count U; ``launch_values(values, U_or_bound, count_ptr, err_ptr)`` reduces them.

    Default: U is read back with the error word (raising the op's error for bad ids) and
    ``(rows, values)`` come exactly sized.  Inside ``deferred_checks`` nothing is read back:
    values are sized for all N ids and a :class:`PendingRows` keeps the device count, which
    lazy Adam passes straight to its kernel."""
    from ._common import PendingRows

    cp = cupy()
    rows = cp.empty(max(N, 1), cp.int64)
    if not is_deferred():
        launch_rows(rows, st.result)
        U = result_count(st)
        values = cp.empty((U, D), dtype)
        launch_values(values, U, 0, 0)
        return rows[:U], values
    count = cp.empty(1, cp.int64)
    launch_rows(rows, count.data.ptr)
    values = cp.empty((rows.shape[0], D), dtype)  # as rows: one row even for no ids
    launch_values(values, N, count.data.ptr, st.err)
    return PendingRows(rows, values, count, V, lambda: check(st))


def deterministic() -> bool:
    return os.environ.get(ATOMIC_ENV, "") in ("", "0")


def workspace(nbytes: int):
    return cupy().empty(max(int(nbytes), 1), dtype=cupy().uint8)


def ptr(a) -> int:
    """Device address of a cupy array, or 0 for None."""
    return 0 if a is None else a.data.ptr
