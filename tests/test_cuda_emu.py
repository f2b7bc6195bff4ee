"""The CUDA kernels (csrc/cuda) on the CPU emulator (fastscale._cuda_emu, csrc/cuda/emu).

The same launchers the ``cuda`` backend calls, built as host C++ on an emulation of the CUDA
they use: device pointers are numpy addresses, called with the arguments the ``_cuda_*``
adapters of each op module pass (workspaces sized by the *_workspace functions, the error word
and result word of _cuda_util._State), and compared with each op's float64 ``reference()``.

Every array ends at an inaccessible page and starts after canary bytes (a kernel reading or
writing past an end, or writing before a start, fails the test); arrays are 16-byte aligned
or, on request, one element off so the launchers take the scalar path instead of the 16-byte
vector one; workspaces hold random bytes.  The emulator runs blocks and threads in a
chosen order (forward, reverse, seeded random: hypothesis draws it), so a result that depends
on scheduling (a race) shows as a failure or as a difference between orders.

Build: cmake -S . -B build/emu -G Ninja -DFASTSCALE_INPLACE=ON -DFASTSCALE_CUDA=OFF
-DFASTSCALE_CUDA_EMU=ON -Dpybind11_DIR=$(python -m pybind11 --cmakedir) && cmake --build build/emu
(.ci/run does it and sets FASTSCALE_REQUIRE_CUDA_EMU=1, so the tests cannot silently skip there).
"""
from __future__ import annotations

import importlib
import os
import pathlib
import re
import threading
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_emu():
    """fastscale._cuda_emu built in place, else the newest non-sanitized copy under build/ (CI
    tests an installed fastscale, which never carries the emulator module): the emulated
    GPU's loader (tests/emulated_gpu.py), None when there is none."""
    from .emulated_gpu import load_cuda_emu

    try:
        return load_cuda_emu()
    except ImportError:
        return None


cu = _load_emu()
if cu is None:  # pragma: no cover - depends on the build
    _msg = ("fastscale._cuda_emu is not built: cmake -S . -B build/emu -G Ninja -DFASTSCALE_INPLACE=ON "
            "-DFASTSCALE_CUDA=OFF -DFASTSCALE_CUDA_EMU=ON ... && cmake --build build/emu (see .ci/run)")
    if os.environ.get("FASTSCALE_REQUIRE_CUDA_EMU") == "1":
        raise ImportError(_msg)
    pytest.skip(_msg, allow_module_level=True)

from fastscale import _checks as C

from .emulated_gpu import CANARY, guarded
from fastscale.ops import _cuda_util as CU

E = importlib.import_module("fastscale.ops.embedding")
EB = importlib.import_module("fastscale.ops.embedding_bag")
MMP = importlib.import_module("fastscale.ops.masked_mean_pool")
DN = importlib.import_module("fastscale.ops.dense")
BCE = importlib.import_module("fastscale.ops.bce_with_logits")
AD = importlib.import_module("fastscale.ops.adam")

NO_ERROR = CU.NO_ERROR
FLOATS = (np.float32, np.float64)
INTS = (np.int32, np.int64)
ORDERS = (0, 1, 2)  # forward, reverse, seeded random
# Feature sizes: not a multiple of 4 (scalar path), multiples (16-byte vectors), and beyond
# 32 / 64 / 128 / 256 units per warp (2, 4, 8 units per lane; column chunks).
DIMS = (0, 1, 2, 3, 4, 5, 8, 17, 64, 130, 260, 301, 1100)

# FASTSCALE_EMU_SCALE=20 multiplies every test's hypothesis examples (a longer bug hunt).
SCALE = float(os.environ.get("FASTSCALE_EMU_SCALE", "1"))


def ex(n):
    return settings(max_examples=max(1, int(n * SCALE)))



def test_module_constants_match_python():
    assert (cu.NO_ERROR, cu.ERR_ID, cu.ERR_OFFSET, cu.ERR_ORDER, cu.ERR_TARGET) == (
        CU.NO_ERROR, CU.ERR_ID, CU.ERR_OFFSET, CU.ERR_ORDER, CU.ERR_TARGET)


# ---------------------------------------------------------------------------- helpers
class Arena:
    """Arrays that end at an inaccessible page (a kernel reading or writing past the end
    faults, which the emulator reports as an illegal address) with canary bytes before them
    (a write before the start fails check()).  16-byte aligned when the byte length is a
    multiple of 16, or, with misalign, one element off 16-byte alignment so the launchers take their scalar
    path (the element between the array and the guard page is a canary then)."""

    def __init__(self):
        self.bufs = []

    def array(self, a, misalign=False, aligned=False):
        a = np.ascontiguousarray(a)
        n = a.nbytes
        mm, raw = guarded(n, 128)
        start = raw.size - n - (a.itemsize if misalign and n % 16 == 0 else 0)
        if misalign and (raw.ctypes.data + start) % 16 == 0:
            start -= a.itemsize
        if aligned:  # a 16-byte aligned start whatever the length (a gap of < 16 bytes before the guard)
            start -= (raw.ctypes.data + start) % 16
        view = raw[start : start + n].view(a.dtype).reshape(a.shape)
        view[...] = a
        self.bufs.append((mm, raw, start, n))
        return view

    def err(self, preset=NO_ERROR):
        """The error word and the result word, as _cuda_util._State.buf."""
        return self.array(np.array([preset, NO_ERROR], np.uint64))

    def check(self):
        for _, raw, start, n in self.bufs:
            assert (raw[:start] == CANARY).all(), "a kernel wrote before the start of an array"
            assert (raw[start + n :] == CANARY).all(), "a kernel wrote past the end of an array"


_garbage_rng = np.random.default_rng(1234)


def garbage(nbytes):
    """A workspace as CuPy hands it out: uninitialised (here: random bytes)."""
    return _garbage_rng.integers(0, 256, max(int(nbytes), 1), dtype=np.uint8)


def P(a):
    """The device pointer of a: 0 for an empty array, as CuPy's data.ptr of a zero-byte
    allocation (a launcher must not read a null pointer as 'argument absent' when it is
    merely empty: the emulated-GPU op tests found dense_backward doing so)."""
    return 0 if a is None or a.size == 0 else a.ctypes.data


def sched(order, seed=0):
    cu.emu_set_schedule(order, seed)


def code(tag, prio, pos, kind):
    return (tag << 48) | (prio << 46) | (pos << 2) | kind


def decode(word):
    word = int(word)
    return word >> 48, (word >> 46) & 3, (word >> 2) & ((1 << 44) - 1), word & 3


def close(got, ref, dtype, scale=1.0, abs_sum=None, n=0):
    """got (dtype) against the float64 ref.  For sums of up to n terms whose absolute values
    add up to abs_sum (per element), the absolute tolerance is also at least the rounding
    bound of any summation order, gamma_n * abs_sum (Higham, Accuracy and Stability of
    Numerical Algorithms, (4.4)): one row repeated in every bag sums correlated terms, whose
    partial sums grow linearly and leave the sqrt(n) scale behind."""
    tol = 2e-5 if dtype == np.float32 else 1e-12
    if abs_sum is None:
        np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale)
        return
    u = np.finfo(dtype).eps / 2
    atol = np.maximum(tol * scale, n * u / (1 - n * u) * np.asarray(abs_sum))
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    bad = ~(np.abs(got - ref) <= atol + tol * np.abs(ref))  # NaN is bad
    assert not bad.any(), (f"{int(bad.sum())} of {bad.size} beyond tolerance; first at "
                           f"{np.argwhere(bad)[0]}: {got[bad][0]} vs {ref[bad][0]} (atol {atol[bad][0]:g})")


def first_bad_offset(off, N):
    """csrc/cpu/common.cpp first_bad_offset, the order the CPU backend reports in."""
    if off[0] != 0:
        return 0
    for i in range(1, len(off)):
        if off[i] < off[i - 1] or off[i] > N:
            return i
    return len(off) - 1 if off[-1] != N else -1


