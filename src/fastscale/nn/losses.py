"""Losses: binary, categorical and sparse categorical cross-entropy, computed stably from
the logit, and the mean squared / absolute errors.

When the model's last layer is ``Dense(..., activation="sigmoid")`` (or ``"softmax"``) and
the loss is the matching cross-entropy with ``from_logits=False`` (Keras's default),
``Sequential`` asks that layer for its logit and the loss works from the logit:
``fastscale.bce_with_logits`` for the binary case, a log-softmax in NumPy for the
multi-class one.  The model's outputs (``predict``) are still probabilities.  Any other
output (``from_logits=False`` on a layer that is not the matching activation) is treated as a
probability, clipped to ``[1e-7, 1 - 1e-7]`` as Keras does.

``loss(y_true, output, logits)`` returns ``(mean loss, d loss / d output)``: the loss is a
Python float for NumPy outputs and a 0-d float64 CuPy array for CuPy outputs, so a training
step on the GPU never waits for the device to read it (``float()`` it when you need it).
On CuPy the binary cross-entropy from the logit is the same formula as
``fastscale.bce_with_logits``'s numpy/cupy code, evaluated without the op's read-back of the
loss and of its target check; ``check_targets`` validates all the targets of a ``fit`` once,
up front, and ``checked=True`` then skips the per-batch value checks.
"""
from __future__ import annotations

import numpy as np

from .. import ops
from . import _device

EPSILON = 1e-7  # Keras's backend epsilon, used to clip probabilities


class Loss:
    name = "loss"
    head_activation = None  # the output activation whose logit the loss can use directly

    def __init__(self, from_logits=False):
        self.from_logits = bool(from_logits)

    def get_config(self):
        return {"from_logits": self.from_logits}

    def check_targets(self, y_true, units):
        """Raise ValueError for targets this loss cannot take (all of a fit's targets at once)."""

    def weighted(self, y_true, output, logits, weights, backend=None, checked=False):
        """``__call__`` with per-sample weights ``(B,)``, as Keras reduces them: the mean over the
        batch of ``weight * loss`` (not divided by the weights' sum); each sample's gradient
        scaled by its weight."""
        _, d = self(y_true, output, logits, backend=backend, checked=checked)
        xp = _device.module_of(output)
        w = _device.as_module(weights, xp)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging run is reported by fit
            l = self.per_sample(_device.as_module(y_true, xp), output, logits)
        loss = (w * l).mean() if l.size else 0.0
        return _host_float(loss), d * w.astype(d.dtype, copy=False).reshape((-1,) + (1,) * (d.ndim - 1))

    def __repr__(self):
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class BinaryCrossentropy(Loss):
    name = "binary_crossentropy"
    head_activation = "sigmoid"

    def __call__(self, y_true, output, logits, backend=None, checked=False):
        y = _targets(y_true, output, "binary_crossentropy")
        xp = _device.module_of(output)
        if logits:
            if xp is not np:
                if not checked:
                    self.check_targets(y, 1)
                loss, dz = bce_logits_xp(xp, output.reshape(-1), y.reshape(-1))
                return loss, dz.reshape(output.shape)
            loss, dz = ops.bce_with_logits(output.reshape(-1), y.reshape(-1), backend=backend)
            return float(loss), dz.reshape(output.shape)
        p = output
        eps = p.dtype.type(EPSILON)
        pc = xp.clip(p, eps, 1 - eps)
        loss = -(y * xp.log(pc) + (1 - y) * xp.log1p(-pc)).mean(dtype=np.float64)
        inside = (p > eps) & (p < 1 - eps)  # the clip has zero gradient outside
        dp = ((pc - y) / (pc * (1 - pc))) * inside / p.dtype.type(p.size)
        return _host_float(loss), dp.astype(p.dtype, copy=False)

    def per_sample(self, y_true, output, logits):
        """Each sample's loss (float64, mean over its outputs), as ``__call__`` averages it."""
        xp = _device.module_of(output)
        y = y_true.reshape(output.shape).astype(np.float64)
        o = output.astype(np.float64)
        if logits:
            l = xp.maximum(o, 0) - o * y + xp.log1p(xp.exp(-xp.abs(o)))
        else:
            pc = xp.clip(o, EPSILON, 1 - EPSILON)
            l = -(y * xp.log(pc) + (1 - y) * xp.log1p(-pc))
        return l.reshape(l.shape[0], -1).mean(axis=1)

    def check_targets(self, y_true, units):
        y = y_true
        if y.size and not (float(y.min()) >= 0.0 and float(y.max()) <= 1.0):  # NaN fails both
            raise ValueError(f"binary_crossentropy: targets must have values in [0, 1], got the range "
                             f"[{float(y.min())}, {float(y.max())}]")

    @staticmethod
    def probabilities(logits):
        xp = _device.module_of(logits)
        return (0.5 * (1.0 + xp.tanh(0.5 * logits))).astype(logits.dtype, copy=False)  # overflow-free sigmoid


