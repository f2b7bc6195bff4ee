"""masked_mean_pool: ``x (B, T, D)``, ``mask (B, T)`` bool -> ``(B, D)``, the mean of ``x[b, t]``
over the positions ``t`` where ``mask[b, t]`` is True.

A row whose mask is all False gives zeros, never NaN, and masked-out positions never enter
the result (a NaN or inf there does not leak into the mean).  The backward spreads
``dout[b] / count(b)`` over the kept positions and zeros elsewhere.  This is Keras'
``GlobalAveragePooling1D`` with a mask; the training stack fuses it with the lookup into
``embedding_bag`` so that ``(B, T, D)`` is never built, and uses this op when ``x`` comes from
anything else.

Backends: ``cpp`` (csrc/cpu/masked_mean_pool.cpp), ``numba`` and ``numpy`` (below; the
numpy code also serves cupy).  The module reads top-down: public functions with every
check, ``reference()``, then the backends.
"""
from __future__ import annotations

import numpy as np

from .. import _backends, _checks as C
from ._common import quiet

OP = "masked_mean_pool"
OPB = "masked_mean_pool_backward"


# ---------------------------------------------------------------------------- public API
def masked_mean_pool(x, mask, *, backend=None):
    """Mean of ``x (B, T, D)`` over the positions where ``mask (B, T)`` is True -> ``(B, D)``."""
    is_cupy = C.array_kind(OP, x=x, mask=mask)
    C.check_float(OP, "x", x, ndim=3)
    C.check_bool(OP, "mask", mask, ndim=2)
    C.check_shape(OP, "mask", mask, x.shape[:2], f"(B, T) of x with shape {tuple(x.shape)}")
    _, impl = _IMPL.pick(backend, is_cupy)
    xp = C.xp_of(is_cupy)
    out = xp.empty((x.shape[0], x.shape[2]), dtype=x.dtype)
    impl(x, mask, out)
    return out


def masked_mean_pool_backward(dout, mask, *, out=None, backend=None):
    """Gradient of :func:`masked_mean_pool` with respect to ``x``: ``dout (B, D)``,
    ``mask (B, T)`` -> ``(B, T, D)``, written into ``out`` when given (a training loop can
    reuse one buffer instead of faulting in a fresh ``(B, T, D)`` every step)."""
    is_cupy = C.array_kind(OPB, dout=dout, mask=mask, out=out)
    C.check_float(OPB, "dout", dout, ndim=2)
    C.check_bool(OPB, "mask", mask, ndim=2)
    C.check_shape(OPB, "dout", dout, (mask.shape[0], dout.shape[1]), f"one row per row of mask {tuple(mask.shape)}")
    shape = (mask.shape[0], mask.shape[1], dout.shape[1])
    _, impl = _BACKWARD.pick(backend, is_cupy)
    if out is None:
        out = C.xp_of(is_cupy).empty(shape, dtype=dout.dtype)
    else:
        C.check_float(OPB, "out", out, dtype=dout.dtype)
        C.check_shape(OPB, "out", out, shape, "(B, T) of mask + (D,) of dout")
        C.check_writeable(OPB, "out", out)
    impl(dout, mask, out)
    return out


# ---------------------------------------------------------------------------- reference
def reference(x, mask):
    """Loops in float64, written to be read."""
    x = np.asarray(x, dtype=np.float64)
    mask = np.asarray(mask)
    B, T, D = x.shape
    out = np.zeros((B, D))
    for b in range(B):
        count = 0
        for t in range(T):
            if mask[b, t]:
                out[b] += x[b, t]
                count += 1
        if count > 0:
            out[b] /= count
    return out


def reference_backward(dout, mask):
    """d(sum(dout * masked_mean_pool(x, mask)))/dx, loops in float64."""
    dout = np.asarray(dout, dtype=np.float64)
    mask = np.asarray(mask)
    B, T = mask.shape
    dx = np.zeros((B, T, dout.shape[1]))
    for b in range(B):
        count = int(mask[b].sum())
        for t in range(T):
            if mask[b, t]:
                dx[b, t] = dout[b] / count
    return dx


# ---------------------------------------------------------------------------- numpy / cupy
def _xp(a):
    return np if isinstance(a, np.ndarray) else C.xp_of(True)


def _counts(mask, xp, dtype):
    """Kept positions per row, as dtype, at least 1 (an empty row divides 0 by 1)."""
    return xp.maximum(mask.sum(axis=1), 1).astype(dtype)