# ---------------------------------------------------------------------------- strategies
common = dict(
    ft=st.sampled_from(FLOATS), it=st.sampled_from(INTS), misalign=st.booleans(), order=st.sampled_from(ORDERS),
    seed=st.integers(0, 2**32 - 1),
)


def bags_of(rng, V, B, T, csr, it, ot, pad_rate=0.3, pad=-1):
    """ids (and offsets) of B bags: CSR with lengths 0..T (empty bags), or padded (B, T)."""
    if csr:
        lengths = rng.integers(0, T + 1, B)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(ot)
        ids = rng.integers(0, V, int(offsets[-1])).astype(it)
    else:
        offsets = None
        ids = rng.integers(0, V, (B, T)).astype(it)
    if pad >= 0 and ids.size:
        ids[rng.random(ids.shape) < pad_rate] = pad
        if ids.size and rng.random() < 0.5:  # an all-padding bag
            if csr and B and offsets[1] > 0:
                ids[: offsets[1]] = pad
            elif not csr and B:
                ids[0] = pad
    return ids, offsets


# ---------------------------------------------------------------------------- embedding
@given(V=st.integers(1, 12), D=st.sampled_from(DIMS), N=st.integers(0, 40), **common)
@ex(150)
def test_embedding_forward(V, D, N, ft, it, misalign, order, seed):
    rng = np.random.default_rng(seed)
    ar = Arena()
    w = ar.array(rng.standard_normal((V, D)).astype(ft), misalign)
    ids = ar.array(rng.integers(0, V, N).astype(it))
    out = ar.array(np.full((N, D), np.nan, ft), misalign)
    err = ar.err()
    sched(order, seed)
    cu.embedding_forward(P(w), P(ids), P(out), V, D, N, w.itemsize, ids.itemsize, P(err), 0, 0)
    assert err[0] == NO_ERROR
    np.testing.assert_array_equal(out, E.reference(w, ids))
    ar.check()


@given(V=st.integers(1, 6), N=st.integers(1, 70), nbad=st.integers(1, 3), tag=st.integers(0, 0xFFFE), **common)
@ex(150)
def test_embedding_forward_bad_ids(V, N, nbad, tag, ft, it, misalign, order, seed):
    rng = np.random.default_rng(seed)
    ar = Arena()
    D = 5
    w = ar.array(rng.standard_normal((V, D)).astype(ft), misalign)
    ids = rng.integers(0, V, N).astype(it)
    bad = rng.choice(N, min(nbad, N), replace=False)
    ids[bad] = rng.choice([-1, V, V + 7, -(2**31) if it == np.int32 else -(2**40)], bad.size)
    ids = ar.array(ids)
    out = ar.array(np.zeros((N, D), ft))
    err = ar.err()
    sched(order, seed)
    cu.embedding_forward(P(w), P(ids), P(out), V, D, N, w.itemsize, ids.itemsize, P(err), tag << 48, 0)
    assert int(err[0]) == code(tag, 0, int(bad.min()), CU.ERR_ID)
    # The message Python builds from the word is the numpy backend's.
    _, _, pos, kind = decode(err[0])
    with pytest.raises(IndexError) as want:
        E.embedding(np.asarray(w), np.asarray(ids), backend="numpy")
    with pytest.raises(IndexError, match=re.escape(str(want.value))):
        C.raise_bad_id(E.OP, "ids", ids, pos, V)
    ar.check()


def run_embedding_backward(ar, dout, ids, V, det, err, grad_fill=np.nan):
    N, D = ids.size, dout.shape[-1]
    grad = ar.array(np.full((V, D), grad_fill, dout.dtype), misalign=dout.ctypes.data % 16 != 0)
    ws = ar.array(garbage(cu.embedding_backward_workspace(N, V, dout.itemsize, False))) if det else None
    cu.embedding_backward_dense(P(dout), P(ids), P(grad), V, D, N, dout.itemsize, ids.itemsize, det, P(ws),
                                0 if ws is None else ws.nbytes, P(err), 0, 0)
    return grad


def counted_values(ar, err, N, D, dtype, misalign, counted, launch):
    """The values launch of a sparse backward: U read back and values sized exactly, or
    (counted) the count word passed on and values sized for all N ids, whose tail must stay
    unwritten.  Returns values[:U], or None when the ids check failed."""
    if not counted:
        if err[0] != NO_ERROR:
            return None
        U = int(err[1])
        values = ar.array(np.full((U, D), np.nan, dtype), misalign=misalign)
        launch(values, U, 0, 0)
        return values
    values = ar.array(np.full((N, D), np.nan, dtype), misalign=misalign)
    launch(values, N, P(err) + 8, P(err))
    U = int(err[1]) if err[0] == NO_ERROR else 0
    assert np.isnan(values[U:]).all(), "the values kernel wrote past the device count (or after a failed check)"
    return None if err[0] != NO_ERROR else values[:U]


def run_embedding_sparse(ar, dout, ids, V, err, counted=False):
    N, D = ids.size, dout.shape[-1]
    ws = ar.array(garbage(cu.embedding_backward_workspace(N, V, dout.itemsize, True)))
    rows = ar.array(np.full(max(N, 1), -5, np.int64))
    cu.embedding_backward_rows(P(ids), P(rows), P(err) + 8, V, N, ids.itemsize, P(ws), ws.nbytes, P(err), 0, 0)
    assert err[0] == NO_ERROR
    values = counted_values(ar, err, N, D, dout.dtype, dout.ctypes.data % 16 != 0, counted, lambda vals, U, c, e: (
        cu.embedding_backward_values(P(dout), P(vals), V, D, N, U, dout.itemsize, P(ws), ws.nbytes, c, e, 0)))
    return rows[:values.shape[0]], values


@given(V=st.integers(1, 12), D=st.sampled_from(DIMS), N=st.integers(0, 70), det=st.booleans(), counted=st.booleans(),
       **common)
@ex(150)
def test_embedding_backward(V, D, N, det, counted, ft, it, misalign, order, seed):
    rng = np.random.default_rng(seed)
    ar = Arena()
    ids = ar.array(rng.integers(0, V, N).astype(it))
    dout = ar.array(rng.standard_normal((N, D)).astype(ft), misalign)
    err = ar.err()
    sched(order, seed)
    ref = E.reference_backward(dout, ids, V)
    abs_sum = E.reference_backward(np.abs(dout), ids, V)
    grad = run_embedding_backward(ar, dout, ids, V, det, err)
    assert err[0] == NO_ERROR
    close(grad, ref, ft, scale=np.sqrt(N + 1), abs_sum=abs_sum, n=N)
    rows, values = run_embedding_sparse(ar, dout, ids, V, err, counted)
    np.testing.assert_array_equal(rows, np.unique(ids))
    close(values, ref[rows], ft, scale=np.sqrt(N + 1), abs_sum=abs_sum[rows], n=N)
    ar.check()


# ---------------------------------------------------------------------------- embedding_bag
def bag_call(ar, w, ids, offsets, psw, pad, mean, err, tag=0):
    V, D = w.shape
    B = ids.shape[0] if offsets is None else offsets.shape[0] - 1
    Tlen = ids.shape[1] if offsets is None else 0
    osize = 0 if offsets is None else offsets.itemsize
    out = ar.array(np.full((B, D), np.nan, w.dtype), misalign=w.ctypes.data % 16 != 0)
    cu.embedding_bag_forward(P(w), P(ids), P(offsets), P(psw), pad, mean, P(out), V, D, B, ids.size, Tlen, w.itemsize,
                             ids.itemsize, osize, P(err), tag, 0)
    return out


bag_params = dict(
    V=st.integers(1, 8), D=st.sampled_from(DIMS), B=st.integers(0, 20), T=st.integers(0, 40), csr=st.booleans(),
    ot=st.sampled_from(INTS), mode=st.sampled_from(["sum", "mean"]), weighted=st.booleans(), padded=st.booleans(),
)


