"""adam: the fused Adam update, in place (dense ``adam_step`` and lazy ``sparse_adam_step``).

One call updates ``param``, ``m`` (first moment) and ``v`` (second moment) in place, in one
pass over memory.  With ``t = step``, ``bc1 = 1 - beta1**t``, ``bc2 = 1 - beta2**t``::

    g = grad + weight_decay * param          # decoupled=False: L2 (torch Adam, Keras)
    param *= 1 - lr * weight_decay           # decoupled=True: AdamW (torch AdamW)
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g

then, by ``eps_placement``:

* ``"keras"`` (Keras' "epsilon hat", also TF1 / the Adam paper's section 2 note)::

      alpha = lr * sqrt(bc2) / bc1
      param -= alpha * m / (sqrt(v) + eps)

* ``"torch"`` (PyTorch's ``torch.optim.Adam``)::

      param -= lr * (m / bc1) / (sqrt(v / bc2) + eps)

The two differ only in where eps sits: the torch form equals the Keras form with
``eps * sqrt(bc2)`` in place of ``eps``, which is how every backend computes it (the
coefficients are computed once per call in float64; the elementwise math runs in the
arrays' dtype).  Measured against the bias-corrected ``sqrt(v / bc2)``, Keras' eps is
``eps / sqrt(bc2)``: at step 1 with ``beta2 = 0.999`` the update is ``lr * g / (|g| + 31.6 eps)``
for Keras and ``lr * g / (|g| + eps)`` for torch; the two converge as ``bc2 -> 1``.

``adam_step`` also takes a :class:`SparseRows` gradient for a ``(V, D)`` table (what
``embedding_bag_backward(..., sparse=True)`` returns): the gradient is zero outside its rows
and every row is updated exactly as with the densified gradient (all moments decay, as in
Keras), bitwise equal on each backend, but the ``cpp`` kernel never builds the ``(V, D)``
gradient.

``sparse_adam_step`` is lazy Adam (TF ``LazyAdam``, ``torch.optim.SparseAdam``): only the
listed rows of a ``(V, D)`` table and of its moments change, each by the formulas above with
the global ``step``; the rows not listed keep their moments (they do not decay).

Backends: ``cpp`` (csrc/cpu/adam.cpp), ``numba`` and ``numpy`` (also ``cupy``, the xp idiom).
The module reads top-down: public functions with every check, ``reference()``, then the
backends.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from .. import _backends, _checks as C
from ._common import SparseRows

OP = "adam_step"
OPS = "sparse_adam_step"
PLACEMENTS = ("keras", "torch")
# Decay modes, as the kernels number them.
NONE, L2, DECOUPLED = 0, 1, 2


class _Coef(NamedTuple):
    """Per-call scalars (float64), shared by every backend."""

    beta1: float
    beta2: float
    alpha: float
    eps: float  # eps as it enters the denominator sqrt(v) + eps
    weight_decay: float
    decay: float  # 1 - lr * weight_decay (decoupled only)
    mode: int


# ---------------------------------------------------------------------------- public API
def _hyper(op, step, lr, beta1, beta2, eps, weight_decay, decoupled, eps_placement) -> _Coef:
    """Check every hyperparameter and return the kernel coefficients (nothing is written yet)."""
    t = C.scalar(op, "step", step, lo=1, integer=True)
    lr = C.scalar(op, "lr", lr, lo=0)
    beta1 = C.scalar(op, "beta1", beta1, lo=0, hi=1, hi_open=True)
    beta2 = C.scalar(op, "beta2", beta2, lo=0, hi=1, hi_open=True)
    eps = C.scalar(op, "eps", eps, lo=0, lo_open=True)
    wd = C.scalar(op, "weight_decay", weight_decay, lo=0)
    if not isinstance(decoupled, (bool, np.bool_)):
        raise TypeError(f"{op}: argument 'decoupled' must be a bool, got {type(decoupled).__name__}")
    C.choice(op, "eps_placement", eps_placement, PLACEMENTS)
    bc1 = 1.0 - beta1**t
    sqrt_bc2 = math.sqrt(1.0 - beta2**t)
    alpha = lr * sqrt_bc2 / bc1
    eps_eff = eps if eps_placement == "keras" else eps * sqrt_bc2
    mode = NONE if wd == 0.0 else (DECOUPLED if decoupled else L2)
    return _Coef(beta1, beta2, alpha, eps_eff, wd, 1.0 - lr * wd, mode)


def adam_coefficients(step, lr, beta1, beta2, eps, weight_decay, decoupled, eps_placement) -> _Coef:
    """The checked kernel coefficients of one step, for callers of the unchecked
    implementations (``fastscale.ops.implementation``)."""
    return _hyper(OP, step, lr, beta1, beta2, eps, weight_decay, decoupled, eps_placement)


def _check_inplace(op, name, a):
    """Updated in place: C-contiguous and (numpy) writeable."""
    if isinstance(a, np.ndarray):
        C.check_writeable(op, name, a)
    elif not a.flags.c_contiguous:
        raise ValueError(f"{op}: argument '{name}' is updated in place and must be C-contiguous")


def adam_step(
    param,
    grad,
    m,
    v,
    *,
    step,
    lr=1e-3,
    beta1=0.9,
    beta2=0.999,
    eps=1e-7,
    weight_decay=0.0,
    decoupled=False,
    eps_placement="keras",
    backend=None,
):
    """One fused Adam step: updates ``param``, ``m`` and ``v`` in place; returns None.

    ``param``, ``grad``, ``m``, ``v``: any shape, all the same shape and float dtype; ``param``,
    ``m`` and ``v`` C-contiguous, writeable and not sharing memory.  ``step``: the 1-based
    step number (after this update).  ``eps_placement``: ``"keras"`` (Keras' epsilon-hat,
    ``param -= lr*sqrt(1-beta2**t)/(1-beta1**t) * m / (sqrt(v) + eps)``) or ``"torch"``
    (``param -= lr * (m/(1-beta1**t)) / (sqrt(v/(1-beta2**t)) + eps)``).  ``weight_decay``
    with ``decoupled=False`` adds ``weight_decay * param`` to the gradient before the moments
    (L2, as torch Adam / Keras); with ``decoupled=True`` it scales ``param`` by
    ``1 - lr*weight_decay`` first (AdamW).  See the module docstring for the formulas.

    ``grad`` may be a :class:`SparseRows` for a 2-D ``param`` (rows in ``[0, V)``, strictly
    increasing; ``values`` of shape ``(len(rows), D)``): the same dense update with a gradient
    that is zero outside ``rows``.

    Multi-tensor form: ``param``, ``grad``, ``m``, ``v`` equal-length lists (or tuples) of arrays,
    tensor ``i`` being ``(param[i], grad[i], m[i], v[i])`` with the rules above (dense
    gradients, one float dtype for all); one call checks the hyperparameters once and updates
    every tensor, each exactly as its own call would.  No array may share memory with another.
    """
    if isinstance(param, (list, tuple)):
        _adam_step_multi(param, grad, m, v, backend, step, lr, beta1, beta2, eps, weight_decay, decoupled,
                         eps_placement)
        return
    if isinstance(grad, SparseRows):
        _adam_step_rows(param, grad, m, v, backend, step, lr, beta1, beta2, eps, weight_decay, decoupled,
                        eps_placement)
        return
    is_cupy = C.array_kind(OP, param=param, grad=grad, m=m, v=v)
    C.check_float(OP, "param", param)
    for name, a in (("grad", grad), ("m", m), ("v", v)):
        C.check_float(OP, name, a, dtype=param.dtype)
    for name, a in (("grad", grad), ("m", m), ("v", v)):
        C.check_shape(OP, name, a, param.shape, "the shape of param")
    for name, a in (("param", param), ("m", m), ("v", v)):
        _check_inplace(OP, name, a)
    C.check_no_overlap(OP, param=param, grad=grad, m=m, v=v)
    k = _hyper(OP, step, lr, beta1, beta2, eps, weight_decay, decoupled, eps_placement)
    _name, impl = _IMPL.pick(backend, is_cupy)
    impl(param, C.contiguous(grad), m, v, k)


def _multi_fast_ok(params, grads, ms, vs) -> bool:
    """True when every check below would pass, by a cheaper test: numpy arrays of one float
    dtype and matching shapes, the updated ones writeable, all C-contiguous and aligned, each
    owning its memory (no view: distinct arrays then cannot overlap).  False sends the call
    through the full checks, which name whatever is wrong."""
    dt = params[0].dtype if type(params[0]) is np.ndarray else None
    if dt not in C.FLOATS:
        return False
    seen = set()
    for p, g, m, v in zip(params, grads, ms, vs):
        for a in (p, g, m, v):
            if type(a) is not np.ndarray or a.dtype != dt or a.shape != p.shape or a.base is not None:
                return False
            f = a.flags
            if not (f.c_contiguous and f.aligned and (f.writeable or a is g)):
                return False
            seen.add(id(a))
    return len(seen) == 4 * len(params)


def _adam_step_multi(params, grads, ms, vs, backend, *hyper):
    lists = {"param": params, "grad": grads, "m": ms, "v": vs}
    for name, a in lists.items():
        if not isinstance(a, (list, tuple)):
            raise TypeError(f"{OP}: with a list of params, argument '{name}' must be a list of arrays too, "
                            f"got {C._describe(a)}")
    n = len(params)
    if any(len(a) != n for a in lists.values()):
        raise ValueError(f"{OP}: the lists param, grad, m, v must have the same length, got "
                         + ", ".join(f"{k} {len(a)}" for k, a in lists.items()))
    k = _hyper(OP, *hyper)
    if n == 0:
        return
    if _multi_fast_ok(params, grads, ms, vs):  # the training loop's case, checked cheaply
        _name, impl = _MULTI.pick(backend, False)
        impl(list(params), list(grads), list(ms), list(vs), k)
        return
    arrays, names = [], []
    for i in range(n):
        for name in lists:
            arrays.append(lists[name][i])
            names.append(f"{name}[{i}]")
    is_cupy = C.array_kind(OP, **dict(zip(names, arrays)))
    C.check_float(OP, "param[0]", params[0])
    dt = params[0].dtype
    grads = list(grads)
    for i in range(n):
        for name in lists:
            a = lists[name][i]
            if isinstance(a, SparseRows):
                raise TypeError(f"{OP}: the multi-tensor form takes dense gradients, got a SparseRows {name}[{i}]")
            C.check_float(OP, f"{name}[{i}]", a, dtype=dt)
            if name != "param":
                C.check_shape(OP, f"{name}[{i}]", a, params[i].shape, f"the shape of param[{i}]")
            if name != "grad":
                _check_inplace(OP, f"{name}[{i}]", a)
        grads[i] = C.contiguous(grads[i])
    C.check_no_overlap_contiguous(OP, names, [grads[j // 4] if j % 4 == 1 else a for j, a in enumerate(arrays)])
    _name, impl = _MULTI.pick(backend, is_cupy)
    impl(list(params), grads, list(ms), list(vs), k)


def _check_table_rows(op, param, rows, values, m, v, rows_name, values_name, num_embeddings=None):
    """The array checks of a (V, D) table updated from a row list and its values (the
    SparseRows form of adam_step, sparse_adam_step); returns True for cupy arrays."""
    is_cupy = C.array_kind(op, **{"param": param, rows_name: rows, values_name: values, "m": m, "v": v})
    C.check_float(op, "param", param, ndim=2)
    if num_embeddings is not None and num_embeddings != param.shape[0]:
        raise ValueError(f"{op}: the SparseRows gradient is for a table of {num_embeddings} rows, "
                         f"got param of shape {param.shape}")
    C.check_index(op, rows_name, rows, ndim=1)
    for name, a in ((values_name, values), ("m", m), ("v", v)):
        C.check_float(op, name, a, dtype=param.dtype)
    C.check_shape(op, "m", m, param.shape, "the shape of param")
    C.check_shape(op, "v", v, param.shape, "the shape of param")
    C.check_shape(op, values_name, values, (rows.shape[0], param.shape[1]), "(len(rows), D)")
    for name, a in (("param", param), ("m", m), ("v", v)):
        _check_inplace(op, name, a)
    C.check_no_overlap(op, **{"param": param, values_name: values, "m": m, "v": v})
    return is_cupy


def _adam_step_rows(param, grad, m, v, backend, *hyper):
    rows, values = grad.rows, grad.values
    nd = np.ndarray
    if (type(param) is nd and type(m) is nd and type(v) is nd and type(rows) is nd and type(values) is nd
            and param.ndim == 2 and param.dtype in C.FLOATS and m.dtype == param.dtype and v.dtype == param.dtype
            and values.dtype == param.dtype and rows.dtype in C.INDEXES and rows.ndim == 1
            and m.shape == param.shape and v.shape == param.shape and grad.num_embeddings == param.shape[0]
            and values.shape == (rows.shape[0], param.shape[1])
            and param.base is None and m.base is None and v.base is None and values.base is None
            and len({id(param), id(m), id(v), id(values)}) == 4
            and all(a.flags.c_contiguous and a.flags.writeable and a.flags.aligned for a in (param, m, v))
            and all(a.flags.c_contiguous and a.flags.aligned for a in (values, rows))):
        # The training loop's case, cleared cheaply (owned, distinct arrays cannot overlap);
        # anything else takes the full checks below, which name what is wrong.
        _name, impl = _ROWS.pick(backend, False)
        impl(param, rows, values, m, v, _hyper(OP, *hyper))
        return
    is_cupy = _check_table_rows(OP, param, rows, values, m, v, "grad.rows", "grad.values", grad.num_embeddings)
    k = _hyper(OP, *hyper)
    _name, impl = _ROWS.pick(backend, is_cupy)
    impl(param, C.contiguous(rows), C.contiguous(values), m, v, k)


def sparse_adam_step(
    param,
    rows,
    values,
    m,
    v,
    *,
    step,
    lr=1e-3,
    beta1=0.9,
    beta2=0.999,
    eps=1e-7,
    weight_decay=0.0,
    decoupled=False,
    eps_placement="keras",
    backend=None,
):
    """Lazy Adam: the :func:`adam_step` update on ``param[rows]``, ``m[rows]``, ``v[rows]`` only.

    ``param``, ``m``, ``v``: ``(V, D)``; ``rows``: int32/int64 ``(R,)``, strictly increasing,
    within ``[0, V)`` (``SparseRows.rows`` is); ``values``: ``(R, D)``, the gradient of those
    rows.  Rows not listed are left exactly as they are (their moments do not decay).  An
    out-of-range row raises IndexError, rows that are not strictly increasing ValueError,
    before anything is written.
    """
    is_cupy = _check_table_rows(OPS, param, rows, values, m, v, "rows", "values")
    k = _hyper(OPS, step, lr, beta1, beta2, eps, weight_decay, decoupled, eps_placement)
    _name, impl = _SPARSE.pick(backend, is_cupy)
    impl(param, C.contiguous(rows), C.contiguous(values), m, v, k)


def sparse_adam_step_pending(param, grad, m, v, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0,
                             decoupled=False, eps_placement="keras", backend=None):
    """:func:`sparse_adam_step` of a :class:`PendingRows` gradient (lazy Adam in a GPU training
    step): on the ``cuda`` backend its row count goes to the kernel without a read-back;
    elsewhere it is resolved first."""
    rows, values, count = grad.buffers
    is_cupy = _check_table_rows(OPS, param, rows, values, m, v, "rows", "values", grad.num_embeddings)
    k = _hyper(OPS, step, lr, beta1, beta2, eps, weight_decay, decoupled, eps_placement)
    name, impl = _SPARSE.pick(backend, is_cupy)
    if name == "cuda":
        _cuda_sparse(param, rows, C.contiguous(values), m, v, k, count)
    else:
        g = grad.resolve()
        impl(param, g.rows, C.contiguous(g.values), m, v, k)


# ---------------------------------------------------------------------------- reference
def reference(param, grad, m, v, *, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-7, weight_decay=0.0,
              decoupled=False, eps_placement="keras"):
    """Loops in float64, the formulas exactly as Keras / PyTorch write them.

    Returns new ``(param, m, v)`` arrays; the inputs are not changed.
    """
    shape = np.shape(param)
    p = np.array(param, dtype=np.float64).reshape(-1)
    g_in = np.asarray(grad, dtype=np.float64).reshape(-1)
    mm = np.array(m, dtype=np.float64).reshape(-1)
    vv = np.array(v, dtype=np.float64).reshape(-1)
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2**step
    for i in range(p.shape[0]):
        g = g_in[i]
        if weight_decay and not decoupled:
            g = g + weight_decay * p[i]
        if weight_decay and decoupled:
            p[i] = p[i] * (1.0 - lr * weight_decay)
        mm[i] = beta1 * mm[i] + (1.0 - beta1) * g
        vv[i] = beta2 * vv[i] + (1.0 - beta2) * g * g
        if eps_placement == "keras":
            alpha = lr * math.sqrt(bc2) / bc1
            p[i] = p[i] - alpha * mm[i] / (math.sqrt(vv[i]) + eps)
        else:
            m_hat = mm[i] / bc1
            v_hat = vv[i] / bc2
            p[i] = p[i] - lr * m_hat / (math.sqrt(v_hat) + eps)
    return p.reshape(shape), mm.reshape(shape), vv.reshape(shape)


def reference_sparse(param, rows, values, m, v, **hyper):
    """Lazy Adam in float64: the dense reference applied to each listed row, others untouched."""
    p = np.array(param, dtype=np.float64)
    mm = np.array(m, dtype=np.float64)
    vv = np.array(v, dtype=np.float64)
    for i, r in enumerate(np.asarray(rows)):
        p[r], mm[r], vv[r] = reference(p[r], np.asarray(values)[i], mm[r], vv[r], **hyper)
    return p, mm, vv


# ---------------------------------------------------------------------------- numpy / cupy
def _xp(a):
    return np if isinstance(a, np.ndarray) else C.xp_of(True)


def _update_xp(p, g, m, v, k: _Coef, t1, t2, xp):
    """The update on 1-D slices in the arrays' dtype; t1, t2 are scratch of the same size."""
    dt = p.dtype.type
    if k.mode == L2:
        xp.multiply(p, dt(k.weight_decay), out=t1)
        g = xp.add(t1, g, out=t1)
    elif k.mode == DECOUPLED:
        p *= dt(k.decay)
    m *= dt(k.beta1)  # m = beta1 * m + (1 - beta1) * g (exact for beta1 = 0)
    xp.multiply(g, dt(1.0 - k.beta1), out=t2)
    m += t2
    v *= dt(k.beta2)  # v = beta2 * v + (1 - beta2) * g * g
    xp.multiply(g, g, out=t2)
    t2 *= dt(1.0 - k.beta2)
    v += t2
    xp.sqrt(v, out=t2)  # p -= alpha * m / (sqrt(v) + eps)
    t2 += dt(k.eps)
    xp.divide(m, t2, out=t2)
    t2 *= dt(k.alpha)
    p -= t2


