"""Keras's initialisers: ``RandomUniform`` (Keras's default for ``Embedding``: uniform in
[-0.05, 0.05]), ``RandomNormal`` (Keras's default stddev is 0.05; PyTorch's ``nn.Embedding``
draws N(0, 1), i.e. ``RandomNormal(stddev=1.0)``), ``GlorotUniform`` (Keras's default for
``Dense`` kernels), ``GlorotNormal``, ``HeUniform``, ``HeNormal`` (the normal ones truncated
at two standard deviations, as Keras's), ``Zeros``, ``Ones`` and ``Constant(value)``.  Fans
are Keras's for 2-D shapes: ``fan_in, fan_out = shape``.

Values are drawn from the model's generator (``compile(seed=...)``) straight in the table's
dtype, so a hashed n-gram table needs no float64 temporary twice its size.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks as C

__all__ = ["Initializer", "RandomUniform", "RandomNormal", "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal",
           "Zeros", "Ones", "Constant", "get"]


def _real(cls, name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(float(v)):
        raise ValueError(f"{cls}: argument {name!r} must be a finite number, got {v!r}")
    return float(v)


class Initializer:
    def __call__(self, rng: np.random.Generator, shape, dtype):  # pragma: no cover - abstract
        raise NotImplementedError

    def get_config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __repr__(self):
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05):
        self.minval = _real("RandomUniform", "minval", minval)
        self.maxval = _real("RandomUniform", "maxval", maxval)
        if self.maxval < self.minval:
            raise ValueError(f"RandomUniform: maxval must be >= minval, got {self.minval} and {self.maxval}")

    def __call__(self, rng, shape, dtype):
        t = np.dtype(dtype).type
        w = rng.random(shape, dtype=t)
        w *= t(self.maxval - self.minval)
        w += t(self.minval)
        return w

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05):
        self.mean = _real("RandomNormal", "mean", mean)
        self.stddev = _real("RandomNormal", "stddev", stddev)
        if self.stddev < 0:
            raise ValueError(f"RandomNormal: stddev must be >= 0, got {self.stddev}")

    def __call__(self, rng, shape, dtype):
        t = np.dtype(dtype).type
        w = rng.standard_normal(shape, dtype=t)
        w *= t(self.stddev)
        w += t(self.mean)
        return w

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev}


class _Fans(Initializer):
    """Scaled by the shape's fans (Keras's ``VarianceScaling``); no arguments."""

    def get_config(self):
        return {}

    @staticmethod
    def _fans(shape):
        if len(shape) < 1:
            return 1, 1
        if len(shape) == 1:
            return shape[0], shape[0]
        receptive = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        return shape[-2] * receptive, shape[-1] * receptive


class GlorotUniform(_Fans):
    def __call__(self, rng, shape, dtype):
        fan_in, fan_out = self._fans(shape)
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, size=shape).astype(dtype)


class HeUniform(_Fans):
    def __call__(self, rng, shape, dtype):
        limit = np.sqrt(6.0 / self._fans(shape)[0])
        return rng.uniform(-limit, limit, size=shape).astype(dtype)


def _truncated_normal(rng, shape, stddev, dtype):
    """N(0, stddev) redrawn outside two standard deviations (Keras's truncated normal);
    Keras scales stddev by 1 / 0.8796 so the truncated draws keep the intended variance."""
    w = rng.standard_normal(shape)
    bad = np.abs(w) > 2
    while bad.any():
        w[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(w) > 2
    return (w * (stddev / 0.87962566103423978)).astype(dtype)


class GlorotNormal(_Fans):
    def __call__(self, rng, shape, dtype):
        fan_in, fan_out = self._fans(shape)
        return _truncated_normal(rng, shape, np.sqrt(2.0 / (fan_in + fan_out)), dtype)


class HeNormal(_Fans):
    def __call__(self, rng, shape, dtype):
        return _truncated_normal(rng, shape, np.sqrt(2.0 / self._fans(shape)[0]), dtype)


class Constant(Initializer):
    """Every entry ``value`` (a number, as Keras 3's; for a whole pretrained table pass
    ``weights=[table]`` to ``Embedding``)."""

    def __init__(self, value=0.0):
        self.value = _real("Constant", "value", value)

    def __call__(self, rng, shape, dtype):
        return np.full(shape, self.value, dtype)

    def get_config(self):
        return {"value": self.value}


class Zeros(Constant):
    def __init__(self):
        super().__init__(0.0)

    def get_config(self):
        return {}


class Ones(Constant):
    def __init__(self):
        super().__init__(1.0)

    def get_config(self):
        return {}


_BY_NAME = {"uniform": RandomUniform, "random_uniform": RandomUniform, "randomuniform": RandomUniform,
            "normal": RandomNormal, "random_normal": RandomNormal, "randomnormal": RandomNormal,
            "glorot_uniform": GlorotUniform, "glorotuniform": GlorotUniform,
            "glorot_normal": GlorotNormal, "glorotnormal": GlorotNormal,
            "he_uniform": HeUniform, "heuniform": HeUniform, "he_normal": HeNormal, "henormal": HeNormal,
            "zeros": Zeros, "zero": Zeros, "ones": Ones, "one": Ones, "constant": Constant}


def get(identifier) -> Initializer:
    """An Initializer from an instance, a Keras name ("uniform", "random_normal", ...) or
    ``{"class_name": ..., "config": {...}}`` (what ``get_config`` of a layer stores)."""
    return C.from_identifier("initializer", identifier, Initializer, _BY_NAME)


to_config = C.to_identifier  # an Initializer's {"class_name", "config"}