def make_bags(rng, ar, V, B, T, csr, it, ot, ft, mode, weighted, padded):
    pad = int(rng.integers(0, V)) if padded else -1
    ids, offsets = bags_of(rng, V, B, T, csr, it, ot, pad=pad)
    psw = rng.standard_normal(ids.shape).astype(ft) if weighted and mode == "sum" else None
    ids = ar.array(ids)
    offsets = None if offsets is None else ar.array(offsets)
    psw = None if psw is None else ar.array(psw)
    return ids, offsets, psw, pad


@given(**bag_params, **common)
@ex(150)
def test_embedding_bag_forward(V, D, B, T, csr, ot, mode, weighted, padded, ft, it, misalign, order, seed):
    rng = np.random.default_rng(seed)
    ar = Arena()
    w = ar.array(rng.standard_normal((V, D)).astype(ft), misalign)
    ids, offsets, psw, pad = make_bags(rng, ar, V, B, T, csr, it, ot, ft, mode, weighted, padded)
    err = ar.err()
    sched(order, seed)
    out = bag_call(ar, w, ids, offsets, psw, pad, mode == "mean", err)
    assert err[0] == NO_ERROR
    kw = dict(mode=mode, padding_idx=None if pad < 0 else pad)
    ref = EB.reference(w, ids, offsets, per_sample_weights=psw, **kw)
    abs_sum = EB.reference(np.abs(w), ids, offsets, per_sample_weights=None if psw is None else np.abs(psw), **kw)
    close(out, ref, ft, scale=np.sqrt(T + 1), abs_sum=abs_sum, n=T)
    ar.check()


def bag_backward(ar, dout, ids, offsets, psw, pad, mean, V, det, err, tag=0, grad_fill=np.nan):
    B, D = dout.shape
    N = ids.size
    Tlen = ids.shape[1] if offsets is None else 0
    osize = 0 if offsets is None else offsets.itemsize
    grad = ar.array(np.full((V, D), grad_fill, dout.dtype), misalign=dout.ctypes.data % 16 != 0)
    ws = ar.array(garbage(cu.embedding_bag_backward_workspace(N, B, V, dout.itemsize, False))) if det else None
    cu.embedding_bag_backward_dense(P(dout), P(ids), P(offsets), P(psw), pad, mean, P(grad), V, D, B, N, Tlen,
                                    dout.itemsize, ids.itemsize, osize, det, P(ws), 0 if ws is None else ws.nbytes,
                                    P(err), tag, 0)
    return grad


def bag_sparse(ar, dout, ids, offsets, psw, pad, mean, V, err, tag=0, counted=False):
    B, D = dout.shape
    N = ids.size
    Tlen = ids.shape[1] if offsets is None else 0
    osize = 0 if offsets is None else offsets.itemsize
    ws = ar.array(garbage(cu.embedding_bag_backward_workspace(N, B, V, dout.itemsize, True)))
    rows = ar.array(np.full(max(N, 1), -5, np.int64))
    cu.embedding_bag_backward_rows(P(ids), P(offsets), P(psw), pad, mean, P(rows), P(err) + 8, V, B, N, Tlen,
                                   dout.itemsize, ids.itemsize, osize, P(ws), ws.nbytes, P(err), tag, 0)
    values = counted_values(ar, err, N, D, dout.dtype, dout.ctypes.data % 16 != 0, counted, lambda vals, U, c, e: (
        cu.embedding_bag_backward_values(P(dout), P(vals), V, D, B, N, U, dout.itemsize, P(ws), ws.nbytes, c, e, 0)))
    return (None, None) if values is None else (rows[:values.shape[0]], values)


@given(**bag_params, det=st.booleans(), counted=st.booleans(), **common)
@ex(150)
def test_embedding_bag_backward(V, D, B, T, csr, ot, mode, weighted, padded, det, counted, ft, it, misalign, order,
                                seed):
    rng = np.random.default_rng(seed)
    ar = Arena()
    ids, offsets, psw, pad = make_bags(rng, ar, V, B, T, csr, it, ot, ft, mode, weighted, padded)
    dout = ar.array(rng.standard_normal((B, D)).astype(ft), misalign)
    err = ar.err()
    sched(order, seed)
    mean = mode == "mean"
    kw = dict(num_embeddings=V, mode=mode, per_sample_weights=psw, padding_idx=None if pad < 0 else pad)
    ref = EB.reference_backward(dout, ids, offsets, **kw)
    abs_sum = EB.reference_backward(np.abs(dout), ids, offsets, **dict(kw, per_sample_weights=None if psw is None
                                                                        else np.abs(psw)))
    grad = bag_backward(ar, dout, ids, offsets, psw, pad, mean, V, det, err)
    assert err[0] == NO_ERROR
    close(grad, ref, ft, scale=np.sqrt(ids.size + 1), abs_sum=abs_sum, n=ids.size)
    rows, values = bag_sparse(ar, dout, ids, offsets, psw, pad, mean, V, err, counted=counted)
    want_rows = EB.embedding_bag_backward(np.asarray(dout), np.asarray(ids), None if offsets is None else np.asarray(offsets),
                                          sparse=True, backend="numpy", **kw).rows
    np.testing.assert_array_equal(rows, want_rows)
    close(values, ref[rows], ft, scale=np.sqrt(ids.size + 1), abs_sum=abs_sum[rows], n=ids.size)
    ar.check()


@given(V=st.integers(1, 6), B=st.integers(1, 12), T=st.integers(1, 8), nbad=st.integers(1, 3),
       what=st.sampled_from(["offsets", "ids", "both"]), ot=st.sampled_from(INTS), tag=st.integers(0, 0xFFFE),
       det=st.booleans(), **common)
@ex(150)
def test_embedding_bag_bad_input(V, B, T, nbad, what, ot, tag, det, ft, it, misalign, order, seed):
    """Bad offsets (prio 0) win over bad ids (prio 1); the first position of each, as the CPU
    reports; the dense backward then writes nothing; Python decodes the word into the error."""
    rng = np.random.default_rng(seed)
    ids, offsets = bags_of(rng, V, B, T, True, it, ot)
    N = ids.size
    if what in ("ids", "both") and N:
        bad = rng.choice(N, min(nbad, N), replace=False)
        ids[bad] = rng.choice([-1, V, V + 3], bad.size)
    if what in ("offsets", "both"):
        for i in rng.choice(B + 1, min(nbad, B + 1), replace=False):
            offsets[i] = rng.integers(-2, N + 3)
    boff = first_bad_offset(offsets, N)
    bid = next((k for k in range(N) if not 0 <= ids[k] < V), -1)
    if boff >= 0:
        want = code(tag, 0, boff, CU.ERR_OFFSET)
    elif bid >= 0:
        want = code(tag, 1, bid, CU.ERR_ID)
    else:
        want = NO_ERROR
    ar = Arena()
    ids, offsets = ar.array(ids), ar.array(offsets)
    w = ar.array(rng.standard_normal((V, 4)).astype(ft), misalign)
    dout = ar.array(rng.standard_normal((B, 4)).astype(ft), misalign)
    sched(order, seed)
    for call in ("forward", "backward", "sparse"):
        err = ar.err()
        if call == "forward":
            out = bag_call(ar, w, ids, offsets, None, -1, True, err, tag << 48)
            if boff >= 0:  # no kernel reads a range taken from bad offsets
                assert np.isnan(out).all()
        elif call == "backward":
            grad = bag_backward(ar, dout, ids, offsets, None, -1, True, V, det, err, tag << 48, grad_fill=7.0)
            if want != NO_ERROR:
                assert (grad == 7.0).all(), "the backward wrote the gradient after a failed check"
        else:
            bag_sparse(ar, dout, ids, offsets, None, -1, True, V, err, tag << 48, counted=True)
        assert int(err[0]) == want, (call, decode(err[0]), decode(want))
    if want != NO_ERROR:
        _, _, pos, kind = decode(want)
        with pytest.raises(ValueError if kind == CU.ERR_OFFSET else IndexError):
            EB._cuda_raiser(EB.OP, ids, offsets, V)(kind, pos)
    ar.check()