def _numpy_dense(param, grad, m, v, k: _Coef):
    xp = _xp(param)
    p, g, mm, vv = (a.reshape(-1) for a in (param, grad, m, v))
    n = p.shape[0]
    # numpy: 16K-element slices so the two temporaries stay in cache; cupy: one launch each.
    chunk = max(1, n) if xp is not np else 1 << 14
    t1 = xp.empty(min(chunk, n), p.dtype)
    t2 = xp.empty(min(chunk, n), p.dtype)
    # A NaN / inf gradient propagates silently, as on the other backends (no RuntimeWarning).
    with np.errstate(all="ignore"):
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            _update_xp(p[s:e], g[s:e], mm[s:e], vv[s:e], k, t1[: e - s], t2[: e - s], xp)


def _raise_unordered(op, rows, i, name="rows"):
    raise ValueError(
        f"{op}: argument '{name}' must be strictly increasing (sorted, no duplicates), "
        f"got {name}[{i - 1}] = {int(rows[i - 1])} and {name}[{i}] = {int(rows[i])}"
    )


def _check_rows(op, rows, V, name=None):
    """The first position where rows leaves [0, V) (IndexError) or stops increasing (ValueError)."""
    name = name or ("grad.rows" if op == OP else "rows")
    if rows.shape[0] == 0:
        return
    out = (rows < 0) | (rows >= V)
    bad = out.copy()
    bad[1:] |= rows[1:] <= rows[:-1]
    if bool(bad.any()):
        i = int(bad.argmax())
        if bool(out[i]):
            C.raise_bad_id(op, name, rows, i, V)
        _raise_unordered(op, rows, i, name)