def _numpy_forward(x, mask, out):
    xp = _xp(x)
    # One batched (1, T) @ (T, D) product per row: BLAS speed, no (B, T, D) temporary.
    # Non-finite values are the caller's to propagate, as the other backends do: no warnings.
    with np.errstate(invalid="ignore", over="ignore"):
        s = xp.matmul(mask.astype(x.dtype)[:, None, :], x)[:, 0, :]
        if not bool(xp.isfinite(s).all()):
            # 0 * inf = NaN: a non-finite value at a masked-out position would leak in;
            # redo the sum reading only kept positions.
            s = xp.where(mask[:, :, None], x, 0).sum(axis=1, dtype=x.dtype)
        xp.divide(s, _counts(mask, xp, x.dtype)[:, None], out=out)
    return out


@quiet
def _numpy_backward(dout, mask, out):
    xp = _xp(dout)
    g = dout / _counts(mask, xp, dout.dtype)[:, None]
    out[...] = 0
    xp.copyto(out, g[:, None, :], where=mask[:, :, None])
    return out


# ---------------------------------------------------------------------------- numba
def _make_numba():
    import numba

    @numba.njit(cache=True, parallel=True, nogil=True)
    def forward(x, mask, out):
        B, T, D = x.shape
        for b in numba.prange(B):
            acc = np.zeros(D, out.dtype)
            n = 0
            for t in range(T):
                if mask[b, t]:
                    for j in range(D):
                        acc[j] += x[b, t, j]
                    n += 1
            for j in range(D):
                out[b, j] = acc[j] / n if n > 0 else 0.0

    @numba.njit(cache=True, parallel=True, nogil=True)
    def backward(dout, mask, out):
        B, T, D = out.shape
        for b in numba.prange(B):
            n = 0
            for t in range(T):
                if mask[b, t]:
                    n += 1
            for t in range(T):
                if mask[b, t]:
                    for j in range(D):
                        out[b, t, j] = dout[b, j] / n
                else:
                    out[b, t, :] = 0

    return forward, backward


_numba_cache: list = []


def _numba_fns():
    if not _numba_cache:
        _numba_cache.append(_make_numba())
    return _numba_cache[0]


def _numba_forward(x, mask, out):
    forward, _ = _numba_fns()
    forward(C.contiguous(x), C.contiguous(mask), out)
    return out


def _numba_backward(dout, mask, out):
    _, backward = _numba_fns()
    backward(C.contiguous(dout), C.contiguous(mask), out)
    return out


# ---------------------------------------------------------------------------- cpp
def _cpp_forward(x, mask, out):
    _backends.module("cpp").masked_mean_pool_forward(C.contiguous(x), C.contiguous(mask), out)
    return out


def _cpp_backward(dout, mask, out):
    _backends.module("cpp").masked_mean_pool_backward(C.contiguous(dout), C.contiguous(mask), out)
    return out


# ---------------------------------------------------------------------------- cuda
# csrc/cuda/masked_mean_pool.cu (nothing here can fail on the device: no sync).
def _cuda_forward(x, mask, out):
    from . import _cuda_util as CU

    x, mask = C.contiguous(x), C.contiguous(mask)
    B, T, D = x.shape
    _backends.module("cuda").masked_mean_pool_forward(x.data.ptr, mask.data.ptr, out.data.ptr, B, T, D, x.itemsize,
                                                      CU.stream_ptr())
    return out


def _cuda_backward(dout, mask, out):
    from . import _cuda_util as CU

    dout, mask = C.contiguous(dout), C.contiguous(mask)
    B, T, D = out.shape
    count = CU.cupy().empty(max(B, 1), dout.dtype)  # per-row kept count (scratch)
    _backends.module("cuda").masked_mean_pool_backward(dout.data.ptr, mask.data.ptr, out.data.ptr, count.data.ptr, B,
                                                       T, D, dout.itemsize, CU.stream_ptr())
    return out


_IMPL = _backends.register(
    OP, cpp=_cpp_forward, numba=_numba_forward, numpy=_numpy_forward, cupy=_numpy_forward, cuda=_cuda_forward
)
_BACKWARD = _backends.register(
    OPB, cpp=_cpp_backward, numba=_numba_backward, numpy=_numpy_backward, cupy=_numpy_backward, cuda=_cuda_backward
)