@pytest.mark.parametrize("which", ["embedding", "embedding_bag", "embedding_bag_atomic", "embedding_atomic"])
def test_backward_skips_when_word_already_set(which):
    """An error of an earlier call (deferred checks) leaves the gradient untouched."""
    rng = np.random.default_rng(0)
    ar = Arena()
    V, D = 5, 8
    preset = code(3, 0, 1, CU.ERR_ID)
    err = ar.err(preset)
    ids = ar.array(rng.integers(0, V, (4, 3)).astype(np.int64))
    if which.startswith("embedding_bag"):
        dout = ar.array(rng.standard_normal((4, D)).astype(np.float32))
        grad = bag_backward(ar, dout, ids, None, None, -1, True, V, "atomic" not in which, err, grad_fill=7.0)
    else:
        dout = ar.array(rng.standard_normal((12, D)).astype(np.float32))
        grad = run_embedding_backward(ar, dout, ids, V, "atomic" not in which, err, grad_fill=7.0)
    assert (grad == 7.0).all()
    assert int(err[0]) == preset
    ar.check()


# ---------------------------------------------------------------------------- masked_mean_pool
@given(B=st.integers(0, 6), T=st.integers(0, 20), D=st.sampled_from(DIMS), p=st.sampled_from([0.0, 0.5, 1.0]),
       **common)
@ex(150)
def test_masked_mean_pool(B, T, D, p, ft, it, misalign, order, seed):
    rng = np.random.default_rng(seed)
    ar = Arena()
    x = rng.standard_normal((B, T, D)).astype(ft)
    mask = rng.random((B, T)) < p
    if B:
        mask[0] = False  # an all-false row
    x[~mask] = np.nan  # never read
    x, maskb = ar.array(x, misalign), ar.array(mask)
    out = ar.array(np.full((B, D), np.nan, ft), misalign)
    sched(order, seed)
    cu.masked_mean_pool_forward(P(x), P(maskb), P(out), B, T, D, x.itemsize, 0)
    if B and D:
        close(out, MMP.reference(np.where(mask[..., None], x, 0), mask), ft, scale=1.0)
    dout = ar.array(rng.standard_normal((B, D)).astype(ft), misalign)
    dx = ar.array(np.full((B, T, D), np.nan, ft), misalign)
    scale = ar.array(np.full(max(B, 1), np.nan, ft))  # scratch
    cu.masked_mean_pool_backward(P(dout), P(maskb), P(dx), P(scale), B, T, D, dout.itemsize, 0)
    if B and T and D:
        close(dx, MMP.reference_backward(dout, mask), ft)
    ar.check()


# ---------------------------------------------------------------------------- dense
ACTS = [None, "relu", "sigmoid", "tanh"]


@given(B=st.integers(0, 70), I=st.integers(0, 70), O=st.integers(0, 70), act=st.sampled_from(ACTS),
       bias=st.booleans(), need_dx=st.booleans(), **common)
@ex(120)
def test_dense(B, I, O, act, bias, need_dx, ft, it, misalign, order, seed):
    rng = np.random.default_rng(seed)
    ar = Arena()
    x = ar.array(rng.standard_normal((B, I)).astype(ft), misalign)
    w = ar.array(rng.standard_normal((I, O)).astype(ft), misalign)
    b = ar.array(rng.standard_normal(O).astype(ft)) if bias else None
    out = ar.array(np.full((B, O), np.nan, ft), misalign)
    a = DN._act_code(act)
    sched(order, seed)
    cu.dense_forward(P(x), P(w), P(b), a, P(out), B, I, O, x.itemsize, 0)
    ref = DN.reference(x, w, b, act)
    close(out, ref, ft, scale=np.sqrt(I + 1))
    dout = ar.array(rng.standard_normal((B, O)).astype(ft), misalign)
    dx = ar.array(np.full((B, I), np.nan, ft)) if need_dx else None
    dw = ar.array(np.full((I, O), np.nan, ft))
    db = ar.array(np.full(O, np.nan, ft))
    y = out if act is not None else None
    cu.dense_backward(P(dout), P(x), P(w), P(y), a, P(dx), P(dw), P(db), B, I, O, x.itemsize, 0)
    rdx, rdw, rdb = DN.reference_backward(dout, x, w, y, act)
    close(dw, rdw, ft, scale=np.sqrt(B + 1))
    close(db, rdb, ft, scale=np.sqrt(B + 1))
    if need_dx:
        close(dx, rdx, ft, scale=np.sqrt(O + 1))
    ar.check()


# ---------------------------------------------------------------------------- bce_with_logits
def bce_call(ar, z, y, err, tag=0):
    N = z.size
    g = ar.array(np.full(N, np.nan, z.dtype))
    ws = ar.array(garbage(cu.bce_workspace_bytes(N)))
    cu.bce_with_logits(P(z), P(y), P(g), N, z.itemsize, P(ws), ws.nbytes, P(err) + 8, P(err), tag, 0)
    return float(err[1:2].view(np.float64)[0]), g


@given(N=st.sampled_from([1, 2, 7, 255, 256, 257, 1025, 3000, 5000]), **common)
@ex(90)
def test_bce(N, ft, it, misalign, order, seed):
    rng = np.random.default_rng(seed)
    ar = Arena()
    z = ar.array((rng.standard_normal(N) * 30).astype(ft), misalign)
    y = ar.array(rng.random(N).astype(ft))
    err = ar.err()
    sched(order, seed)
    loss, g = bce_call(ar, z, y, err)
    assert err[0] == NO_ERROR
    rl, rg = BCE.reference(z, y)
    assert abs(loss - rl) <= (1e-5 if ft == np.float32 else 1e-12) * max(1.0, abs(rl))
    close(g, rg, ft, scale=1.0 / N)
    ar.check()


@given(N=st.integers(1, 3000), nbad=st.integers(1, 3), tag=st.integers(0, 0xFFFE), **common)
@ex(90)
def test_bce_bad_targets(N, nbad, tag, ft, it, misalign, order, seed):
    rng = np.random.default_rng(seed)
    ar = Arena()
    y = rng.random(N).astype(ft)
    bad = rng.choice(N, min(nbad, N), replace=False)
    y[bad] = rng.choice([np.nan, -0.5, 1.5, np.inf], bad.size)
    z, y = ar.array(rng.standard_normal(N).astype(ft), misalign), ar.array(y)
    err = ar.err()
    sched(order, seed)
    bce_call(ar, z, y, err, tag << 48)
    assert int(err[0]) == code(tag, 0, int(bad.min()), CU.ERR_TARGET)
    with pytest.raises(ValueError) as want:
        BCE.bce_with_logits(np.asarray(z), np.asarray(y), backend="numpy")
    with pytest.raises(ValueError, match=re.escape(str(want.value))):
        BCE._raise_bad_target(y, decode(err[0])[2])
    ar.check()


# ---------------------------------------------------------------------------- adam
hyper = dict(
    step=st.integers(1, 5), lr=st.sampled_from([1e-3, 0.1]), beta1=st.sampled_from([0.0, 0.9]),
    beta2=st.sampled_from([0.5, 0.999]), eps=st.sampled_from([1e-7, 1e-3]), wd=st.sampled_from([0.0, 0.01]),
    decoupled=st.booleans(), placement=st.sampled_from(["keras", "torch"]),
)


def adam_kw(step, lr, beta1, beta2, eps, wd, decoupled, placement):
    return dict(step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=wd, decoupled=decoupled,
                eps_placement=placement)


