"""Losses: binary and sparse categorical cross-entropy, computed stably from the logit.

When the model's last layer is ``Dense(..., activation="sigmoid")`` (or ``"softmax"``) and
the loss is the matching cross-entropy with ``from_logits=False`` (Keras's default),
``Sequential`` asks that layer for its logit and the loss works from the logit:
``fastscale.bce_with_logits`` for the binary case, a log-softmax in NumPy for the
multi-class one.  The model's outputs (``predict``) are still probabilities.  Any other
output (``from_logits=False`` on a layer that is not the matching activation) is treated as a
probability, clipped to ``[1e-7, 1 - 1e-7]`` as Keras does.

``loss(y_true, output, logits)`` returns ``(mean loss as a float, d loss / d output)``.
"""
from __future__ import annotations

import numpy as np

from .. import ops

EPSILON = 1e-7  # Keras's backend epsilon, used to clip probabilities


class Loss:
    name = "loss"
    head_activation = None  # the output activation whose logit the loss can use directly

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def get_config(self):
        return {"from_logits": self.from_logits}

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"
    head_activation = "sigmoid"

    def __call__(self, y_true, output, logits, backend=None):
        y = _targets(y_true, output, "binary_crossentropy")
        if logits:
            loss, dz = ops.bce_with_logits(output.reshape(-1), y.reshape(-1), backend=backend)
            return float(loss), dz.reshape(output.shape)
        p = output
        eps = p.dtype.type(EPSILON)
        pc = np.clip(p, eps, 1 - eps)
        loss = -np.mean(y * np.log(pc) + (1 - y) * np.log1p(-pc), dtype=np.float64)
        inside = (p > eps) & (p < 1 - eps)  # the clip has zero gradient outside
        dp = ((pc - y) / (pc * (1 - pc))) * inside / p.dtype.type(p.size)
        return float(loss), dp.astype(p.dtype, copy=False)

    @staticmethod
    def probabilities(logits):
        return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(logits.dtype, copy=False)  # overflow-free sigmoid


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"
    head_activation = "softmax"

    def __call__(self, y_true, output, logits, backend=None):
        if output.ndim != 2:
            raise ValueError(f"sparse_categorical_crossentropy: expects outputs of shape (B, classes), got {output.shape}")
        B, K = output.shape
        y = np.asarray(y_true).reshape(-1)
        if y.shape[0] != B:
            raise ValueError(f"sparse_categorical_crossentropy: {y.shape[0]} labels for {B} outputs")
        if not np.issubdtype(y.dtype, np.integer):
            if not np.all(np.mod(y, 1) == 0):
                raise ValueError("sparse_categorical_crossentropy: labels must be integer class indices")
            y = y.astype(np.int64)
        if B and (y.min() < 0 or y.max() >= K):
            raise ValueError(f"sparse_categorical_crossentropy: labels must be in [0, {K}), got range [{y.min()}, {y.max()}]")
        rows = np.arange(B)
        if logits:
            z = output - output.max(axis=1, keepdims=True)
            lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
            logp = z - lse
            loss = -np.mean(logp[rows, y], dtype=np.float64) if B else 0.0
            d = np.exp(logp)
            d[rows, y] -= 1
            d /= d.dtype.type(max(B, 1))
            return float(loss), d.astype(output.dtype, copy=False)
        eps = output.dtype.type(EPSILON)
        pc = np.clip(output, eps, 1 - eps)
        py = pc[rows, y]
        loss = -np.mean(np.log(py), dtype=np.float64) if B else 0.0
        d = np.zeros_like(output)
        inside = (output[rows, y] > eps) & (output[rows, y] < 1 - eps)
        d[rows, y] = -inside / (py * output.dtype.type(max(B, 1)))
        return float(loss), d

    @staticmethod
    def probabilities(logits):
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


def _targets(y_true, output, name):
    y = np.asarray(y_true)
    if y.size != output.size:
        raise ValueError(f"{name}: targets of shape {y.shape} do not match outputs of shape {output.shape}")
    return y.reshape(output.shape).astype(output.dtype, copy=False)


_BY_NAME = {
    "binary_crossentropy": BinaryCrossentropy,
    "bce": BinaryCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
}


def get(identifier) -> Loss:
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str) and identifier in _BY_NAME:
        return _BY_NAME[identifier]()
    if isinstance(identifier, dict) and identifier.get("class_name") in {c.__name__ for c in _BY_NAME.values()}:
        cls = {c.__name__: c for c in _BY_NAME.values()}[identifier["class_name"]]
        return cls(**identifier.get("config", {}))
    raise ValueError(f"loss: unknown loss {identifier!r}; expected one of {sorted(_BY_NAME)} or a Loss instance")
