"""dense: a fully connected layer, ``out = act(x @ weight + bias)``, fused, and its backward.

Keras layout: ``x`` is ``(B, I)``, ``weight`` is ``(I, O)``, ``bias`` is ``(O,)`` or None.
``activation`` is None / ``"linear"`` (identity), ``"relu"``, ``"sigmoid"`` or ``"tanh"``.

The backward takes the forward *output* ``out`` (after the activation), from which each
activation's derivative follows without keeping ``x @ weight``: relu ``out > 0``, sigmoid
``out * (1 - out)``, tanh ``1 - out**2``.  It returns ``(dx, dweight, dbias)``; ``dx`` is None
with ``need_dx=False`` (the first layer of a model needs no gradient for its input).

Backends: ``cpp`` (csrc/cpu/dense.cpp: a register-tiled kernel in the library's OpenMP
pool, which at the origin's sizes beats calling BLAS), ``numba``, and ``numpy`` (also the
``cupy`` code, through the xp idiom).  The module reads top-down: public functions with
every check, ``reference()`` / ``reference_backward()``, then the backends.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from .. import _backends, _checks as C
from ._common import quiet

OP = "dense_forward"
OPB = "dense_backward"
ACTIVATIONS = (None, "linear", "relu", "sigmoid", "tanh")
# Kernel codes; "linear" is None.
_CODE = {None: 0, "linear": 0, "relu": 1, "sigmoid": 2, "tanh": 3}
ACTIVATION_CODES = _CODE  # the implementations' ``act`` argument (see ops.implementation)


# ---------------------------------------------------------------------------- public API
# At the origin's sizes the kernel takes microseconds, so the checks must too.  Each public
# function first tries a fast *accept* test that can only say "valid numpy arrays"; anything
# else goes through the full checks below, which raise the uniform errors.
_ND = np.ndarray
_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _act_code(activation):
    return _CODE.get(activation) if activation is None or type(activation) is str else None


def _check_x_weight(op, x, weight):
    C.check_float(op, "x", x, ndim=2)
    C.check_float(op, "weight", weight, ndim=2, dtype=x.dtype)
    if weight.shape[0] != x.shape[1]:
        raise ValueError(
            f"{op}: x (B, I) and weight (I, O) must agree on I, got x of shape {tuple(x.shape)} "
            f"and weight of shape {tuple(weight.shape)}"
        )


def _check_forward(x, weight, bias, activation):
    """Every check of dense_forward; returns is_cupy."""
    is_cupy = C.array_kind(OP, x=x, weight=weight, bias=bias)
    _check_x_weight(OP, x, weight)
    if bias is not None:
        C.check_float(OP, "bias", bias, ndim=1, dtype=x.dtype)
        C.check_shape(OP, "bias", bias, (weight.shape[1],), f"(O,) with weight of shape {tuple(weight.shape)}")
    C.choice(OP, "activation", activation, ACTIVATIONS)
    return is_cupy


def dense_forward(x, weight, bias=None, activation=None, *, backend=None):
    """``act(x @ weight + bias)``: ``(B, I)`` and ``(I, O)`` -> ``(B, O)``, in one pass.

    float32 or float64, all arrays of one dtype.  A new array is returned.
    """
    act = _act_code(activation)
    if (
        act is not None
        and type(x) is _ND
        and type(weight) is _ND
        and x.ndim == 2
        and weight.ndim == 2
        and x.dtype in _FLOAT_DTYPES
        and weight.dtype is x.dtype
        and weight.shape[0] == x.shape[1]
        and (bias is None or (type(bias) is _ND and bias.dtype is x.dtype and bias.shape == (weight.shape[1],)))
    ):
        is_cupy = False
    else:
        is_cupy = _check_forward(x, weight, bias, activation)
        act = _CODE[activation]
    _, impl = _IMPL.pick(backend, is_cupy)
    out = C.xp_of(is_cupy).empty((x.shape[0], weight.shape[1]), dtype=x.dtype)
    impl(x, weight, bias, act, out)
    return out


def _check_backward(dout, x, weight, out, activation, need_dx):
    """Every check of dense_backward; returns is_cupy."""
    is_cupy = C.array_kind(OPB, dout=dout, x=x, weight=weight, out=out)
    _check_x_weight(OPB, x, weight)
    B, O = x.shape[0], weight.shape[1]
    C.check_float(OPB, "dout", dout, ndim=2, dtype=x.dtype)
    C.check_shape(OPB, "dout", dout, (B, O), f"(B, O) with x {tuple(x.shape)} and weight {tuple(weight.shape)}")
    act = _CODE[C.choice(OPB, "activation", activation, ACTIVATIONS)]
    if out is None:
        if act != 0:
            raise ValueError(f"{OPB}: activation {activation!r} needs the forward output 'out', got out=None")
    else:
        C.check_float(OPB, "out", out, ndim=2, dtype=x.dtype)
        C.check_shape(OPB, "out", out, (B, O), "the shape of dout")
    if not isinstance(need_dx, (bool, np.bool_)):
        raise TypeError(f"{OPB}: argument 'need_dx' must be a bool, got {type(need_dx).__name__}")
    return is_cupy


def dense_backward(dout, x, weight, out, activation, *, need_dx=True, backend=None):
    """Gradients of :func:`dense_forward`: ``(dx or None, dweight, dbias)``.

    ``dout`` is ``(B, O)``, the gradient of the loss with respect to the forward output;
    ``out`` is that output (post-activation), used for the activation's derivative (it may
    be None when ``activation`` is None or ``"linear"``).  ``dbias`` is always computed.
    """
    act = _act_code(activation)
    if (
        act is not None
        and type(x) is _ND
        and type(weight) is _ND
        and type(dout) is _ND
        and x.ndim == 2
        and weight.ndim == 2
        and x.dtype in _FLOAT_DTYPES
        and weight.dtype is x.dtype
        and dout.dtype is x.dtype
        and weight.shape[0] == x.shape[1]
        and dout.shape == (x.shape[0], weight.shape[1])
        and (act == 0 if out is None else (type(out) is _ND and out.dtype is x.dtype and out.shape == dout.shape))
        and (need_dx is True or need_dx is False)
    ):
        is_cupy = False
    else:
        is_cupy = _check_backward(dout, x, weight, out, activation, need_dx)
        act = _CODE[activation]
    _, impl = _BACKWARD.pick(backend, is_cupy)
    xp = C.xp_of(is_cupy)
    dx = xp.empty(x.shape, dtype=x.dtype) if need_dx else None
    dweight = xp.empty(weight.shape, dtype=x.dtype)
    dbias = xp.empty((weight.shape[1],), dtype=x.dtype)
    impl(dout, x, weight, out if act else None, act, dx, dweight, dbias)
    return dx, dweight, dbias


# ---------------------------------------------------------------------------- reference
def _act_ref(v, activation):
    if activation == "relu":
        return max(v, 0.0)
    if activation == "sigmoid":
        return 1.0 / (1.0 + math.exp(-v)) if v >= 0 else math.exp(v) / (1.0 + math.exp(v))
    if activation == "tanh":
        return math.tanh(v)
    return v


def reference(x, weight, bias=None, activation=None):
    """Loops in float64, written to be read."""
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    B, I = x.shape
    O = weight.shape[1]
    out = np.zeros((B, O))
    for b in range(B):
        for o in range(O):
            s = 0.0 if bias is None else float(bias[o])
            for i in range(I):
                s += x[b, i] * weight[i, o]
            out[b, o] = _act_ref(s, activation)
    return out


def reference_backward(dout, x, weight, out, activation):
    """(dx, dweight, dbias) of ``sum(dout * dense_forward(x, weight, bias, activation))``, float64 loops."""
    dout = np.asarray(dout, np.float64)
    x = np.asarray(x, np.float64)
    weight = np.asarray(weight, np.float64)
    B, I = x.shape
    O = weight.shape[1]
    dz = np.zeros((B, O))
    for b in range(B):
        for o in range(O):
            y = None if out is None else float(out[b, o])
            if activation == "relu":
                d = 1.0 if y > 0 else 0.0
            elif activation == "sigmoid":
                d = y * (1.0 - y)
            elif activation == "tanh":
                d = 1.0 - y * y
            else:
                d = 1.0
            dz[b, o] = dout[b, o] * d
    dx = np.zeros((B, I))
    dweight = np.zeros((I, O))
    dbias = np.zeros(O)
    for b in range(B):
        for o in range(O):
            dbias[o] += dz[b, o]
            for i in range(I):
                dx[b, i] += dz[b, o] * weight[i, o]
                dweight[i, o] += x[b, i] * dz[b, o]
    return dx, dweight, dbias


# ---------------------------------------------------------------------------- numpy / cupy
def _xp(a):
    return np if isinstance(a, np.ndarray) else C.xp_of(True)


@quiet
def _numpy_forward(x, weight, bias, act, out):
    xp = _xp(x)
    xp.matmul(x, weight, out=out)
    if bias is not None:
        out += bias
    if act == 1:
        xp.maximum(out, 0, out=out)
    elif act == 2:
        # exp of a non-positive argument only: no overflow warning for large |z|.
        e = xp.exp(-xp.abs(out))
        out[...] = xp.where(out >= 0, 1 / (1 + e), e / (1 + e))
    elif act == 3:
        xp.tanh(out, out=out)
    return out


def _numpy_dz(dout, out, act):
    if act == 1:
        return dout * (out > 0)
    if act == 2:
        return dout * (out * (1 - out))
    if act == 3:
        return dout * (1 - out * out)
    return dout


@quiet
def _numpy_backward(dout, x, weight, out, act, dx, dweight, dbias):
    xp = _xp(x)
    dz = _numpy_dz(dout, out, act)
    xp.matmul(x.T, dz, out=dweight)
    if dx is not None:
        xp.matmul(dz, weight.T, out=dx)
    xp.sum(dz, axis=0, out=dbias)


# ---------------------------------------------------------------------------- numba
def _make_numba():
    import numba

    @numba.njit(cache=True, inline="always")
    def act_f(v, act):
        if act == 1:
            return v if not v < 0 else 0.0  # NaN stays NaN, as np.maximum
        if act == 2:
            if v >= 0:
                return 1.0 / (1.0 + np.exp(-v))
            e = np.exp(v)
            return e / (1.0 + e)
        if act == 3:
            return np.tanh(v)
        return v

    @numba.njit(cache=True, parallel=True, nogil=True)
    def forward(x, w, bias, has_bias, act, out):
        B, I = x.shape
        O = w.shape[1]
        for b in numba.prange(B):
            acc = np.zeros(O, out.dtype)
            for i in range(I):
                xv = x[b, i]
                for o in range(O):
                    acc[o] += xv * w[i, o]
            for o in range(O):
                v = acc[o] + bias[o] if has_bias else acc[o]
                out[b, o] = act_f(v, act)

    @numba.njit(cache=True, parallel=True, nogil=True)
    def backward(dout, x, w, out, act, dx, has_dx, dw, db):
        B, I = x.shape
        O = w.shape[1]
        dz = np.empty((B, O), dout.dtype)
        for b in numba.prange(B):
            for o in range(O):
                g = dout[b, o]
                if act == 1:
                    g = g if out[b, o] > 0 else 0.0
                elif act == 2:
                    g = g * (out[b, o] * (1 - out[b, o]))
                elif act == 3:
                    g = g * (1 - out[b, o] * out[b, o])
                dz[b, o] = g
        # Rows of dW and dx are owned by one iteration each: no races, fixed order.
        for i in numba.prange(I):
            for o in range(O):
                dw[i, o] = 0
            for b in range(B):
                xv = x[b, i]
                for o in range(O):
                    dw[i, o] += xv * dz[b, o]
        if has_dx:
            for b in numba.prange(B):
                for i in range(I):
                    s = 0.0
                    for o in range(O):
                        s += dz[b, o] * w[i, o]
                    dx[b, i] = s
        for o in range(O):
            db[o] = 0
        for b in range(B):
            for o in range(O):
                db[o] += dz[b, o]

    return forward, backward


_numba_fns = _backends.once(_make_numba)


def _numba_forward(x, weight, bias, act, out):
    forward, _ = _numba_fns()
    b = np.zeros(1, x.dtype) if bias is None else C.contiguous(bias)
    forward(C.contiguous(x), C.contiguous(weight), b, bias is not None, act, out)
    return out


def _numba_backward(dout, x, weight, out, act, dx, dweight, dbias):
    _, backward = _numba_fns()
    y = np.zeros((1, 1), x.dtype) if out is None else C.contiguous(out)
    d = np.zeros((1, 1), x.dtype) if dx is None else dx
    backward(C.contiguous(dout), C.contiguous(x), C.contiguous(weight), y, act, d, dx is not None, dweight, dbias)


# ---------------------------------------------------------------------------- cpp
# One growing scratch buffer per thread and dtype, reused across steps (the kernel's dz and
# W^T; never returned to the caller).
_scratch_local = threading.local()


def _scratch(n, dtype):
    cache = getattr(_scratch_local, "bufs", None)
    if cache is None:
        cache = _scratch_local.bufs = {}
    buf = cache.get(dtype)
    if buf is None or buf.size < n:
        buf = cache[dtype] = np.empty(max(n, 1024), dtype)
    return buf


def _cpp_forward(x, weight, bias, act, out):
    cpu = _backends.module("cpp")
    cpu.dense_forward(
        C.contiguous(x), C.contiguous(weight), None if bias is None else C.contiguous(bias), act, out
    )
    return out


def _cpp_backward(dout, x, weight, out, act, dx, dweight, dbias):
    cpu = _backends.module("cpp")
    B, I = x.shape
    O = weight.shape[1]
    # Scratch the kernel needs: dz (B*O) with an activation, W^T (O*I) for dx when O > 1.
    n = (B * O if act else 0) + (O * I if dx is not None and O > 1 else 0)
    work = _scratch(n, x.dtype) if n else None
    cpu.dense_backward(
        C.contiguous(dout),
        C.contiguous(x),
        C.contiguous(weight),
        None if out is None else C.contiguous(out),
        act,
        dx,
        dweight,
        dbias,
        work,
    )


# ---------------------------------------------------------------------------- cuda
# csrc/cuda/dense.cu: a tiled GEMM with bias and activation fused (forward) and dz fused
# into the operand loads (backward); no sync.
def _cuda_forward(x, weight, bias, act, out):
    from . import _cuda_util as CU

    x, weight = C.contiguous(x), C.contiguous(weight)
    bias = None if bias is None else C.contiguous(bias)
    B, I = x.shape
    _backends.module("cuda").dense_forward(x.data.ptr, weight.data.ptr, CU.ptr(bias), act, out.data.ptr, B, I,
                                           weight.shape[1], x.itemsize, CU.stream_ptr())
    return out


def _cuda_backward(dout, x, weight, out, act, dx, dweight, dbias):
    from . import _cuda_util as CU

    dout, x, weight = C.contiguous(dout), C.contiguous(x), C.contiguous(weight)
    out = None if out is None else C.contiguous(out)
    B, I = x.shape
    _backends.module("cuda").dense_backward(dout.data.ptr, x.data.ptr, weight.data.ptr, CU.ptr(out), act, CU.ptr(dx),
                                            dweight.data.ptr, dbias.data.ptr, B, I, weight.shape[1], x.itemsize,
                                            CU.stream_ptr())


_IMPL = _backends.register(
    OP, cpp=_cpp_forward, numba=_numba_forward, numpy=_numpy_forward, cupy=_numpy_forward, cuda=_cuda_forward
)
_BACKWARD = _backends.register(
    OPB, cpp=_cpp_backward, numba=_numba_backward, numpy=_numpy_backward, cupy=_numpy_backward, cuda=_cuda_backward
)
