"""bce_with_logits: mean binary cross-entropy on logits, and its gradient, in one pass.

``bce_with_logits(logits, targets)`` returns ``(loss, dlogits)``: ``loss`` is a Python float,
the mean over all N = ``logits.size`` elements of

    max(z, 0) - z*y + log1p(exp(-|z|))        (= -y log sigmoid(z) - (1-y) log(1 - sigmoid(z)))

computed without overflow for any finite z and summed in float64; ``dlogits`` has the shape
and dtype of ``logits`` and holds ``(sigmoid(z) - y) / N``.  ``targets`` has the same shape
and float dtype, with values in [0, 1] (soft labels allowed; anything else, NaN included, is
a ValueError).  This is Keras's ``binary_crossentropy`` after a sigmoid output, and PyTorch's
``binary_cross_entropy_with_logits`` with ``reduction="mean"``.

Backends: ``cpp`` (csrc/cpu/bce_with_logits.cpp), ``numba`` and ``numpy`` (also ``cupy``).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _backends, _checks as C
from ._common import quiet

OP = "bce_with_logits"


# ---------------------------------------------------------------------------- public API
def bce_with_logits(logits, targets, *, backend=None):
    """``(mean loss as a float, dlogits)`` for logits and 0/1 (or soft) targets."""
    if type(logits) is np.ndarray and type(targets) is np.ndarray:
        is_cupy = False  # the common case, without the generic per-argument walk
    else:
        is_cupy = C.array_kind(OP, logits=logits, targets=targets)
    C.check_float(OP, "logits", logits)
    C.check_float(OP, "targets", targets, dtype=logits.dtype)
    C.check_shape(OP, "targets", targets, logits.shape, "the shape of logits")
    if logits.size == 0:
        raise ValueError(f"{OP}: argument 'logits' must not be empty (the mean of no losses), got shape {tuple(logits.shape)}")
    _, impl = _IMPL.pick(backend, is_cupy)
    dlogits = C.xp_of(is_cupy).empty(logits.shape, dtype=logits.dtype)
    loss = impl(logits, targets, dlogits)
    return loss, dlogits


def _raise_bad_target(targets, flat):
    value = float(targets.reshape(-1)[flat])
    raise ValueError(
        f"{OP}: argument 'targets' must have values in [0, 1], got targets{C._position(tuple(targets.shape), flat)} = {value!r}"
    )


def _check_targets_xp(targets):
    """numpy / cupy pre-check: ValueError for the first target outside [0, 1] (NaN too)."""
    xp = np if isinstance(targets, np.ndarray) else C.xp_of(True)
    lo, hi = float(targets.min()), float(targets.max())  # NaN propagates into both
    if not (lo >= 0.0 and hi <= 1.0):
        flat = targets.reshape(-1)
        bad = ~((flat >= 0) & (flat <= 1))
        _raise_bad_target(targets, int(xp.argmax(bad)))


# ---------------------------------------------------------------------------- reference
def reference(logits, targets):
    """(mean loss, dlogits) with loops in float64, written to be read."""
    z = np.asarray(logits, np.float64).reshape(-1)
    y = np.asarray(targets, np.float64).reshape(-1)
    n = z.size
    total = 0.0
    grad = np.empty(n)
    for i in range(n):
        e = math.exp(-abs(z[i]))
        total += max(z[i], 0.0) - z[i] * y[i] + math.log1p(e)
        sig = 1.0 / (1.0 + e) if z[i] >= 0 else e / (1.0 + e)
        grad[i] = (sig - y[i]) / n
    return total / n, grad.reshape(np.shape(logits))


# ---------------------------------------------------------------------------- numpy / cupy
@quiet
def _numpy(logits, targets, dlogits):
    xp = np if isinstance(logits, np.ndarray) else C.xp_of(True)
    _check_targets_xp(targets)
    z, y = logits, targets
    e = xp.exp(-xp.abs(z))
    loss = xp.maximum(z, 0) - z * y + xp.log1p(e)
    n = z.size
    dlogits[...] = (xp.where(z >= 0, 1 / (1 + e), e / (1 + e)) - y) / z.dtype.type(n)
    return float(loss.sum(dtype=xp.float64)) / n


# ---------------------------------------------------------------------------- numba
def _make_numba():
    import numba

    @numba.njit(cache=True, nogil=True)
    def kernel(z, y, g):
        # Serial: at the sizes a loss sees (a batch of logits) a thread pool costs more
        # than it saves, and the float64 sum keeps one order.
        n = z.size
        total = 0.0
        for i in range(n):
            zi = z[i]
            yi = y[i]
            e = np.exp(-np.abs(zi))
            total += float(max(zi, 0)) - float(zi) * float(yi) + float(np.log1p(e))
            sig = 1 / (1 + e) if zi >= 0 else e / (1 + e)
            g[i] = (sig - yi) / n
        return total / n

    return kernel


_numba_kernel = _backends.once(_make_numba)


def _numba(logits, targets, dlogits):
    _check_targets_xp(targets)
    kernel = _numba_kernel()
    return float(kernel(C.contiguous(logits).reshape(-1), C.contiguous(targets).reshape(-1), dlogits.reshape(-1)))


# ---------------------------------------------------------------------------- cpp
def _cpp(logits, targets, dlogits):
    cpu = _backends.module("cpp")
    targets = C.contiguous(targets)
    bad, loss = cpu.bce_with_logits(C.contiguous(logits), targets, dlogits)
    if bad >= 0:
        _raise_bad_target(targets, bad)
    return loss


# ---------------------------------------------------------------------------- cuda
# csrc/cuda/bce_with_logits.cu.  The loss comes back as a float, so this op synchronises
# anyway: the loss and the device error word (a bad target) are read in one copy.
def _cuda(logits, targets, dlogits):
    from . import _cuda_util as CU

    cu = _backends.module("cuda")
    z, y = C.contiguous(logits), C.contiguous(targets)
    N = z.size
    ws = CU.workspace(cu.bce_workspace_bytes(N))
    st, tag, s = CU.begin(lambda kind, pos: _raise_bad_target(y, pos))
    cu.bce_with_logits(z.data.ptr, y.data.ptr, dlogits.data.ptr, N, z.itemsize, ws.data.ptr, ws.nbytes, st.result,
                       st.err, tag, s)
    return CU.result_float(st)


_IMPL = _backends.register(OP, cpp=_cpp, numba=_numba, numpy=_numpy, cupy=_numpy, cuda=_cuda)
