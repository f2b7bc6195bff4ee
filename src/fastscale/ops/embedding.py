"""embedding: row lookup, ``weight (V, D)`` and ``ids`` of any shape -> ``ids.shape + (D,)``.

``embedding(weight, ids)`` is ``weight[ids]``; its gradient with respect to ``weight`` adds
each ``dout`` row into the row of its id (repeated ids accumulate).  The gradient comes
dense ``(V, D)`` (optionally written into a reused ``out``) or as :class:`SparseRows` with
the unique sorted rows the ids touched.

Backends: ``cpp`` (csrc/cpu/embedding.cpp), ``numba`` and ``numpy`` (below; the numpy code
also serves cupy).  The module reads top-down: public functions with every check,
``reference()``, then the backends.
"""
from __future__ import annotations

import numpy as np

from .. import _backends, _checks as C
from ._common import PendingRows, SparseRows, quiet, renumber, row_mark, use_row_mark

OP = "embedding"
OPB = "embedding_backward"


# ---------------------------------------------------------------------------- public API
def embedding(weight, ids, *, backend=None):
    """Rows of ``weight`` by id: ``(V, D)`` table, int32/int64 ``ids`` of any shape ->
    ``ids.shape + (D,)`` of weight's dtype.  An id outside ``[0, V)`` is an IndexError."""
    is_cupy = C.array_kind(OP, weight=weight, ids=ids)
    C.check_float(OP, "weight", weight, ndim=2)
    C.check_index(OP, "ids", ids)
    _, impl = _IMPL.pick(backend, is_cupy)
    xp = C.xp_of(is_cupy)
    out = xp.empty(tuple(ids.shape) + (weight.shape[1],), dtype=weight.dtype)
    impl(weight, ids, out)
    return out


def embedding_backward(dout, ids, num_embeddings, *, sparse=False, out=None, backend=None):
    """Gradient of :func:`embedding` with respect to ``weight``.

    ``dout`` has shape ``ids.shape + (D,)``.  ``sparse=False``: a dense ``(num_embeddings, D)``
    array, written into ``out`` when given (so a training loop can reuse one buffer).
    ``sparse=True``: :class:`SparseRows` with the unique sorted int64 rows and their summed
    gradients.
    """
    is_cupy = C.array_kind(OPB, dout=dout, ids=ids, out=out)
    C.check_float(OPB, "dout", dout)
    C.check_index(OPB, "ids", ids)
    V = C.scalar(OPB, "num_embeddings", num_embeddings, lo=0, integer=True)
    C.check_ndim(OPB, "dout", dout, ids.ndim + 1)
    D = dout.shape[-1]
    C.check_shape(OPB, "dout", dout, tuple(ids.shape) + (D,), f"ids.shape {tuple(ids.shape)} + (D,)")
    if not isinstance(sparse, bool):
        raise TypeError(f"{OPB}: argument 'sparse' must be a bool, got {type(sparse).__name__}")
    _, impl = _BACKWARD.pick(backend, is_cupy)
    xp = C.xp_of(is_cupy)
    if sparse:
        if out is not None:
            raise ValueError(f"{OPB}: 'out' is for the dense gradient; it cannot be used with sparse=True")
        g = impl(dout, ids, None, V)
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
    impl(dout, ids, out, V)
    return out


# ---------------------------------------------------------------------------- reference
def reference(weight, ids):
    """Loops in float64, written to be read."""
    weight = np.asarray(weight, dtype=np.float64)
    ids = np.asarray(ids)
    out = np.zeros(ids.shape + (weight.shape[1],))
    for pos in np.ndindex(*ids.shape):
        out[pos] = weight[ids[pos]]
    return out


def reference_backward(dout, ids, num_embeddings):
    """d(sum(dout * embedding(weight, ids)))/dweight, loops in float64."""
    dout = np.asarray(dout, dtype=np.float64)
    ids = np.asarray(ids)
    grad = np.zeros((num_embeddings, dout.shape[-1]))
    for pos in np.ndindex(*ids.shape):
        grad[ids[pos]] += dout[pos]
    return grad


# ---------------------------------------------------------------------------- numpy / cupy
def _xp(a):
    return np if isinstance(a, np.ndarray) else C.xp_of(True)


def _numpy_forward(weight, ids, out):
    xp = _xp(weight)
    C.check_ids_range(OP, "ids", ids, weight.shape[0])
    flat = ids.reshape(-1)
    out2 = out.reshape(flat.shape[0], weight.shape[1])
    if xp is np:
        # mode="clip" skips numpy's buffered bounds check; the ids were checked above.
        np.take(weight, flat, axis=0, out=out2, mode="clip")
    else:
        xp.take(weight, flat, axis=0, out=out2)
    return out


