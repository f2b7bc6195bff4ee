"""Keras's embedding initialisers: ``RandomUniform`` (Keras's default for ``Embedding``:
uniform in [-0.05, 0.05]) and ``RandomNormal`` (Keras's default stddev is 0.05; PyTorch's
``nn.Embedding`` draws N(0, 1), i.e. ``RandomNormal(stddev=1.0)``).

Values are drawn from the model's generator (``compile(seed=...)``) straight in the table's
dtype, so a hashed n-gram table needs no float64 temporary twice its size.
"""
from __future__ import annotations

import math

import numpy as np

from .. import _checks as C

__all__ = ["Initializer", "RandomUniform", "RandomNormal", "get"]


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


_BY_NAME = {"uniform": RandomUniform, "random_uniform": RandomUniform, "randomuniform": RandomUniform,
            "normal": RandomNormal, "random_normal": RandomNormal, "randomnormal": RandomNormal}


def get(identifier) -> Initializer:
    """An Initializer from an instance, a Keras name ("uniform", "random_normal", ...) or
    ``{"class_name": ..., "config": {...}}`` (what ``get_config`` of a layer stores)."""
    return C.from_identifier("initializer", identifier, Initializer, _BY_NAME)


def to_config(init: Initializer) -> dict:
    return {"class_name": type(init).__name__, "config": init.get_config()}
