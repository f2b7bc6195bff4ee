"""Types shared by several ops."""
from __future__ import annotations

from typing import NamedTuple


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
