"""embedding_bag: lookup + sum / mean of the rows of each bag, in one pass.

Bags are given two ways:

* CSR: ``ids`` 1-D ``(N,)`` and ``offsets`` ``(B+1,)``; bag ``b`` is ``ids[offsets[b]:offsets[b+1]]``.
  ``offsets`` starts at 0, never decreases and ends at N (empty bags allowed).
* padded: ``ids`` 2-D ``(B, T)`` and ``offsets=None``; bag ``b`` is row ``b``.

Ids equal to ``padding_idx`` are left out of the sum and of the count.  The mean of an empty
(or all-padding) bag is zeros, never NaN.  ``per_sample_weights`` (same shape as ``ids``)
scales each row; it needs ``mode="sum"``.  The ``(B, T, D)`` tensor is never built.

Backends: ``cpp`` (csrc/cpu/embedding_bag.cpp), ``numba`` and ``numpy`` (below).  The
module reads top-down: public functions with every check, ``reference()``, then the
backends.
"""
from __future__ import annotations

import numpy as np

from .. import _backends, _checks as C
from ._common import PendingRows, SparseRows, quiet, renumber, row_mark, scratch, use_row_mark

OP = "embedding_bag"
OPB = "embedding_bag_backward"
MODES = ("sum", "mean")


# ---------------------------------------------------------------------------- public API
def _check_bags(op, ids, offsets, per_sample_weights, mode, padding_idx, num_embeddings, dtype):
    """Shape / dtype / hyperparameter checks shared by forward and backward; returns B."""
    C.check_index(op, "ids", ids, ndim=(1, 2))
    C.choice(op, "mode", mode, MODES)
    if ids.ndim == 1:
        if offsets is None:
            raise ValueError(f"{op}: 1-D ids (CSR) need 'offsets' of shape (B+1,), got offsets=None")
        C.check_index(op, "offsets", offsets, ndim=1)
        if offsets.shape[0] < 1:
            raise ValueError(f"{op}: argument 'offsets' must have B+1 >= 1 entries, got shape {tuple(offsets.shape)}")
        B = offsets.shape[0] - 1
    else:
        if offsets is not None:
            raise ValueError(
                f"{op}: 2-D (padded) ids take offsets=None, got offsets of shape {tuple(offsets.shape)} "
                "(pass 1-D ids for CSR bags)"
            )
        B = ids.shape[0]
    if per_sample_weights is not None:
        if mode != "sum":
            raise ValueError(f"{op}: per_sample_weights needs mode='sum', got mode={mode!r}")
        C.check_float(op, "per_sample_weights", per_sample_weights, dtype=dtype)
        C.check_shape(op, "per_sample_weights", per_sample_weights, ids.shape, "the shape of ids")
    if padding_idx is not None:
        C.scalar(op, "padding_idx", padding_idx, lo=0, hi=num_embeddings - 1, integer=True)
    return B


def embedding_bag(weight, ids, offsets=None, *, mode="mean", per_sample_weights=None, padding_idx=None, backend=None):
    """Sum or mean of ``weight`` rows per bag: ``(V, D)`` table -> ``(B, D)``.

    Equivalent to ``weight[ids]`` followed by a masked sum / mean over each bag, without
    building the gathered rows.  ids may be int32 or int64; weight float32 or float64.
    """
    is_cupy = C.array_kind(OP, weight=weight, ids=ids, offsets=offsets, per_sample_weights=per_sample_weights)
    C.check_float(OP, "weight", weight, ndim=2)
    B = _check_bags(OP, ids, offsets, per_sample_weights, mode, padding_idx, weight.shape[0], weight.dtype)
    name, impl = _IMPL.pick(backend, is_cupy)
    xp = C.xp_of(is_cupy)
    out = xp.empty((B, weight.shape[1]), dtype=weight.dtype)
    pad = -1 if padding_idx is None else int(padding_idx)
    impl(weight, ids, offsets, per_sample_weights, pad, mode == "mean", out)
    return out