class SparseCategoricalCrossentropy(Loss):
    name = "sparse_categorical_crossentropy"
    head_activation = "softmax"

    def __call__(self, y_true, output, logits, backend=None, checked=False):
        if output.ndim != 2:
            raise ValueError(f"sparse_categorical_crossentropy: expects outputs of shape (B, classes), got {output.shape}")
        B, K = output.shape
        xp = _device.module_of(output)
        y = _device.as_module(y_true, xp).reshape(-1)
        if y.shape[0] != B:
            raise ValueError(f"sparse_categorical_crossentropy: {y.shape[0]} labels for {B} outputs")
        if not checked:
            self.check_targets(y, K)
        if not np.issubdtype(y.dtype, np.integer):
            y = y.astype(np.int64)
        rows = xp.arange(B)
        if logits:
            logp = _log_softmax(output)
            loss = -logp[rows, y].mean(dtype=np.float64) if B else 0.0
            d = xp.exp(logp)
            d[rows, y] -= 1
            d /= d.dtype.type(max(B, 1))
            return _host_float(loss), d.astype(output.dtype, copy=False)
        eps = output.dtype.type(EPSILON)
        pc = xp.clip(output, eps, 1 - eps)
        py = pc[rows, y]
        loss = -xp.log(py).mean(dtype=np.float64) if B else 0.0
        d = xp.zeros_like(output)
        inside = (output[rows, y] > eps) & (output[rows, y] < 1 - eps)
        d[rows, y] = -inside / (py * output.dtype.type(max(B, 1)))
        return _host_float(loss), d

    def per_sample(self, y_true, output, logits):
        xp = _device.module_of(output)
        y = y_true.reshape(-1).astype(np.int64)
        o = output.astype(np.float64)
        rows = xp.arange(o.shape[0])
        if logits:
            return -_log_softmax(o)[rows, y]
        return -xp.log(xp.clip(o[rows, y], EPSILON, 1 - EPSILON))

    def check_targets(self, y_true, units):
        y = y_true.reshape(-1)
        xp = _device.module_of(y)
        if not np.issubdtype(y.dtype, np.integer):
            if not bool(xp.all(xp.mod(y, 1) == 0)):
                raise ValueError("sparse_categorical_crossentropy: labels must be integer class indices")
            y = y.astype(np.int64)
        if y.size and (y.min() < 0 or y.max() >= units):
            raise ValueError(f"sparse_categorical_crossentropy: labels must be in [0, {units}), got range [{y.min()}, {y.max()}]")

    @staticmethod
    def probabilities(logits):
        e = _device.module_of(logits).exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot (or probability) targets of shape ``(B, classes)``."""

    name = "categorical_crossentropy"
    head_activation = "softmax"

    def __call__(self, y_true, output, logits, backend=None, checked=False):
        if output.ndim != 2:
            raise ValueError(f"categorical_crossentropy: expects outputs of shape (B, classes), got {output.shape}")
        xp = _device.module_of(output)
        y = _device.as_module(y_true, xp)
        if y.shape != output.shape:
            raise ValueError(f"categorical_crossentropy: targets of shape {y.shape} do not match outputs of shape "
                             f"{output.shape} (one-hot rows; use sparse_categorical_crossentropy for class indices)")
        if not checked:
            self.check_targets(y, output.shape[1])
        y = y.astype(output.dtype, copy=False)
        n = output.dtype.type(max(output.shape[0], 1))
        if logits:
            logp = _log_softmax(output)
            loss = -(y * logp).sum(axis=1, dtype=np.float64).mean() if output.shape[0] else 0.0
            d = (xp.exp(logp) * y.sum(axis=1, keepdims=True) - y) / n
            return _host_float(loss), d
        # Keras: the outputs are first scaled to sum to 1 per row, then clipped.
        s = output.sum(axis=1, keepdims=True)
        p = output / s
        eps = output.dtype.type(EPSILON)
        pc = xp.clip(p, eps, 1 - eps)
        loss = -(y * xp.log(pc)).sum(axis=1, dtype=np.float64).mean() if output.shape[0] else 0.0
        g = -y / pc * ((p > eps) & (p < 1 - eps))  # d loss / d p; the clip has zero gradient outside
        d = (g - (g * p).sum(axis=1, keepdims=True)) / (s * n)  # through p = output / sum(output)
        return _host_float(loss), d.astype(output.dtype, copy=False)

    def per_sample(self, y_true, output, logits):
        xp = _device.module_of(output)
        y = y_true.astype(np.float64)
        o = output.astype(np.float64)
        if logits:
            return -(y * _log_softmax(o)).sum(axis=1)
        return -(y * xp.log(xp.clip(o / o.sum(axis=1, keepdims=True), EPSILON, 1 - EPSILON))).sum(axis=1)

    def check_targets(self, y_true, units):
        y = y_true
        if y.ndim != 2 or y.shape[1] != units:
            raise ValueError(f"categorical_crossentropy: targets must be one-hot rows of shape (B, {units}), got shape "
                             f"{y.shape} (use sparse_categorical_crossentropy for class indices)")
        if y.size and not (float(y.min()) >= 0.0 and float(y.max()) <= 1.0):  # NaN fails both
            raise ValueError(f"categorical_crossentropy: targets must have values in [0, 1], got the range "
                             f"[{float(y.min())}, {float(y.max())}]")

    probabilities = staticmethod(SparseCategoricalCrossentropy.probabilities)


class _Regression(Loss):
    """Mean over every output of a pointwise error; the outputs are used as they are."""

    head_activation = None  # never works from a logit

    def __init__(self):
        super().__init__(from_logits=False)

    def get_config(self):
        return {}

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __call__(self, y_true, output, logits, backend=None, checked=False):
        y = _targets(y_true, output, self.name)
        if not checked:
            self.check_targets(y, None)
        xp = _device.module_of(output)
        diff = output - y
        loss = self.error(xp, diff).mean(dtype=np.float64) if output.size else 0.0
        return _host_float(loss), self._slope(xp, diff) / output.dtype.type(max(output.size, 1))

    def per_sample(self, y_true, output, logits):
        diff = output.astype(np.float64) - y_true.reshape(output.shape)
        l = self.error(_device.module_of(output), diff)
        return l.reshape(l.shape[0], -1).mean(axis=1)

    def check_targets(self, y_true, units):
        xp = _device.module_of(y_true)
        if y_true.size and not bool(xp.isfinite(y_true).all()):
            raise ValueError(f"{self.name}: targets must be finite, got {int((~xp.isfinite(y_true)).sum())} non-finite")


class MeanSquaredError(_Regression):
    name = "mean_squared_error"

    @staticmethod
    def error(xp, diff):
        """The pointwise error of ``output - target`` (the mse metric sums it too)."""
        return diff * diff

    @staticmethod
    def _slope(xp, diff):
        return 2 * diff


class MeanAbsoluteError(_Regression):
    name = "mean_absolute_error"

    @staticmethod
    def error(xp, diff):
        return xp.abs(diff)

    @staticmethod
    def _slope(xp, diff):
        return xp.sign(diff)


def bce_logits_xp(xp, z, y):
    """``(mean loss as a 0-d float64 array, dlogits)``: ``fastscale.bce_with_logits``'s
    numpy/cupy formula for 1-D logits and checked targets, with the loss left in ``xp`` (no
    read-back on a GPU)."""
    with np.errstate(all="ignore"):  # numpy (tests): a diverging run is reported by fit, once
        e = xp.exp(-xp.abs(z))
        n = z.size
        loss = (xp.maximum(z, 0) - z * y + xp.log1p(e)).sum(dtype=np.float64) / n
        dz = (xp.where(z >= 0, 1 / (1 + e), e / (1 + e)) - y) / z.dtype.type(n)
    return loss, dz


def _log_softmax(z):
    """Row-wise log-softmax of ``(B, classes)`` logits, shifted by the row max (no overflow)."""
    xp = _device.module_of(z)
    z = z - z.max(axis=1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))


def _host_float(v):
    """A float for numpy results; a 0-d device array stays on the device."""
    return v if _device.is_cupy(v) else float(v)



def _targets(y_true, output, name):
    y = _device.as_module(y_true, _device.module_of(output))
    if y.size != output.size:
        raise ValueError(f"{name}: targets of shape {y.shape} do not match outputs of shape {output.shape}")
    return y.reshape(output.shape).astype(output.dtype, copy=False)


_BY_NAME = {
    "binary_crossentropy": BinaryCrossentropy,
    "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError,
    "mae": MeanAbsoluteError,
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
