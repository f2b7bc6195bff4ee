"""Types shared by several ops."""
from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np


class SparseRows(NamedTuple):
    """A gradient that touches only some rows of a ``(V, D)`` table.

    ``rows``: int64 ``(R,)``, unique and sorted ascending; ``values``: ``(R, D)``, the gradient
    of each of those rows; ``num_embeddings``: V.  ``to_dense()`` gives the ``(V, D)`` array.
    """

    rows: object
    values: object
    num_embeddings: int

    def to_dense(self):
        xp = self.values.__array_namespace__() if hasattr(self.values, "__array_namespace__") else None
        import numpy as np

        xp = np if xp is None or xp.__name__.startswith("numpy") else xp
        out = xp.zeros((self.num_embeddings, self.values.shape[1]), dtype=self.values.dtype)
        out[self.rows] = self.values
        return out


class PendingRows:
    """A sparse gradient whose row count is still on the GPU: what the ``cuda`` sparse
    backwards return inside a training step (``deferred_checks``), where reading the count
    back would stall the step.

    ``buffers``: ``(rows, values, count)`` with ``rows`` int64 ``(N,)`` and ``values`` ``(N, D)``
    sized for every id, of which the leading ``count[0]`` (a device int64) are the gradient.
    :class:`fastscale.optim.Adam` with ``lazy=True`` (or ``ops.adam.sparse_adam_step_pending``)
    hands them to ``sparse_adam_step``'s kernel as they are; anything else reads it as the
    :class:`SparseRows` the op returns outside a training step (``resolve()``, ``rows``,
    ``values``, unpacking: one read-back, once).
    """

    __slots__ = ("buffers", "num_embeddings", "_check", "_resolved")

    def __init__(self, rows, values, count, num_embeddings, check):
        self.buffers = (rows, values, count)
        self.num_embeddings = num_embeddings
        self._check = check  # raises the producing call's pending input error, if any
        self._resolved = None

    def resolve(self) -> SparseRows:
        if self._resolved is None:
            self._check()  # a failed ids check leaves count meaningless: raise first
            rows, values, count = self.buffers
            U = int(count[0])
            self._resolved = SparseRows(rows[:U], values[:U], self.num_embeddings)
        return self._resolved

    # Read as a SparseRows (each resolves first), so code written for one keeps working.
    rows = property(lambda self: self.resolve().rows)
    values = property(lambda self: self.resolve().values)

    def __iter__(self):
        return iter(self.resolve())

    def to_dense(self):
        return self.resolve().to_dense()


# A zeroed int32 (V,) scratch per thread and V for the cpp sparse backwards: they mark the
# rows they meet there and clear exactly those again, so a step costs O(ids), not O(V).
_marks = threading.local()


def row_mark(V: int) -> np.ndarray:
    cache = getattr(_marks, "by_v", None)
    if cache is None:
        cache = _marks.by_v = {}
    m = cache.get(V)
    if m is None:
        if len(cache) > 4:
            cache.clear()
        m = cache[V] = np.zeros(V, np.int32)
    return m


def scratch(key: str, n: int, dtype) -> np.ndarray:
    """A per-thread, grow-only 1-D scratch buffer of at least n elements (uninitialised): the
    cpp sparse backwards plan into it every step instead of mapping fresh pages."""
    cache = getattr(_marks, "scratch", None)
    if cache is None:
        cache = _marks.scratch = {}
    dtype = np.dtype(dtype)
    a = cache.get((key, dtype))
    if a is None or a.shape[0] < n:
        a = cache[(key, dtype)] = np.empty(max(n, 1024), dtype)
    return a


# row_mark(V) costs 4 V bytes per thread; past this many rows, when the ids are far fewer, the
# cpp sparse backwards renumber the ids first (renumber()) and mark a table of U rows instead
# (a 2**40-row hashed vocabulary must not need a 4 TB scratch).
MARK_MAX_ROWS = 1 << 24


def use_row_mark(V: int, n_ids: int) -> bool:
    return V <= max(MARK_MAX_ROWS, 8 * n_ids)


def renumber(ids, pad: int = -1):
    """Sparse backwards without O(V) memory: the ids renumbered densely.

    Returns ``(uniq, ids2, pad2, slot)``: ``uniq`` the sorted unique ids (int64, ``pad``
    included when present), ``ids2`` = ids mapped to their position in ``uniq`` (int64, the
    shape of ``ids``), ``pad2`` = the position of ``pad`` in ``uniq`` or -1, and ``slot``
    (len(uniq),) the row of each position among the non-padding rows
    ``uniq[uniq != pad]`` (pad's own entry unused).  ids must already be validated.
    """
    uniq, inv = np.unique(ids.reshape(-1), return_inverse=True)
    uniq = uniq.astype(np.int64, copy=False)
    slot = np.arange(uniq.shape[0], dtype=np.int64)
    pad2 = -1
    if pad >= 0:
        q = int(np.searchsorted(uniq, pad))
        if q < uniq.shape[0] and uniq[q] == pad:
            pad2 = q
            slot[q + 1 :] -= 1
    return uniq, inv.reshape(ids.shape).astype(np.int64, copy=False), pad2, slot


def quiet(fn):
    """Run a numpy backend with floating-point warnings off: NaN / inf / overflow propagate
    silently, as on the cpp and numba backends (the fuzz suite found RuntimeWarnings)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with np.errstate(all="ignore"):
            return fn(*args, **kwargs)

    return wrapper