def embedding_bag_backward(
    dout,
    ids,
    offsets=None,
    *,
    num_embeddings,
    mode="mean",
    per_sample_weights=None,
    padding_idx=None,
    sparse=False,
    out=None,
    backend=None,
):
    """Gradient of :func:`embedding_bag` with respect to ``weight``.

    ``sparse=False``: a dense ``(V, D)`` array (written into ``out`` when given, so a training
    loop can reuse one buffer).  ``sparse=True``: :class:`SparseRows` with the unique sorted
    rows the bags touched.  The padding row gets no gradient.  (The gradient with respect to
    ``per_sample_weights`` is not computed.)
    """
    is_cupy = C.array_kind(OPB, dout=dout, ids=ids, offsets=offsets, per_sample_weights=per_sample_weights, out=out)
    C.check_float(OPB, "dout", dout, ndim=2)
    V = C.scalar(OPB, "num_embeddings", num_embeddings, lo=1, integer=True)
    B = _check_bags(OPB, ids, offsets, per_sample_weights, mode, padding_idx, V, dout.dtype)
    C.check_shape(OPB, "dout", dout, (B, dout.shape[1]), "one row per bag")
    if not isinstance(sparse, bool):
        raise TypeError(f"{OPB}: argument 'sparse' must be a bool, got {type(sparse).__name__}")
    D = dout.shape[1]
    name, impl = _BACKWARD.pick(backend, is_cupy)
    xp = C.xp_of(is_cupy)
    pad = -1 if padding_idx is None else int(padding_idx)
    if sparse:
        if out is not None:
            raise ValueError(f"{OPB}: 'out' is for the dense gradient; it cannot be used with sparse=True")
        g = impl(dout, ids, offsets, per_sample_weights, pad, mode == "mean", None, V)
        return g if isinstance(g, PendingRows) else SparseRows(*g, V)
    if out is None:
        if V >= 1 << 63:  # numpy raises ValueError for such a shape, CuPy OverflowError: one error here
            raise ValueError(f"{OPB}: argument 'num_embeddings' must be below 2**63 for a dense gradient "
                             f"(sparse=True takes any), got {V}")
        out = xp.empty((V, D), dtype=dout.dtype)
    else:
        C.check_float(OPB, "out", out, dtype=dout.dtype)
        C.check_shape(OPB, "out", out, (V, D), "(num_embeddings, D)")
        C.check_writeable(OPB, "out", out)
    impl(dout, ids, offsets, per_sample_weights, pad, mode == "mean", out, V)
    return out


# ---------------------------------------------------------------------------- reference
def _bags(ids, offsets):
    """Python list of the bags (1-D int arrays)."""
    if offsets is None:
        return [np.asarray(row) for row in ids]
    return [np.asarray(ids[int(offsets[b]) : int(offsets[b + 1])]) for b in range(len(offsets) - 1)]


def reference(weight, ids, offsets=None, *, mode="mean", per_sample_weights=None, padding_idx=None):
    """Loops in float64, written to be read."""
    weight = np.asarray(weight, dtype=np.float64)
    psw = None if per_sample_weights is None else np.asarray(per_sample_weights, np.float64)
    psw_bags = None if psw is None else _bags(psw, offsets)
    bags = _bags(np.asarray(ids), None if offsets is None else np.asarray(offsets))
    out = np.zeros((len(bags), weight.shape[1]))
    for b, bag in enumerate(bags):
        count = 0
        for k, i in enumerate(bag):
            if padding_idx is not None and i == padding_idx:
                continue
            w = 1.0 if psw_bags is None else psw_bags[b][k]
            out[b] += w * weight[i]
            count += 1
        if mode == "mean" and count > 0:
            out[b] /= count
    return out


def reference_backward(dout, ids, offsets=None, *, num_embeddings, mode="mean", per_sample_weights=None, padding_idx=None):
    """d(sum(dout * embedding_bag(weight, ...)))/dweight, loops in float64."""
    dout = np.asarray(dout, dtype=np.float64)
    psw = None if per_sample_weights is None else np.asarray(per_sample_weights, np.float64)
    psw_bags = None if psw is None else _bags(psw, offsets)
    bags = _bags(np.asarray(ids), None if offsets is None else np.asarray(offsets))
    grad = np.zeros((num_embeddings, dout.shape[1]))
    for b, bag in enumerate(bags):
        kept = [k for k, i in enumerate(bag) if padding_idx is None or i != padding_idx]
        for k in kept:
            w = 1.0 if psw_bags is None else psw_bags[b][k]
            if mode == "mean":
                w = w / len(kept)
            grad[bag[k]] += w * dout[b]
    return grad


# ---------------------------------------------------------------------------- numpy / cupy
def _bag_index(ids, offsets, xp):
    """(flat ids, bag of each id) for CSR or padded bags."""
    if offsets is None:
        B, T = ids.shape
        return ids.reshape(-1), xp.repeat(xp.arange(B), T)
    if xp is np:
        return ids, np.repeat(np.arange(offsets.shape[0] - 1), np.diff(offsets.astype(np.int64)))
    # CuPy before 14.1 takes no device array as repeats: the bag of id k is the number of
    # bag ends <= k (empty bags included).
    return ids, xp.searchsorted(offsets[1:].astype(xp.int64), xp.arange(ids.shape[0]), side="right")