def _numpy_sparse(param, rows, values, m, v, k: _Coef):
    _check_rows(OPS, rows, param.shape[0])
    if rows.shape[0] == 0:
        return
    # Gather the touched rows, run the dense update on them, scatter back (rows are unique).
    p, mm, vv = param[rows], m[rows], v[rows]
    _numpy_dense(p, values, mm, vv, k)
    param[rows] = p
    m[rows] = mm
    v[rows] = vv


def _numpy_rows(param, rows, values, m, v, k: _Coef):
    """Dense Adam from a row-sparse gradient: densify, then the dense update (cupy as well)."""
    _check_rows(OP, rows, param.shape[0])
    xp = _xp(param)
    grad = xp.zeros_like(param)
    grad[rows] = values
    _numpy_dense(param, grad, m, v, k)


# ---------------------------------------------------------------------------- numba
def _make_numba():
    import numba

    @numba.njit(inline="always")
    def elem(p, m, v, j, gj, c1, b2, c2, alpha, eps, wd, decay, mode, b1):
        pj = p[j]
        if mode == 1:
            gj = gj + wd * pj
        elif mode == 2:
            pj = pj * decay
        mj = b1 * m[j] + c1 * gj
        vj = b2 * v[j] + c2 * (gj * gj)
        m[j] = mj
        v[j] = vj
        p[j] = pj - alpha * mj / (np.sqrt(vj) + eps)

    @numba.njit(cache=True, parallel=True, nogil=True)
    def dense(p, g, m, v, c1, b2, c2, alpha, eps, wd, decay, mode, b1):
        n = p.shape[0]
        nb = (n + 4095) // 4096
        for b in numba.prange(nb):
            for j in range(b * 4096, min(n, (b + 1) * 4096)):
                elem(p, m, v, j, g[j], c1, b2, c2, alpha, eps, wd, decay, mode, b1)

    @numba.njit(cache=True, parallel=True, nogil=True)
    def sparse(p, rows, vals, m, v, c1, b2, c2, alpha, eps, wd, decay, mode, b1):
        D = p.shape[1]
        for i in numba.prange(rows.shape[0]):
            r = rows[i]
            pr, mr, vr, gr = p[r], m[r], v[r], vals[i]
            for j in range(D):
                elem(pr, mr, vr, j, gr[j], c1, b2, c2, alpha, eps, wd, decay, mode, b1)

    @numba.njit(cache=True, parallel=True, nogil=True)
    def rows_dense(p, slot, vals, m, v, c1, b2, c2, alpha, eps, wd, decay, mode, b1):
        # slot[r]: row r's position in vals, or -1 (a zero gradient).
        V, D = p.shape
        for r in numba.prange(V):
            s = slot[r]
            pr, mr, vr = p[r], m[r], v[r]
            for j in range(D):
                gj = vals[s, j] if s >= 0 else p.dtype.type(0)
                elem(pr, mr, vr, j, gj, c1, b2, c2, alpha, eps, wd, decay, mode, b1)

    return dense, sparse, rows_dense