@given(sizes=st.lists(st.sampled_from([0, 1, 3, 4, 5, 17, 64, 100, 1000]), min_size=1, max_size=30), **hyper,
       **common)
@ex(90)
def test_adam_multi(sizes, step, lr, beta1, beta2, eps, wd, decoupled, placement, ft, it, misalign, order, seed):
    """Up to 30 tensors (over the 24 a launch takes), mixed alignment (vector path and its
    scalar tail, or scalar only)."""
    rng = np.random.default_rng(seed)
    ar = Arena()
    kw = adam_kw(step, lr, beta1, beta2, eps, wd, decoupled, placement)
    k = AD.adam_coefficients(**kw)
    ps, gs, ms, vs, refs = [], [], [], [], []
    for i, n in enumerate(sizes):
        mis = misalign and i % 2 == 0
        p = rng.standard_normal(n).astype(ft)
        g = rng.standard_normal(n).astype(ft)
        m = (rng.standard_normal(n) * 0.1).astype(ft)
        v = rng.random(n).astype(ft)
        refs.append(AD.reference(p, g, m, v, **kw))
        for lst, a in ((ps, p), (gs, g), (ms, m), (vs, v)):
            lst.append(ar.array(a, mis, aligned=not mis))
    err = ar.err()
    sched(order, seed)
    cu.adam_multi([P(a) for a in ps], [P(a) for a in gs], [P(a) for a in ms], [P(a) for a in vs], [a.size for a in ps],
                  np.dtype(ft).itemsize, k.beta1, k.beta2, k.alpha, k.eps, k.weight_decay, k.decay, k.mode, P(err), 0)
    for p, m, v, (rp, rm, rv) in zip(ps, ms, vs, refs):
        close(p, rp, ft)
        close(m, rm, ft)
        close(v, rv, ft)
    ar.check()


def test_adam_multi_large_tensor_chunks():
    """A tensor of more than one 64K chunk, next to small ones, vector path with a tail."""
    rng = np.random.default_rng(1)
    ar = Arena()
    kw = adam_kw(2, 1e-3, 0.9, 0.999, 1e-7, 0.0, False, "keras")
    k = AD.adam_coefficients(**kw)
    sizes = [3, (1 << 16) * 2 + 7, 5]
    arrs = [[ar.array(rng.standard_normal(n).astype(np.float32), aligned=True) for _ in range(3)]
            + [ar.array(rng.random(n).astype(np.float32), aligned=True)] for n in sizes]
    refs = [AD.reference(p, g, m, v, **kw) for p, g, m, v in arrs]
    err = ar.err()
    sched(0)
    cu.adam_multi(*[[P(a[j]) for a in arrs] for j in (0, 1, 2, 3)], sizes, 4, k.beta1, k.beta2, k.alpha, k.eps,
                  k.weight_decay, k.decay, k.mode, P(err), 0)
    for (p, _, m, v), (rp, rm, rv) in zip(arrs, refs):
        close(p, rp, np.float32)
        close(m, rm, np.float32)
        close(v, rv, np.float32)
    ar.check()


def test_adam_multi_skips_when_word_set():
    ar = Arena()
    p = ar.array(np.ones(10, np.float32))
    g, m, v = ar.array(np.ones(10, np.float32)), ar.array(np.zeros(10, np.float32)), ar.array(np.zeros(10, np.float32))
    err = ar.err(code(0, 1, 2, CU.ERR_ID))
    cu.adam_multi([P(p)], [P(g)], [P(m)], [P(v)], [10], 4, 0.9, 0.999, 1e-3, 1e-7, 0.0, 1.0, 0, P(err), 0)
    assert (p == 1).all() and (m == 0).all() and (v == 0).all()
    ar.check()


@given(V=st.integers(1, 30), D=st.sampled_from(DIMS[:10]), R=st.integers(0, 30),
       bad=st.sampled_from([None, "range", "order", "dup"]), tag=st.integers(0, 0xFFFE),
       tail=st.one_of(st.none(), st.integers(0, 5)), **hyper, **common)
@ex(120)
def test_sparse_adam(V, D, R, bad, tag, tail, step, lr, beta1, beta2, eps, wd, decoupled, placement, ft, it, misalign,
                     order, seed):
    """tail: the row count as a device word (a training step's PendingRows), with `tail` junk
    rows and values after the R real ones, which must be neither checked nor applied."""
    rng = np.random.default_rng(seed)
    ar = Arena()
    kw = adam_kw(step, lr, beta1, beta2, eps, wd, decoupled, placement)
    k = AD.adam_coefficients(**kw)
    R = min(R, V)
    rows = np.sort(rng.choice(V, R, replace=False)).astype(it)
    want = NO_ERROR
    if bad and R >= 2:
        i = int(rng.integers(1, R))
        if bad == "range":
            rows[i] = rng.choice([-1, V, V + 5])
            want = code(tag, 0, i, CU.ERR_ID)
        elif bad == "dup":
            rows[i] = rows[i - 1]
            want = code(tag, 0, i, CU.ERR_ORDER)
        else:
            rows[i - 1], rows[i] = rows[i], rows[i - 1]
            want = code(tag, 0, i, CU.ERR_ORDER)
    p0 = rng.standard_normal((V, D)).astype(ft)
    m0 = (rng.standard_normal((V, D)) * 0.1).astype(ft)
    v0 = rng.random((V, D)).astype(ft)
    vals = rng.standard_normal((R, D)).astype(ft)
    p, m, v = ar.array(p0, misalign), ar.array(m0, misalign), ar.array(v0, misalign)
    if tail is None:
        rows_a, vals_a, count, bound = ar.array(rows), ar.array(vals, misalign), None, R
    else:
        junk = np.array([-1, V, 0, V + 7, 0][:tail], it)
        rows_a = ar.array(np.concatenate([rows, junk]))
        vals_a = ar.array(np.concatenate([vals, np.full((tail, D), np.nan, ft)]), misalign)
        count, bound = ar.array(np.array([R], np.int64)), R + tail
    err = ar.err()
    sched(order, seed)
    cu.sparse_adam_step(P(p), P(rows_a), P(vals_a), P(m), P(v), V, D, bound, p.itemsize, rows_a.itemsize, k.beta1,
                        k.beta2, k.alpha, k.eps, k.weight_decay, k.decay, k.mode, P(count), P(err), tag << 48, 0)
    assert int(err[0]) == want, (decode(err[0]), decode(want))
    if want != NO_ERROR:
        np.testing.assert_array_equal(p, p0)
        np.testing.assert_array_equal(m, m0)
        np.testing.assert_array_equal(v, v0)
    else:
        rp, rm, rv = AD.reference_sparse(p0, rows, vals, m0, v0, **kw)
        close(p, rp, ft)
        close(m, rm, ft)
        close(v, rv, ft)
    ar.check()