def _validate_xp(op, ids, offsets, V):
    # Callers pass ids through C.contiguous first, as the cpp adapter does: a huge
    # broadcast view (zero strides, billions of ids) is then copied once -- MemoryError when
    # it cannot be -- instead of being validated and walked id by id for minutes (the long
    # fuzz run found the numba forward spending > 120 s on a (2**32 + 1, 3) broadcast).
    if offsets is not None:
        C.check_offsets(op, offsets, ids.shape[0])
    C.check_ids_range(op, "ids", ids, V)


def _weights_xp(flat_ids, psw, pad, mean, bag, B, xp, dtype):
    """Per-id factor: psw (or 1), 0 for padding, divided by the bag's count for mean."""
    w = xp.ones(flat_ids.shape[0], dtype) if psw is None else psw.reshape(-1).astype(dtype, copy=False)
    if pad >= 0:
        w = w * (flat_ids != pad)
    if mean and flat_ids.shape[0]:  # (CuPy before 14.2 cannot bincount an empty array)
        count = xp.bincount(bag, weights=(flat_ids != pad) if pad >= 0 else None, minlength=B)
        w = w / xp.maximum(count, 1).astype(dtype)[bag]
    return w.astype(dtype, copy=False)


@quiet
def _numpy_forward(weight, ids, offsets, psw, pad, mean, out):
    xp = np if isinstance(weight, np.ndarray) else C.xp_of(True)
    ids = C.contiguous(ids)
    _validate_xp(OP, ids, offsets, weight.shape[0])
    flat, bag = _bag_index(ids, offsets, xp)
    B = out.shape[0]
    w = _weights_xp(flat, psw, pad, mean, bag, B, xp, weight.dtype)
    out[...] = 0
    # Row-chunked so a large batch never gathers more than ~16 MB at once.
    step = max(1, (1 << 22) // max(1, weight.shape[1]))
    for s in range(0, flat.shape[0], step):
        rows = weight[flat[s : s + step]] * w[s : s + step, None]
        xp.add.at(out, bag[s : s + step], rows)  # cupy too: ndarray.scatter_add is deprecated
    return out


@quiet
def _numpy_backward(dout, ids, offsets, psw, pad, mean, out, V):
    xp = np if isinstance(dout, np.ndarray) else C.xp_of(True)
    ids = C.contiguous(ids)
    _validate_xp(OPB, ids, offsets, V)
    flat, bag = _bag_index(ids, offsets, xp)
    w = _weights_xp(flat, psw, pad, mean, bag, dout.shape[0], xp, dout.dtype)
    keep = flat != pad if pad >= 0 else None
    if out is None:  # sparse
        kept_ids = flat if keep is None else flat[keep]
        rows, inverse = xp.unique(kept_ids, return_inverse=True)
        values = xp.zeros((rows.shape[0], dout.shape[1]), dout.dtype)
        contrib = dout[bag] * w[:, None]
        if keep is not None:
            contrib = contrib[keep]
        xp.add.at(values, inverse.reshape(-1), contrib)
        return rows.astype(xp.int64), values
    out[...] = 0
    contrib = dout[bag] * w[:, None]
    xp.add.at(out, flat, contrib)
    if pad >= 0:
        out[pad] = 0
    return out


# ---------------------------------------------------------------------------- numba
def _make_numba():
    import numba

    @numba.njit(cache=True, parallel=True, nogil=True)
    def forward(weight, ids, starts, ends, psw, has_psw, pad, mean, out):
        D = weight.shape[1]
        for b in numba.prange(out.shape[0]):
            acc = np.zeros_like(out[b])
            n = 0
            for k in range(starts[b], ends[b]):
                i = ids[k]
                if i == pad:
                    continue
                c = psw[k] if has_psw else 1.0
                for j in range(D):
                    acc[j] += c * weight[i, j]
                n += 1
            scale = (1.0 / n if n > 0 else 0.0) if mean else 1.0
            for j in range(D):
                out[b, j] = acc[j] * scale

    @numba.njit(cache=True, parallel=True, nogil=True)
    def backward(dout, ids, starts, ends, psw, has_psw, pad, mean, slot, grad, nblocks):
        # Threads own blocks of 16 rows of grad (race-free, same order for any thread count).
        D = dout.shape[1]
        B = dout.shape[0]
        for blk in numba.prange(nblocks):
            r0 = blk * 16
            r1 = min(grad.shape[0], r0 + 16)
            grad[r0:r1, :] = 0
            for b in range(B):
                n = 0
                if mean:
                    for k in range(starts[b], ends[b]):
                        if ids[k] != pad:
                            n += 1
                    if n == 0:
                        continue
                for k in range(starts[b], ends[b]):
                    i = ids[k]
                    if i == pad:
                        continue
                    r = slot[i]
                    if r < r0 or r >= r1:
                        continue
                    c = psw[k] if has_psw else 1.0
                    if mean:
                        c = c / n
                    for j in range(D):
                        grad[r, j] += c * dout[b, j]

    return forward, backward


_numba_fns = _backends.once(_make_numba)


def _starts_ends(ids, offsets):
    if offsets is None:
        B, T = ids.shape
        starts = np.arange(B, dtype=np.int64) * T
        return ids.reshape(-1), starts, starts + T
    off = offsets.astype(np.int64, copy=False)
    return ids, off[:-1], off[1:]


def _numba_forward(weight, ids, offsets, psw, pad, mean, out):
    ids = C.contiguous(ids)
    _validate_xp(OP, ids, offsets, weight.shape[0])
    forward, _ = _numba_fns()
    flat, starts, ends = _starts_ends(ids, offsets)
    p = np.zeros(1, weight.dtype) if psw is None else psw.reshape(-1)
    forward(C.contiguous(weight), flat, starts, ends, p, psw is not None, pad, mean, out)
    return out


def _numba_backward(dout, ids, offsets, psw, pad, mean, out, V):
    ids = C.contiguous(ids)
    _validate_xp(OPB, ids, offsets, V)
    _, backward = _numba_fns()
    flat, starts, ends = _starts_ends(ids, offsets)
    p = np.zeros(1, dout.dtype) if psw is None else psw.reshape(-1)
    dout = C.contiguous(dout)
    if out is None:  # sparse: ids renumbered densely (no O(V) memory), the same kernel
        uniq, ids2, pad2, slot = renumber(flat, pad)
        rows = uniq if pad2 < 0 else np.delete(uniq, pad2)
        values = np.empty((rows.shape[0], dout.shape[1]), dout.dtype)
        backward(dout, ids2, starts, ends, p, psw is not None, pad2, mean, slot, values, (rows.shape[0] + 15) // 16)
        return rows, values
    if out.size == 0:  # D == 0: nothing to write (and V may be huge)
        return out
    slot = np.arange(V, dtype=np.int64)
    backward(dout, flat, starts, ends, p, psw is not None, pad, mean, slot, out, (V + 15) // 16)
    return out


# ---------------------------------------------------------------------------- cpp
def _cpp_forward(weight, ids, offsets, psw, pad, mean, out):
    cpu = _backends.module("cpp")
    weight, ids = C.contiguous(weight), C.contiguous(ids)
    offsets = None if offsets is None else C.contiguous(offsets)
    psw = None if psw is None else C.contiguous(psw)
    status = cpu.embedding_bag_forward(weight, ids, offsets, psw, pad, mean, out)
    if status:
        C.raise_status(OP, status, ids, "ids", weight.shape[0], offsets)
    return out


def _cpp_backward(dout, ids, offsets, psw, pad, mean, out, V):
    cpu = _backends.module("cpp")
    dout, ids = C.contiguous(dout), C.contiguous(ids)
    offsets = None if offsets is None else C.contiguous(offsets)
    psw = None if psw is None else C.contiguous(psw)
    if out is not None:
        status = cpu.embedding_bag_backward_dense(dout, ids, offsets, psw, pad, mean, out)
        if status:
            C.raise_status(OPB, status, ids, "ids", V, offsets)
        return out
    uniq = None
    if not use_row_mark(V, ids.size):  # a huge table: renumber the ids, mark U rows only
        _validate_xp(OPB, ids, offsets, V)
        uniq, ids, pad, _ = renumber(ids, pad)
        V = uniq.shape[0]
    n = ids.size
    rows = scratch("rows", n + 1, np.int64)
    starts, ent_bag = scratch("starts", n + 1, np.int64), scratch("ent_bag", n, np.int64)
    ent_c = scratch("ent_c", n, dout.dtype)
    status, U = cpu.embedding_bag_backward_rows(ids, offsets, psw, pad, mean, row_mark(V), rows, starts, ent_bag, ent_c)
    if status:
        C.raise_status(OPB, status, ids, "ids", V, offsets)
    rows = rows[:U].copy()
    values = np.empty((U, dout.shape[1]), dout.dtype)
    cpu.embedding_bag_backward_values(dout, starts, ent_bag, ent_c, values)
    return (rows if uniq is None else uniq[rows]), values


# ---------------------------------------------------------------------------- cuda
# csrc/cuda/embedding_bag.cu.  Offsets and ids are checked on the device (error word, see
# ops/_cuda_util.py): the same ValueError / IndexError as the CPU, at the call by default.
def _cuda_args(ids, offsets, psw):
    ids = C.contiguous(ids)
    offsets = None if offsets is None else C.contiguous(offsets)
    psw = None if psw is None else C.contiguous(psw)
    Tlen = ids.shape[1] if offsets is None else 0
    osize = 0 if offsets is None else offsets.itemsize
    return ids, offsets, psw, Tlen, osize


def _cuda_raiser(op, ids, offsets, V):
    def raiser(kind, pos):
        from ._cuda_util import ERR_OFFSET

        if kind == ERR_OFFSET:
            C.raise_bad_offset(op, offsets, pos, ids.shape[0])
        C.raise_bad_id(op, "ids", ids, pos, V)

    return raiser


def _cuda_forward(weight, ids, offsets, psw, pad, mean, out):
    from . import _cuda_util as CU

    cu = _backends.module("cuda")
    weight = C.contiguous(weight)
    ids, offsets, psw, Tlen, osize = _cuda_args(ids, offsets, psw)
    V, D = weight.shape
    st, tag, s = CU.begin(_cuda_raiser(OP, ids, offsets, V))
    cu.embedding_bag_forward(weight.data.ptr, ids.data.ptr, CU.ptr(offsets), CU.ptr(psw), pad, mean, out.data.ptr,
                             V, D, out.shape[0], ids.size, Tlen, weight.itemsize, ids.itemsize, osize, st.err, tag, s)
    CU.finish(st)
    return out


def _cuda_backward(dout, ids, offsets, psw, pad, mean, out, V):
    """Dense: deterministic sort + segment reduction (FASTSCALE_CUDA_ATOMIC_BACKWARD=1: atomics).
    Sparse: the same sort gives the unique rows (CU.sparse_gradient: their count is read back,
    or stays on the device inside a training step)."""
    from . import _cuda_util as CU

    cu = _backends.module("cuda")
    dout = C.contiguous(dout)
    ids, offsets, psw, Tlen, osize = _cuda_args(ids, offsets, psw)
    B, D = dout.shape
    N = ids.size
    raiser = _cuda_raiser(OPB, ids, offsets, V)
    if out is not None:
        det = CU.deterministic()
        ws = CU.workspace(cu.embedding_bag_backward_workspace(N, B, V, dout.itemsize, False)) if det else None
        st, tag, s = CU.begin(raiser)
        cu.embedding_bag_backward_dense(
            dout.data.ptr, ids.data.ptr, CU.ptr(offsets), CU.ptr(psw), pad, mean, out.data.ptr, V, D, B, N, Tlen,
            dout.itemsize, ids.itemsize, osize, det, CU.ptr(ws), 0 if ws is None else ws.nbytes, st.err, tag, s,
        )
        CU.finish(st)
        return out
    Vk = min(V, CU.I64_MAX)  # sparse: V may exceed int64 (see embedding._cuda_backward)
    ws = CU.workspace(cu.embedding_bag_backward_workspace(N, B, Vk, dout.itemsize, True))
    st, tag, s = CU.begin(raiser)

    def launch_rows(rows, count):
        cu.embedding_bag_backward_rows(ids.data.ptr, CU.ptr(offsets), CU.ptr(psw), pad, mean, rows.data.ptr, count,
                                       Vk, B, N, Tlen, dout.itemsize, ids.itemsize, osize, ws.data.ptr, ws.nbytes,
                                       st.err, tag, s)

    def launch_values(values, U, count, err):
        cu.embedding_bag_backward_values(dout.data.ptr, CU.ptr(values), Vk, D, B, N, U, dout.itemsize, ws.data.ptr,
                                         ws.nbytes, count, err, s)

    return CU.sparse_gradient(st, launch_rows, launch_values, N, D, dout.dtype, V)


_IMPL = _backends.register(
    OP, cpp=_cpp_forward, numba=_numba_forward, numpy=_numpy_forward, cupy=_numpy_forward, cuda=_cuda_forward
)
_BACKWARD = _backends.register(
    OPB, cpp=_cpp_backward, numba=_numba_backward, numpy=_numpy_backward, cupy=_numpy_backward, cuda=_cuda_backward
)