_numba_fns = _backends.once(_make_numba)


def _scalars(k: _Coef, dtype):
    """The kernel scalars in the arrays' dtype, so numba does float32 math for float32."""
    dt = np.dtype(dtype).type
    with np.errstate(over="ignore"):  # a float64 coefficient past float32's range rounds to inf, as in C++
        return _scalars_in(k, dt)


def _scalars_in(k: _Coef, dt):
    return (dt(1.0 - k.beta1), dt(k.beta2), dt(1.0 - k.beta2), dt(k.alpha), dt(k.eps), dt(k.weight_decay),
            dt(k.decay), k.mode, dt(k.beta1))


def _numba_dense(param, grad, m, v, k: _Coef):
    dense, _, _ = _numba_fns()
    dense(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), *_scalars(k, param.dtype))


def _numba_sparse(param, rows, values, m, v, k: _Coef):
    _check_rows(OPS, rows, param.shape[0])
    _, sparse, _ = _numba_fns()
    sparse(param, rows, values, m, v, *_scalars(k, param.dtype))


def _numba_rows(param, rows, values, m, v, k: _Coef):
    _check_rows(OP, rows, param.shape[0])
    _, _, rows_dense = _numba_fns()
    slot = np.full(param.shape[0], -1, np.int64)
    slot[rows] = np.arange(rows.shape[0])
    rows_dense(param, slot, values, m, v, *_scalars(k, param.dtype))