# ---------------------------------------------------------------------------- capped grids
def test_grid_stride_loops_past_the_grid_cap():
    """Sizes beyond the capped grids (132 * 64 blocks of 8 warps, 132 * 16 blocks of 256
    threads, bce's 1024 blocks of 4 items per thread): every grid-stride loop goes round more
    than once."""
    rng = np.random.default_rng(11)
    ar = Arena()
    err = ar.err()
    V, N = 50, 132 * 64 * 8 + 1001
    w = ar.array(rng.standard_normal((V, 1)).astype(np.float32))
    ids = ar.array(rng.integers(0, V, N).astype(np.int32))
    out = ar.array(np.full((N, 1), np.nan, np.float32))
    cu.embedding_forward(P(w), P(ids), P(out), V, 1, N, 4, 4, P(err), 0, 0)
    np.testing.assert_array_equal(out, np.asarray(w)[ids])
    dout = ar.array(rng.standard_normal((N, 1)).astype(np.float32))
    ref = E.reference_backward(dout, ids, V)
    for det in (True, False):  # zero_kernel, prep_kernel, atomic_kernel loop; the sort sees N keys
        grad = run_embedding_backward(ar, dout, ids, V, det, err)
        close(grad, ref, np.float32, scale=30)
    Vbig = 132 * 16 * 256 // 3 + 5  # V * D over the stride grid: zero_kernel loops
    gbig = run_embedding_backward(ar, ar.array(np.ones((2, 3), np.float32)), ar.array(np.array([0, Vbig - 1], np.int64)),
                                  Vbig, False, err)
    want = np.zeros((Vbig, 3), np.float32)
    want[[0, -1]] = 1
    np.testing.assert_array_equal(gbig, want)
    M = 1024 * 256 * 4 + 77
    z = ar.array(rng.standard_normal(M).astype(np.float32))
    y = ar.array(rng.random(M).astype(np.float32))
    loss, g = bce_call(ar, z, y, err)
    rl = float(np.mean(np.maximum(z, 0) - z.astype(np.float64) * y + np.log1p(np.exp(-np.abs(z.astype(np.float64))))))
    assert abs(loss - rl) < 1e-6
    B, T, D = 1100, 64, 1  # masked_mean_pool backward: B * T rows over 132 * 64 * 8 warps
    mask = ar.array(rng.random((B, T)) < 0.5)
    dpool = ar.array(rng.standard_normal((B, D)).astype(np.float32))
    dx = ar.array(np.full((B, T, D), np.nan, np.float32))
    scale = ar.array(np.full(B, np.nan, np.float32))
    cu.masked_mean_pool_backward(P(dpool), P(mask), P(dx), P(scale), B, T, D, 4, 0)
    close(dx, MMP.reference_backward(dpool, mask), np.float32)
    assert err[0] == NO_ERROR
    ar.check()


# ---------------------------------------------------------------------------- determinism
def _runs(fn):
    """fn() under every schedule (and two random seeds): the results as bytes."""
    outs = []
    for order, seed in [(0, 0), (1, 0), (2, 1), (2, 2)]:
        sched(order, seed)
        outs.append([np.asarray(a).tobytes() for a in fn()])
    sched(0)
    return outs


@pytest.mark.parametrize("csr", [True, False])
def test_deterministic_backward_is_bitwise_reproducible(csr):
    """The sort + segment backward gives the same bits whatever order blocks and threads run
    in; the atomic variant matches it within float tolerance (its sums may not)."""
    rng = np.random.default_rng(5)
    V, D, B, T = 7, 37, 40, 30
    ar = Arena()
    ids, offsets = bags_of(rng, V, B, T, csr, np.int64, np.int64, pad=2)
    ids, offsets = ar.array(ids), None if offsets is None else ar.array(offsets)
    dout = ar.array(rng.standard_normal((B, D)).astype(np.float32))
    eids = ar.array(rng.integers(0, V, 300).astype(np.int32))
    edout = ar.array(rng.standard_normal((300, D)).astype(np.float32))

    def det():
        err = ar.err()
        g1 = bag_backward(ar, dout, ids, offsets, None, 2, True, V, True, err)
        g2 = run_embedding_backward(ar, edout, eids, V, True, err)
        r, vals = bag_sparse(ar, dout, ids, offsets, None, 2, True, V, err)
        assert err[0] == NO_ERROR
        return g1, g2, r, vals

    outs = _runs(det)
    assert all(o == outs[0] for o in outs[1:])
    sched(1)
    err = ar.err()
    atomic = bag_backward(ar, dout, ids, offsets, None, 2, True, V, False, err)
    close(atomic, np.frombuffer(outs[0][0], np.float32).reshape(V, D), np.float32, scale=4)
    ar.check()


def test_reductions_are_bitwise_reproducible():
    """bce's two-level sum, dense's GEMM and masked_mean_pool's shared-memory sum: fixed order."""
    rng = np.random.default_rng(6)
    ar = Arena()
    z = ar.array(rng.standard_normal(5000).astype(np.float32))
    y = ar.array(rng.random(5000).astype(np.float32))
    x = ar.array(rng.standard_normal((70, 33)).astype(np.float32))
    w = ar.array(rng.standard_normal((33, 65)).astype(np.float32))
    xm = ar.array(rng.standard_normal((3, 50, 12)).astype(np.float32))
    mask = ar.array(rng.random((3, 50)) < 0.7)

    def run():
        err = ar.err()
        loss, g = bce_call(ar, z, y, err)
        out = ar.array(np.full((70, 65), np.nan, np.float32))
        cu.dense_forward(P(x), P(w), 0, 1, P(out), 70, 33, 65, 4, 0)
        pooled = ar.array(np.full((3, 12), np.nan, np.float32))
        cu.masked_mean_pool_forward(P(xm), P(mask), P(pooled), 3, 50, 12, 4, 0)
        return np.float64(loss), g, out, pooled

    outs = _runs(run)
    assert all(o == outs[0] for o in outs[1:])
    ar.check()


# ---------------------------------------------------------------------------- dispatch coverage
@pytest.mark.parametrize(
    "D, ft, misalign, want",
    [
        (16, np.float32, False, "forward_kernel<float, Vec<float>, long int, long int, 1>"),
        (16, np.float32, True, "forward_kernel<float, Vec1<float>, long int, long int, 1>"),
        (17, np.float32, False, "forward_kernel<float, Vec1<float>, long int, long int, 1>"),
        (18, np.float64, False, "forward_kernel<double, Vec<double>, long int, long int, 1>"),
        (260, np.float32, False, "forward_kernel<float, Vec<float>, long int, long int, 4>"),
        (1100, np.float32, False, "forward_kernel<float, Vec<float>, long int, long int, 8>"),
        (301, np.float32, False, "forward_kernel<float, Vec1<float>, long int, long int, 8>"),
    ],
)
def test_vector_path_dispatch(D, ft, misalign, want):
    """16-byte vectors exactly when rows are 16-byte multiples at aligned addresses; units per
    lane from the row length (the launch log names the kernel instantiation)."""
    rng = np.random.default_rng(0)
    ar = Arena()
    w = ar.array(rng.standard_normal((3, D)).astype(ft), misalign)
    ids = ar.array(np.array([[0, 1], [2, 2]], np.int64))
    err = ar.err()
    cu.emu_clear_log()
    bag_call(ar, w, ids, None, None, -1, False, err)
    log = cu.emu_launch_log()
    assert want in log, log


# ---------------------------------------------------------------------------- the emulator itself
@pytest.mark.parametrize(
    "name, message",
    [
        ("shfl_exited", "exited"),
        ("mask_mismatch", r"0x00000001"),
        ("divergent_barrier", "divergent __syncthreads"),
        ("exited_barrier", "have exited"),
        ("deadlock", "deadlock"),
        ("partial_warp", "do not exist"),
        ("shfl_outside_mask", "outside the mask"),
        ("block_too_large", "cudaErrorInvalidConfiguration"),
        ("grid_zero", "cudaErrorInvalidConfiguration"),
        ("grid_y_too_large", "cudaErrorInvalidConfiguration"),
    ],
)
@pytest.mark.parametrize("order", ORDERS)
def test_emulator_detects(name, message, order):
    """Each self-test kernel (csrc/cuda/emu/selftest.cpp) has one bug the GPU would hang on or
    give undefined results for; the emulator raises, under every schedule."""
    out = np.zeros(256, np.int32)
    sched(order, 3)
    try:
        with pytest.raises(RuntimeError, match=message):
            cu.emu_selftest(name, P(out))
    finally:
        sched(0)


