"""Metrics accumulated over an epoch: accuracy (binary, categorical or sparse categorical),
AUC, and the mean squared / absolute error.

A metric sees every batch's targets and probabilities (``update``) and gives one number for
the epoch (``result``).  ``"accuracy"`` resolves, as in Keras, to sparse categorical accuracy
(argmax) under sparse_categorical_crossentropy, to categorical accuracy (argmax of both)
under categorical_crossentropy, and to binary accuracy (threshold 0.5) otherwise.  AUC is the exact ROC AUC (Mann-Whitney, ties counted
half) over the epoch's predictions, macro-averaged one-vs-rest for several classes; Keras
approximates the same quantity with 200 thresholds.

Metrics accumulate in the array module of the probabilities: on a GPU the counts stay on the
device (no read-back per batch) and ``result`` reads them once; AUC keeps the epoch's
predictions on the device and ranks them on the host once, in ``result``.
"""
from __future__ import annotations

import numpy as np

from . import _device
from . import losses as _losses


class Metric:
    name = "metric"

    def reset(self):
        raise NotImplementedError

    def update(self, y_true, probs):
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError


class BinaryAccuracy(Metric):
    def __init__(self, name="accuracy", threshold=0.5):
        self.name, self.threshold = name, threshold
        self.reset()

    def reset(self):
        self.correct = 0
        self.total = 0

    def update(self, y_true, probs):
        xp = _device.module_of(probs)
        y = _device.as_module(y_true, xp).reshape(probs.shape)
        self.correct = self.correct + xp.count_nonzero((probs > self.threshold) == (y > 0.5))  # on the device
        self.total += probs.size

    def result(self):
        return int(self.correct) / self.total if self.total else 0.0


class SparseCategoricalAccuracy(BinaryAccuracy):
    def update(self, y_true, probs):
        xp = _device.module_of(probs)
        y = _device.as_module(y_true, xp).reshape(-1)
        self.correct = self.correct + xp.count_nonzero(probs.argmax(axis=1) == y)
        self.total += y.shape[0]


class CategoricalAccuracy(BinaryAccuracy):
    def update(self, y_true, probs):
        xp = _device.module_of(probs)
        y = _device.as_module(y_true, xp).reshape(probs.shape)
        self.correct = self.correct + xp.count_nonzero(probs.argmax(axis=1) == y.argmax(axis=1))
        self.total += probs.shape[0]


class _MeanError(Metric):
    """The mean over every output of the matching loss's pointwise ``error``."""

    def __init__(self, name):
        self.name = name
        self.reset()

    def reset(self):
        self.sum = 0.0
        self.total = 0

    def update(self, y_true, probs):
        xp = _device.module_of(probs)
        diff = probs - _device.as_module(y_true, xp).reshape(probs.shape)
        self.sum = self.sum + self.error(xp, diff).sum(dtype=np.float64)  # on the device
        self.total += probs.size

    def result(self):
        return float(self.sum) / self.total if self.total else 0.0


class MeanSquaredError(_MeanError):
    error = staticmethod(_losses.MeanSquaredError.error)


class MeanAbsoluteError(_MeanError):
    error = staticmethod(_losses.MeanAbsoluteError.error)


class AUC(Metric):
    def __init__(self, name="auc"):
        self.name = name
        self.reset()

    def reset(self):
        self._y, self._p = [], []

    def update(self, y_true, probs):
        y = _device.as_module(y_true, _device.module_of(probs))
        probs = probs.reshape(probs.shape[0], -1)
        # One-hot targets (categorical_crossentropy) are kept as rows; class indices or 0/1 as a column.
        self._y.append(y.reshape(probs.shape) if y.size == probs.size and probs.shape[1] > 1 else y.reshape(-1, 1))
        self._p.append(probs)

    def result(self):
        if not self._p:
            return 0.0
        xp = _device.module_of(self._p[0])
        p = _device.to_host(xp.concatenate(self._p))  # one read-back per epoch on a GPU
        y = _device.to_host(xp.concatenate(self._y))
        if p.shape[1] == 1:
            return roc_auc(y.reshape(-1) > 0.5, p.reshape(-1))
        pos = y > 0.5 if y.shape[1] > 1 else y.astype(np.int64) == np.arange(p.shape[1])  # (n, classes)
        scores = [roc_auc(pos[:, k], p[:, k]) for k in range(p.shape[1]) if 0 < np.count_nonzero(pos[:, k]) < y.shape[0]]
        return float(np.mean(scores)) if scores else 0.0


def roc_auc(positive, scores) -> float:
    """Exact ROC AUC from ranks; 0.0 when only one class is present (undefined)."""
    positive = np.asarray(positive, bool)
    n_pos = int(np.count_nonzero(positive))
    n_neg = positive.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.0
    order = np.argsort(scores, kind="mergesort")
    s = np.asarray(scores, np.float64)[order]
    ranks = np.empty(s.shape[0], np.float64)
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [s.shape[0]]])
    avg = (starts + ends + 1) / 2.0  # 1-based mean rank of each tie group
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))



_BY_NAME = {
    "binary_accuracy": BinaryAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "auc": AUC,
    "mean_squared_error": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
}
_ALIASES = {"AUC": "auc", "mse": "mean_squared_error", "mae": "mean_absolute_error"}
NAMES = ("accuracy", "acc", *_BY_NAME, *_ALIASES)  # what get() and save_model take


def get(identifier, loss_name: str) -> Metric:
    if isinstance(identifier, Metric):
        return identifier
    if identifier in ("accuracy", "acc"):
        cls = {"sparse_categorical_crossentropy": SparseCategoricalAccuracy,
               "categorical_crossentropy": CategoricalAccuracy}.get(loss_name, BinaryAccuracy)
        return cls("accuracy")
    if isinstance(identifier, str) and (identifier in _BY_NAME or identifier in _ALIASES):
        name = _ALIASES.get(identifier, identifier)
        return _BY_NAME[name](name)
    raise ValueError(f"metrics: unknown metric {identifier!r}; expected one of {sorted(NAMES)} or a Metric instance")