# ---------------------------------------------------------------------------- cpp
def _cpp_dense(param, grad, m, v, k: _Coef):
    cpu = _backends.module("cpp")
    cpu.adam_step(param, grad, m, v, k.beta1, k.beta2, k.alpha, k.eps, k.weight_decay, k.decay, k.mode)


def _cpp_sparse(param, rows, values, m, v, k: _Coef):
    cpu = _backends.module("cpp")
    status = cpu.sparse_adam_step(param, rows, values, m, v, k.beta1, k.beta2, k.alpha, k.eps, k.weight_decay,
                                  k.decay, k.mode)
    if status > 0:
        C.raise_bad_id(OPS, "rows", rows, status - 1, param.shape[0])
    if status < 0:
        _raise_unordered(OPS, rows, -status - 1)


def _cpp_rows(param, rows, values, m, v, k: _Coef):
    cpu = _backends.module("cpp")
    status = cpu.adam_step_rows(param, rows, values, m, v, k.beta1, k.beta2, k.alpha, k.eps, k.weight_decay,
                                k.decay, k.mode)
    if status > 0:
        C.raise_bad_id(OP, "grad.rows", rows, status - 1, param.shape[0])
    if status < 0:
        _raise_unordered(OP, rows, -status - 1, "grad.rows")