def _scatter_add_rows(xp, out, idx, values):
    """out[idx[k]] += values[k] for every k, repeated idx accumulating."""
    if xp is not np:
        xp.add.at(out, idx, values)  # (ndarray.scatter_add: deprecated since CuPy 10; add.at since 12)
        return
    # numpy's add.at has a fast path for 1-D operands only: on (N, D) rows it is ~2.4x
    # slower than adding element by element into the flattened table (measured N=17k,
    # D=128; add.reduceat over sorted rows was no faster).  Chunked to bound the index temp.
    D = out.shape[1]
    flat_out, cols = out.reshape(-1), np.arange(D)
    step = max(1, (1 << 20) // max(1, D))
    for s in range(0, idx.shape[0], step):
        np.add.at(flat_out, (idx[s : s + step, None] * D + cols).reshape(-1), values[s : s + step].reshape(-1))


@quiet
def _numpy_backward(dout, ids, out, V):
    xp = _xp(dout)
    C.check_ids_range(OPB, "ids", ids, V)
    flat = ids.reshape(-1).astype(xp.int64, copy=False)  # idx * D in 64 bits
    d2 = dout.reshape(flat.shape[0], dout.shape[-1])
    if out is None:  # sparse
        rows, inverse = xp.unique(flat, return_inverse=True)
        values = xp.zeros((rows.shape[0], d2.shape[1]), dout.dtype)
        _scatter_add_rows(xp, values, inverse.reshape(-1).astype(xp.int64, copy=False), d2)
        return rows.astype(xp.int64), values
    out[...] = 0
    _scatter_add_rows(xp, out, flat, d2)
    return out


# ---------------------------------------------------------------------------- numba
def _make_numba():
    import numba

    @numba.njit(cache=True, parallel=True, nogil=True)
    def forward(weight, ids, out):
        D = weight.shape[1]
        for i in numba.prange(ids.shape[0]):
            r = ids[i]
            for j in range(D):
                out[i, j] = weight[r, j]

    @numba.njit(cache=True, parallel=True, nogil=True)
    def backward(dout, ids, slot, grad, nparts):
        # Part p owns the 16-row blocks with (row >> 4) % nparts == p and adds into them in
        # position order: race-free, the same sums for any thread count, and each part
        # scans the ids once (not once per block).
        D = dout.shape[1]
        R = grad.shape[0]
        for p in numba.prange(nparts):
            for r in range(R):
                if (r >> 4) % nparts == p:
                    grad[r, :] = 0
            for i in range(ids.shape[0]):
                r = slot[ids[i]]
                if (r >> 4) % nparts != p:
                    continue
                for j in range(D):
                    grad[r, j] += dout[i, j]

    return forward, backward


_numba_fns = _backends.once(_make_numba)


def _numba_forward(weight, ids, out):
    C.check_ids_range(OP, "ids", ids, weight.shape[0])
    forward, _ = _numba_fns()
    flat = C.contiguous(ids).reshape(-1)
    forward(C.contiguous(weight), flat, out.reshape(flat.shape[0], weight.shape[1]))
    return out


def _numba_backward(dout, ids, out, V):
    C.check_ids_range(OPB, "ids", ids, V)
    _, backward = _numba_fns()
    flat = C.contiguous(ids).reshape(-1)
    d2 = C.contiguous(dout).reshape(flat.shape[0], dout.shape[-1])
    if out is None:  # sparse: ids renumbered densely (no O(V) memory), the same kernel
        rows, ids2, _, slot = renumber(flat)
        values = np.empty((rows.shape[0], d2.shape[1]), dout.dtype)
        backward(d2, ids2, slot, values, _numba_parts())
        return rows, values
    if out.size == 0:  # D == 0: nothing to write (and V may be huge)
        return out
    backward(d2, flat, np.arange(V, dtype=np.int64), out, _numba_parts())
    return out


def _numba_parts():
    import numba

    return numba.get_num_threads()


# ---------------------------------------------------------------------------- cpp
def _cpp_forward(weight, ids, out):
    cpu = _backends.module("cpp")
    weight, ids = C.contiguous(weight), C.contiguous(ids)
    status = cpu.embedding_forward(weight, ids, out.reshape(ids.size, weight.shape[1]))
    if status:
        C.raise_status(OP, status, ids, "ids", weight.shape[0])
    return out


def _cpp_backward(dout, ids, out, V):
    cpu = _backends.module("cpp")
    dout, ids = C.contiguous(dout), C.contiguous(ids)
    d2 = dout.reshape(ids.size, dout.shape[-1])
    if out is not None:
        status = cpu.embedding_backward_dense(d2, ids, out)
        if status:
            C.raise_status(OPB, status, ids, "ids", V)
        return out
    uniq = None
    if not use_row_mark(V, ids.size):  # a huge table: renumber the ids, mark U rows only
        C.check_ids_range(OPB, "ids", ids, V)
        uniq, ids, _, _ = renumber(ids)
        V = uniq.shape[0]
    mark = row_mark(V)
    rows = np.empty(ids.size, np.int64)
    status, U = cpu.embedding_backward_rows(ids, mark, rows)
    if status:
        C.raise_status(OPB, status, ids, "ids", V)
    rows = rows[:U]
    try:
        values = np.empty((U, d2.shape[1]), dout.dtype)
        cpu.embedding_backward_values(d2, ids, mark, rows, values)
    except BaseException:
        mark[rows] = 0
        raise
    return (rows if uniq is None else uniq[rows]), values


# ---------------------------------------------------------------------------- cuda
# csrc/cuda/embedding.cu.  Bad ids are found on the device (error word, see
# ops/_cuda_util.py) and raise the same IndexError as the CPU, at the call by default.
def _cuda_forward(weight, ids, out):
    from . import _cuda_util as CU

    cu = _backends.module("cuda")
    weight, ids = C.contiguous(weight), C.contiguous(ids)
    V, D = weight.shape
    st, tag, s = CU.begin(lambda kind, pos: C.raise_bad_id(OP, "ids", ids, pos, V))
    cu.embedding_forward(weight.data.ptr, ids.data.ptr, out.data.ptr, V, D, ids.size, weight.itemsize, ids.itemsize,
                         st.err, tag, s)
    CU.finish(st)
    return out


def _cuda_backward(dout, ids, out, V):
    """Dense: deterministic sort + segment reduction (FASTSCALE_CUDA_ATOMIC_BACKWARD=1: atomics).
    Sparse: the same sort gives the unique rows (CU.sparse_gradient: their count is read back,
    or stays on the device inside a training step)."""
    from . import _cuda_util as CU

    cu = _backends.module("cuda")
    dout, ids = C.contiguous(dout), C.contiguous(ids)
    N, D = ids.size, dout.shape[-1]

    def raiser(kind, pos):
        C.raise_bad_id(OPB, "ids", ids, pos, V)

    if out is not None:
        det = CU.deterministic()
        ws = CU.workspace(cu.embedding_backward_workspace(N, V, dout.itemsize, False)) if det else None
        st, tag, s = CU.begin(raiser)
        cu.embedding_backward_dense(dout.data.ptr, ids.data.ptr, out.data.ptr, V, D, N, dout.itemsize, ids.itemsize,
                                    det, CU.ptr(ws), 0 if ws is None else ws.nbytes, st.err, tag, s)
        CU.finish(st)
        return out
    # A sparse gradient has no (V, D) array, so V may exceed int64 (the launchers' type): any
    # int64 id is below it, as below 2**63 - 1.
    Vk = min(V, CU.I64_MAX)  # (V itself stays in the error message)
    ws = CU.workspace(cu.embedding_backward_workspace(N, Vk, dout.itemsize, True))
    st, tag, s = CU.begin(raiser)

    def launch_rows(rows, count):
        cu.embedding_backward_rows(ids.data.ptr, rows.data.ptr, count, Vk, N, ids.itemsize, ws.data.ptr, ws.nbytes,
                                   st.err, tag, s)

    def launch_values(values, U, count, err):
        cu.embedding_backward_values(dout.data.ptr, CU.ptr(values), Vk, D, N, U, dout.itemsize, ws.data.ptr,
                                     ws.nbytes, count, err, s)

    return CU.sparse_gradient(st, launch_rows, launch_values, N, D, dout.dtype, V)


_IMPL = _backends.register(
    OP, cpp=_cpp_forward, numba=_numba_forward, numpy=_numpy_forward, cupy=_numpy_forward, cuda=_cuda_forward
)
_BACKWARD = _backends.register(
    OPB, cpp=_cpp_backward, numba=_numba_backward, numpy=_numpy_backward, cupy=_numpy_backward, cuda=_cuda_backward
)