def test_emulator_warp_intrinsics_and_missing_sync():
    out = np.zeros(256, np.int32)
    for order in ORDERS:
        sched(order, 4)
        cu.emu_selftest("ok", P(out))
        assert out[0] == sum(range(32))  # __shfl_down_sync tree
        assert (out[32:64].view(np.uint32) == 0x55555555).all()  # __ballot_sync of even lanes
        np.testing.assert_array_equal(out[64:96], ((np.arange(32) + 3) % 32) * 10)  # __shfl_sync
        assert (out[96:128] == 1).all()  # __any_sync
        cu.emu_selftest("half_warps", P(out))  # disjoint masks may be pending together
        np.testing.assert_array_equal(out[:64], np.where(np.arange(64) % 32 < 16, 0, 160))
        cu.emu_selftest("with_sync", P(out))
        np.testing.assert_array_equal(out[:64], (np.arange(64) + 1) % 64 + 1)
    # Without the barrier thread t reads thread t+1's slot before it is written when threads
    # run in order, after when they run in reverse: the schedules disagree.
    got = []
    for order in (0, 1):
        sched(order)
        out[:] = 0
        cu.emu_selftest("missing_sync", P(out))
        got.append(out[:64].copy())
    sched(0)
    assert not np.array_equal(got[0], got[1])


# ---------------------------------------------------------------------------- the cuda adapters
class DevArray(np.ndarray):
    """A numpy array that the ``_cuda_*`` adapters take for a CuPy one: ``.data.ptr`` is its
    address (a device pointer, on the emulator), ``.get()`` copies it to the host."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.ctypes.data)

    def get(self):
        return np.array(self)


_DEV = [Arena()]  # "device memory" of the running test: guard pages and canaries


def dev(a):
    return _DEV[0].array(np.asarray(a)).view(DevArray)


FAKE_CUPY = types.SimpleNamespace(
    asarray=lambda a, dtype=None: dev(np.asarray(a, dtype=dtype)),
    empty=lambda shape, dtype=np.float64: dev(np.empty(shape, dtype)),
    uint8=np.uint8,
    uint64=np.uint64,
    int64=np.int64,
    cuda=types.SimpleNamespace(
        get_current_stream=lambda: types.SimpleNamespace(ptr=0), runtime=types.SimpleNamespace(getDevice=lambda: 0)
    ),
)


@pytest.fixture
def emu_cuda(monkeypatch):
    """The adapters' cupy and _cuda are the fake above and _cuda_emu (fresh error-word state)."""
    from fastscale import _backends

    real = _backends.module
    monkeypatch.setattr(CU, "cupy", lambda: FAKE_CUPY)
    monkeypatch.setattr(CU, "_local", threading.local())
    monkeypatch.setattr(_backends, "module", lambda name: cu if name == "cuda" else real(name))
    monkeypatch.delenv(CU.ATOMIC_ENV, raising=False)
    _DEV[0] = Arena()
    sched(1)  # reverse order: the least natural schedule
    yield monkeypatch
    sched(0)
    _DEV[0].check()


@pytest.mark.parametrize("atomic", [False, True])
@pytest.mark.parametrize("csr", [False, True])
def test_adapters_embedding_ops(emu_cuda, csr, atomic):
    """embedding / embedding_bag forward and backward (dense, sparse) through the adapters."""
    if atomic:
        emu_cuda.setenv(CU.ATOMIC_ENV, "1")
    rng = np.random.default_rng(7)
    V, D, B, T = 9, 12, 6, 5
    ids, offsets = bags_of(rng, V, B, T, csr, np.int32, np.int64, pad=3)
    w = rng.standard_normal((V, D)).astype(np.float32)
    kw = dict(mode="mean", padding_idx=3)
    out = EB._cuda_forward(dev(w), dev(ids), None if offsets is None else dev(offsets), None, 3, True, dev(np.empty((B, D), np.float32)))
    close(out, EB.reference(w, ids, offsets, **kw), np.float32)
    dout = rng.standard_normal((B, D)).astype(np.float32)
    ref = EB.reference_backward(dout, ids, offsets, num_embeddings=V, **kw)
    offs = None if offsets is None else dev(offsets)
    grad = EB._cuda_backward(dev(dout), dev(ids), offs, None, 3, True, dev(np.full((V, D), np.nan, np.float32)), V)
    close(grad, ref, np.float32)
    rows, values = EB._cuda_backward(dev(dout), dev(ids), offs, None, 3, True, None, V)
    np.testing.assert_array_equal(rows, np.unique(ids[ids != 3]))
    close(values, ref[np.asarray(rows)], np.float32)

    flat = ids.reshape(-1)
    out = E._cuda_forward(dev(w), dev(flat), dev(np.empty((flat.size, D), np.float32)))
    np.testing.assert_array_equal(out, w[flat])
    edout = rng.standard_normal((flat.size, D)).astype(np.float32)
    ref = E.reference_backward(edout, flat, V)
    close(E._cuda_backward(dev(edout), dev(flat), dev(np.empty((V, D), np.float32)), V), ref, np.float32)
    rows, values = E._cuda_backward(dev(edout), dev(flat), None, V)
    np.testing.assert_array_equal(rows, np.unique(flat))
    close(values, ref[np.asarray(rows)], np.float32)


def test_adapters_errors(emu_cuda):
    """Bad input reaches the user as the numpy backend's exception, through the error word."""
    rng = np.random.default_rng(8)
    V, D = 5, 4
    w = rng.standard_normal((V, D)).astype(np.float64)
    ids = np.array([1, 2, 7, 0, -1], np.int64)
    offsets = np.array([0, 2, 5], np.int64)

    def same(exc_type, cuda_call, numpy_call):
        with pytest.raises(exc_type) as want:
            numpy_call()
        with pytest.raises(exc_type, match=re.escape(str(want.value))):
            cuda_call()

    same(IndexError, lambda: EB._cuda_forward(dev(w), dev(ids), dev(offsets), None, -1, True, dev(np.empty((2, D)))),
         lambda: EB.embedding_bag(w, ids, offsets, backend="numpy"))
    bad_off = np.array([0, 4, 3], np.int64)
    same(ValueError, lambda: EB._cuda_forward(dev(w), dev(ids), dev(bad_off), None, -1, True, dev(np.empty((2, D)))),
         lambda: EB.embedding_bag(w, ids, bad_off, backend="numpy"))
    dout = np.ones((2, D))
    grad = dev(np.full((V, D), 7.0))
    same(IndexError, lambda: EB._cuda_backward(dev(dout), dev(ids), dev(offsets), None, -1, True, grad, V),
         lambda: EB.embedding_bag_backward(dout, ids, offsets, num_embeddings=V, backend="numpy"))
    assert (np.asarray(grad) == 7.0).all()
    same(IndexError, lambda: E._cuda_forward(dev(w), dev(ids), dev(np.empty((5, D)))),
         lambda: E.embedding(w, ids, backend="numpy"))
    z, y = np.zeros(6), np.array([0, 1, 0.5, 2.0, 0, np.nan])
    same(ValueError, lambda: BCE._cuda(dev(z), dev(y), dev(np.empty(6))),
         lambda: BCE.bce_with_logits(z, y, backend="numpy"))
    k = AD.adam_coefficients(1, 1e-3, 0.9, 0.999, 1e-7, 0.0, False, "keras")
    p, m, v = np.ones((V, D)), np.zeros((V, D)), np.zeros((V, D))
    rows, vals = np.array([0, 3, 2], np.int64), np.ones((3, D))
    pd = dev(p)
    same(ValueError, lambda: AD._cuda_sparse(pd, dev(rows), dev(vals), dev(m), dev(v), k),
         lambda: AD.sparse_adam_step(p.copy(), rows, vals, m.copy(), v.copy(), step=1, backend="numpy"))
    assert (np.asarray(pd) == 1).all()
    # After each error the word is NO_ERROR again: a good call goes through.
    out = EB._cuda_forward(dev(w), dev(ids % V), dev(offsets), None, -1, True, dev(np.empty((2, D))))
    close(out, EB.reference(w, ids % V, offsets), np.float64)