def _cpp_multi(params, grads, ms, vs, k: _Coef):
    cpu = _backends.module("cpp")
    cpu.adam_step_multi(params, grads, ms, vs, k.beta1, k.beta2, k.alpha, k.eps, k.weight_decay, k.decay, k.mode)


def _each(single):
    """A multi-tensor implementation as a loop of the single-tensor one (numba, numpy, cupy)."""
    def multi(params, grads, ms, vs, k: _Coef):
        for p, g, m, v in zip(params, grads, ms, vs):
            single(p, g, m, v, k)

    return multi


# ---------------------------------------------------------------------------- cuda
# csrc/cuda/adam.cu.  The kernels skip every write when the stream's device error word is
# set (a bad id earlier in a step under deferred checks), so bad input never updates a
# parameter.
def _cuda_multi(params, grads, ms, vs, k: _Coef):
    """One multi-tensor launch over lists of checked, C-contiguous cupy arrays of one dtype
    (for an optimizer stepping several tensors at once)."""
    from . import _cuda_util as CU

    st = CU.state()
    _backends.module("cuda").adam_multi(
        [a.data.ptr for a in params], [a.data.ptr for a in grads], [a.data.ptr for a in ms],
        [a.data.ptr for a in vs], [a.size for a in params], params[0].itemsize if params else 4,
        k.beta1, k.beta2, k.alpha, k.eps, k.weight_decay, k.decay, k.mode, st.err, CU.stream_ptr(),
    )


