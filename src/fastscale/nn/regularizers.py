"""Keras's weight regularizers: ``L1``, ``L2``, ``L1L2`` (``"l1"``, ``"l2"``, ``"l1_l2"``,
Keras's default factors 0.01).  A layer's ``kernel_regularizer`` / ``bias_regularizer`` /
``embeddings_regularizer`` adds ``penalty(w)`` to the training loss (and to the reported
loss, as Keras's regularization losses) and ``grad(w)`` to the weight's gradient.  An
embedding table's penalty covers every row, so its gradient becomes dense (as in Keras).
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks as C

__all__ = ["Regularizer", "L1", "L2", "L1L2", "get"]


def _factor(cls, name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{cls}: argument {name!r} must be a finite number >= 0, got {v!r}")
    return float(v)


class Regularizer:
    def __init__(self, l1=0.0, l2=0.0):
        self.l1 = _factor(type(self).__name__, "l1", l1)
        self.l2 = _factor(type(self).__name__, "l2", l2)

    def penalty(self, w):
        """``l1 * sum|w| + l2 * sum w**2``, accumulated in float64 (a 0-d array on a GPU)."""
        xp = C.module_of(w)
        p = 0.0
        if self.l1:
            p = p + self.l1 * xp.abs(w).sum(dtype=np.float64)
        if self.l2:
            p = p + self.l2 * (w * w).sum(dtype=np.float64)
        return p

    def grad(self, w):
        xp = C.module_of(w)
        g = xp.zeros_like(w)
        if self.l1:
            g += w.dtype.type(self.l1) * xp.sign(w)
        if self.l2:
            g += w.dtype.type(2 * self.l2) * w
        return g

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}

    def __eq__(self, other):
        return isinstance(other, Regularizer) and (self.l1, self.l2) == (other.l1, other.l2)

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


class L1L2(Regularizer):
    pass


class L1(Regularizer):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


def _l1_l2(l1=0.01, l2=0.01):
    return L1L2(l1, l2)


_BY_NAME = {"l1": L1, "l2": L2, "l1l2": L1L2, "l1_l2": _l1_l2}


def get(identifier):
    """None, a Regularizer, a name ("l1", "l2", "l1_l2") or ``{"class_name", "config"}``."""
    if identifier is None:
        return None
    return C.from_identifier("regularizer", identifier, Regularizer, _BY_NAME)

