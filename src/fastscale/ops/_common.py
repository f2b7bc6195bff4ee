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