def _cuda_dense(param, grad, m, v, k: _Coef):
    _cuda_multi([param], [grad], [m], [v], k)


def _cuda_sparse(param, rows, values, m, v, k: _Coef, count=None):
    """``count``: a device int64 word holding how many leading rows to update (a PendingRows')."""
    from . import _cuda_util as CU

    V, D = param.shape

    def raiser(kind, pos):
        if kind == CU.ERR_ORDER:
            _raise_unordered(OPS, rows, pos)
        C.raise_bad_id(OPS, "rows", rows, pos, V)

    st, tag, s = CU.begin(raiser)
    _backends.module("cuda").sparse_adam_step(
        param.data.ptr, rows.data.ptr, CU.ptr(values), m.data.ptr, v.data.ptr, V, D, rows.shape[0], param.itemsize,
        rows.itemsize, k.beta1, k.beta2, k.alpha, k.eps, k.weight_decay, k.decay, k.mode, CU.ptr(count), st.err,
        tag, s,
    )
    CU.finish(st)


def _cuda_rows(param, rows, values, m, v, k: _Coef):
    """Densify on the device (cupy), then the fused dense kernel.  Checking the rows costs one
    device sync (no CUDA kernel of its own yet: the training stack on GPU keeps dense grads)."""
    _check_rows(OP, rows, param.shape[0])
    grad = C.xp_of(True).zeros_like(param)
    grad[rows] = values
    _cuda_dense(param, grad, m, v, k)


_IMPL = _backends.register(
    OP, cpp=_cpp_dense, numba=_numba_dense, numpy=_numpy_dense, cupy=_numpy_dense, cuda=_cuda_dense
)
_MULTI = _backends.register(
    OP + "(multi-tensor)", cpp=_cpp_multi, numba=_each(_numba_dense), numpy=_each(_numpy_dense),
    cupy=_each(_numpy_dense), cuda=_cuda_multi
)
_ROWS = _backends.register(
    OP + "(SparseRows)", cpp=_cpp_rows, numba=_numba_rows, numpy=_numpy_rows, cupy=_numpy_rows, cuda=_cuda_rows
)
_SPARSE = _backends.register(
    OPS, cpp=_cpp_sparse, numba=_numba_sparse, numpy=_numpy_sparse, cupy=_numpy_sparse, cuda=_cuda_sparse
)