def test_adapters_deferred_checks(emu_cuda):
    """In a deferred-check block the earliest failing call raises at the end, and every later
    kernel that writes caller state (a backward's gradient, Adam) skips its writes."""
    rng = np.random.default_rng(9)
    V, D = 6, 8
    w = rng.standard_normal((V, D)).astype(np.float32)
    good = np.array([[1, 2], [3, 4]], np.int64)
    bad = np.array([[1, 9], [3, 4]], np.int64)
    p0 = rng.standard_normal((V, D)).astype(np.float32)
    p, g, m, v = dev(p0), dev(np.ones((V, D), np.float32)), dev(np.zeros((V, D), np.float32)), dev(np.zeros((V, D), np.float32))
    grad = dev(np.full((V, D), 5.0, np.float32))
    k = AD.adam_coefficients(1, 1e-3, 0.9, 0.999, 1e-7, 0.0, False, "keras")
    with pytest.raises(IndexError) as want:
        EB.embedding_bag(w, bad, backend="numpy")
    with pytest.raises(IndexError, match=re.escape(str(want.value))):
        with CU.deferred_checks():
            EB._cuda_forward(dev(w), dev(good), None, None, -1, True, dev(np.empty((2, D), np.float32)))
            EB._cuda_forward(dev(w), dev(bad), None, None, -1, True, dev(np.empty((2, D), np.float32)))
            EB._cuda_backward(dev(np.ones((2, D), np.float32)), dev(good), None, None, -1, True, grad, V)
            AD._cuda_dense(p, g, m, v, k)
    assert (np.asarray(grad) == 5.0).all()
    np.testing.assert_array_equal(p, p0)
    # The word was reset: the same calls now go through.
    with CU.deferred_checks():
        EB._cuda_backward(dev(np.ones((2, D), np.float32)), dev(good), None, None, -1, True, grad, V)
        AD._cuda_dense(p, g, m, v, k)
    assert not (np.asarray(grad) == 5.0).all()
    assert not np.array_equal(np.asarray(p), p0)


@pytest.mark.parametrize("bag", [False, True])
def test_adapters_pending_rows(emu_cuda, bag):
    """Inside a deferred-check block (a training step) the sparse backwards leave their row
    count on the device (PendingRows) and lazy Adam takes it there: the same rows, values and
    update, bitwise, as with the count read back; bad ids raise at resolve(), and Adam after
    them writes nothing."""
    from fastscale.ops._common import PendingRows

    rng = np.random.default_rng(12)
    V, D, B, T = 11, 8, 7, 6
    ids = rng.integers(0, V, (B, T)).astype(np.int64)
    ids[0, :] = 2  # padding only: rows are fewer than ids
    dout = rng.standard_normal((B, D) if bag else (B, T, D)).astype(np.float32)

    def backward(i):
        if bag:
            return EB._cuda_backward(dev(dout), dev(i), None, None, 2, True, None, V)
        return E._cuda_backward(dev(dout), dev(i), None, V)

    rows, values = backward(ids)
    with CU.deferred_checks():
        g = backward(ids)
        assert isinstance(g, PendingRows)
        r, vals, count = g.buffers
        assert int(count[0]) == rows.shape[0] < ids.size and r.shape[0] == vals.shape[0] == ids.size
        got = g.resolve()
    np.testing.assert_array_equal(got.rows, rows)
    np.testing.assert_array_equal(got.values, values)

    k = AD.adam_coefficients(2, 1e-2, 0.9, 0.999, 1e-7, 0.0, False, "keras")
    p0 = rng.standard_normal((V, D)).astype(np.float32)
    m0, v0 = (rng.random((V, D)) * 0.1).astype(np.float32), (rng.random((V, D)) * 0.1).astype(np.float32)
    want = [dev(a.copy()) for a in (p0, m0, v0)]
    AD._cuda_sparse(want[0], rows, values, want[1], want[2], k)
    have = [dev(a.copy()) for a in (p0, m0, v0)]
    with CU.deferred_checks():
        r, vals, count = backward(ids).buffers
        AD._cuda_sparse(have[0], r, vals, have[1], have[2], k, count)
    for a, b in zip(have, want):
        np.testing.assert_array_equal(a, b)

    bad = ids.copy()
    bad[3, 4] = V + 3
    with pytest.raises(IndexError) as numpy_error:
        (EB.embedding_bag_backward(dout, bad, num_embeddings=V, padding_idx=2, sparse=True, backend="numpy") if bag
         else E.embedding_backward(dout, bad, V, sparse=True, backend="numpy"))
    have = [dev(a.copy()) for a in (p0, m0, v0)]
    with pytest.raises(IndexError, match=re.escape(str(numpy_error.value))):
        with CU.deferred_checks():
            g = backward(bad)
            AD._cuda_sparse(have[0], *g.buffers[:2], have[1], have[2], k, g.buffers[2])
            g.resolve()
    for a, b in zip(have, (p0, m0, v0)):
        np.testing.assert_array_equal(a, b)


def test_adapters_dense_pool_bce_adam(emu_cuda):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    w = rng.standard_normal((7, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    out = DN._cuda_forward(dev(x), dev(w), dev(b), DN._act_code("tanh"), dev(np.empty((5, 3), np.float32)))
    close(out, DN.reference(x, w, b, "tanh"), np.float32)
    dout = rng.standard_normal((5, 3)).astype(np.float32)
    dx, dw, db = (dev(np.empty(s, np.float32)) for s in ((5, 7), (7, 3), (3,)))
    DN._cuda_backward(dev(dout), dev(x), dev(w), dev(np.asarray(out)), DN._act_code("tanh"), dx, dw, db)
    for got, ref in zip((dx, dw, db), DN.reference_backward(dout, x, w, np.asarray(out), "tanh")):
        close(got, ref, np.float32)
    xm = rng.standard_normal((3, 4, 6))
    mask = rng.random((3, 4)) < 0.6
    close(MMP._cuda_forward(dev(xm), dev(mask), dev(np.empty((3, 6)))), MMP.reference(xm, mask), np.float64)
    dpool = rng.standard_normal((3, 6))
    close(MMP._cuda_backward(dev(dpool), dev(mask), dev(np.empty((3, 4, 6)))), MMP.reference_backward(dpool, mask),
          np.float64)
    z, y = rng.standard_normal(50), (rng.random(50) < 0.5).astype(np.float64)
    dl = dev(np.empty(50))
    loss = BCE._cuda(dev(z), dev(y), dl)
    rl, rg = BCE.reference(z, y)
    assert abs(loss - rl) < 1e-12
    close(dl, rg, np.float64)
    kw = adam_kw(3, 1e-2, 0.9, 0.999, 1e-7, 0.01, True, "torch")
    k = AD.adam_coefficients(**kw)
    ps = [rng.standard_normal(n) for n in (3, 10)]
    gs = [rng.standard_normal(n) for n in (3, 10)]
    ms = [np.zeros(n) for n in (3, 10)]
    vs = [np.zeros(n) for n in (3, 10)]
    refs = [AD.reference(p, g, m, v, **kw) for p, g, m, v in zip(ps, gs, ms, vs)]
    dps, dms, dvs = [dev(a) for a in ps], [dev(a) for a in ms], [dev(a) for a in vs]
    AD._cuda_multi(dps, [dev(a) for a in gs], dms, dvs, k)
    for dp, dm, dv, (rp, rm, rv) in zip(dps, dms, dvs, refs):
        close(dp, rp, np.float64)
        close(dm, rm, np.float64)
        close(dv, rv, np.float64)
    V, D = 6, 5
    p, m, v = rng.standard_normal((V, D)), np.zeros((V, D)), np.zeros((V, D))
    rows, vals = np.array([1, 4], np.int32), rng.standard_normal((2, D))
    rp, rm, rv = AD.reference_sparse(p, rows, vals, m, v, **kw)
    dp, dm, dv = dev(p), dev(m), dev(v)
    AD._cuda_sparse(dp, dev(rows), dev(vals), dm, dv, k)
    close(dp, rp, np.float64)
    close(dm, rm, np.float64)
    close(dv, rv, np.float64)
