"""Optimizers: Adam (dense, or lazy on embedding tables), SGD and RMSprop.

An optimizer owns its state (the step count and one ``m`` / ``v`` / velocity slot per
parameter, keyed by the parameter's name) and updates parameters in place.  The training
stack calls :meth:`Optimizer.apply` once per batch with ``(name, param, grad)`` triples;
``grad`` is a dense array or a :class:`fastscale.SparseRows` (rows touched by the batch).

Adam runs through the fused ``fastscale.adam_step`` (and ``sparse_adam_step`` for sparse
gradients when ``lazy=True``), with Keras's defaults and Keras's epsilon placement
(``eps_placement="keras"``: epsilon is added to ``sqrt(v)`` before the bias-correction is
folded into the step size, as ``keras.optimizers.Adam`` does; ``"torch"`` adds it after
bias-correcting ``v``, as ``torch.optim.Adam`` does).

Slots live where their parameters live: NumPy arrays for a model on the host, CuPy arrays for
one on a GPU (``Sequential.compile(device="gpu")``), and the fused ops dispatch on them.
"""
from __future__ import annotations

import math

import numpy as np

from . import _checks as C, ops
from .ops import SparseRows
from .ops._common import PendingRows
from .ops.adam import sparse_adam_step_pending

__all__ = ["Optimizer", "Adam", "AdamW", "SGD", "RMSprop", "get"]


def _positive(cls, name, value, *, allow_zero=False, below_one=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{cls}: argument {name!r} must be a number, got {type(value).__name__}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero) or (below_one and v >= 1):
        rng = "[0, 1)" if below_one else (">= 0" if allow_zero else "> 0")
        raise ValueError(f"{cls}: argument {name!r} must be finite and {rng}, got {value!r}")
    return v


def _settled(grad):
    """A gradient as the optimizers' array code takes it: a GPU training step's PendingRows
    becomes its SparseRows (one read-back; lazy Adam alone takes them as they are)."""
    return grad.resolve() if isinstance(grad, PendingRows) else grad


class Optimizer:
    """Base class: owns ``step`` and per-parameter slots; subclasses implement ``_update``."""

    _slot_names: tuple = ()

    def __init__(self, learning_rate):
        self.learning_rate = _positive(type(self).__name__, "learning_rate", learning_rate)
        self.step = 0  # number of updates applied so far (Keras's ``iterations``)
        self.slots: dict[str, dict[str, np.ndarray]] = {}
        self.backend = None  # set by Sequential.compile; passed to every op

    # -- the training loop's entry point
    def apply(self, params_and_grads):
        """One update of every ``(name, param, grad)``; the step counter advances once."""
        self.step += 1
        for name, param, grad in params_and_grads:
            slots = self.slots.get(name)
            if slots is None:
                slots = self.slots[name] = {s: _zeros_like(param) for s in self._slot_names}
            self._update(param, _settled(grad), slots)

    def _update(self, param, grad, slots):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- state (save / resume)
    def get_config(self) -> dict:
        raise NotImplementedError

    def get_state(self) -> dict:
        """``{"step": int, "slots": {param name: {slot name: array}}}`` (arrays are copies)."""
        return {"step": self.step, "slots": {k: {s: a.copy() for s, a in d.items()} for k, d in self.slots.items()}}

    def set_state(self, state: dict) -> None:
        step = state["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"{type(self).__name__}.set_state: 'step' must be an int >= 0, got {step!r}")
        slots = {}
        for k, d in state["slots"].items():
            missing = set(self._slot_names) - set(d)
            if missing:
                raise ValueError(f"{type(self).__name__}.set_state: parameter {k!r} lacks slots {sorted(missing)}")
            slots[k] = {s: C.module_of(d[s]).array(d[s], copy=True, order="C") for s in self._slot_names}
        self.step = int(step)
        self.slots = slots

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class Adam(Optimizer):
    """Adam with Keras's defaults (learning_rate 1e-3, beta_1 0.9, beta_2 0.999, epsilon 1e-7).

    ``lazy=True``: sparse gradients (embedding tables) update only the rows the batch
    touched, via ``sparse_adam_step`` (untouched rows keep their moments: "lazy Adam", as
    TensorFlow Addons' LazyAdam and ``torch.optim.SparseAdam``).  ``lazy=False`` applies the
    dense update to every row each step, exactly as Keras does.
    ``weight_decay``: L2 added to the gradient, or decoupled (AdamW) with ``decoupled=True``.
    """

    _slot_names = ("m", "v")

    def __init__(
        self,
        learning_rate=1e-3,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-7,
        *,
        lazy=False,
        weight_decay=0.0,
        decoupled=False,
        eps_placement="keras",
    ):
        super().__init__(learning_rate)
        n = type(self).__name__
        self.beta_1 = _positive(n, "beta_1", beta_1, allow_zero=True, below_one=True)
        self.beta_2 = _positive(n, "beta_2", beta_2, allow_zero=True, below_one=True)
        self.epsilon = _positive(n, "epsilon", epsilon, allow_zero=True)
        self.weight_decay = _positive(n, "weight_decay", weight_decay, allow_zero=True)
        if eps_placement not in ("keras", "torch"):
            raise ValueError(f"{n}: argument 'eps_placement' must be 'keras' or 'torch', got {eps_placement!r}")
        self.lazy = bool(lazy)
        self.decoupled = bool(decoupled)
        self.eps_placement = eps_placement

    def _hyper(self):
        return dict(
            step=self.step,
            lr=self.learning_rate,
            beta1=self.beta_1,
            beta2=self.beta_2,
            eps=self.epsilon,
            weight_decay=self.weight_decay,
            decoupled=self.decoupled,
            eps_placement=self.eps_placement,
            backend=self.backend,
        )

    def apply(self, params_and_grads):
        """As Optimizer.apply, with every dense gradient of one dtype in one multi-tensor
        ``adam_step`` call (one set of checks and one kernel call for the small tensors)."""
        self.step += 1
        groups: dict = {}
        for name, param, grad in params_and_grads:
            slots = self.slots.get(name)
            if slots is None:
                slots = self.slots[name] = {s: _zeros_like(param) for s in self._slot_names}
            if not self.lazy:
                grad = _settled(grad)
            if isinstance(grad, (SparseRows, PendingRows)) or (type(param) is not np.ndarray and C.module_of(param) is np):
                self._update(param, grad, slots)
            else:  # numpy and cupy tensors in separate calls: fastscale never mixes them
                g = groups.setdefault((type(param), param.dtype), ([], [], [], []))
                for lst, a in zip(g, (param, grad, slots["m"], slots["v"])):
                    lst.append(a)
        for ps, gs, ms, vs in groups.values():
            ops.adam_step(ps, gs, ms, vs, **self._hyper())

    def _update(self, param, grad, slots):
        if isinstance(grad, PendingRows):  # lazy Adam in a GPU training step: no read-back
            sparse_adam_step_pending(param, grad, slots["m"], slots["v"], **self._hyper())
            return
        if isinstance(grad, SparseRows) and self.lazy:
            ops.sparse_adam_step(param, grad.rows, grad.values, slots["m"], slots["v"], **self._hyper())
            return
        # A SparseRows gradient without lazy: adam_step's dense update, every row (Keras).
        ops.adam_step(param, grad, slots["m"], slots["v"], **self._hyper())

    def get_config(self):
        return dict(
            learning_rate=self.learning_rate,
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=self.epsilon,
            lazy=self.lazy,
            weight_decay=self.weight_decay,
            decoupled=self.decoupled,
            eps_placement=self.eps_placement,
        )


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras's default weight_decay 0.004)."""

    def __init__(self, learning_rate=1e-3, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7, *, lazy=False,
                 eps_placement="keras", decoupled=True):
        super().__init__(learning_rate, beta_1, beta_2, epsilon, lazy=lazy, weight_decay=weight_decay,
                         decoupled=True, eps_placement=eps_placement)


class SGD(Optimizer):
    """Plain SGD, optionally with (Nesterov) momentum, as ``keras.optimizers.SGD``.

    Without momentum a sparse gradient updates only its rows; with momentum every row's
    velocity decays each step, so the gradient is made dense (as Keras does).
    """

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False):
        super().__init__(learning_rate)
        self.momentum = _positive("SGD", "momentum", momentum, allow_zero=True, below_one=True)
        self.nesterov = bool(nesterov)
        self._slot_names = ("velocity",) if self.momentum > 0 else ()

    def _update(self, param, grad, slots):
        lr = param.dtype.type(self.learning_rate)
        if self.momentum == 0:
            if isinstance(grad, SparseRows):
                param[grad.rows] -= lr * grad.values
            else:
                param -= lr * grad
            return
        if isinstance(grad, SparseRows):
            grad = grad.to_dense()
        mom = param.dtype.type(self.momentum)
        vel = slots["velocity"]
        vel *= mom
        vel -= lr * grad
        if self.nesterov:
            param += mom * vel - lr * grad
        else:
            param += vel

    def get_config(self):
        return dict(learning_rate=self.learning_rate, momentum=self.momentum, nesterov=self.nesterov)


class RMSprop(Optimizer):
    """RMSprop as ``keras.optimizers.RMSprop`` (learning_rate 1e-3, rho 0.9, epsilon 1e-7):
    ``v = rho * v + (1 - rho) * g**2``; ``centered``: ``a = rho * a + (1 - rho) * g`` and
    ``v - a**2`` in the denominator; the step ``lr * g / sqrt(denominator + epsilon)``, through
    a velocity when ``momentum > 0``.  A sparse gradient is made dense: every row's
    accumulators decay each step, as in Keras.  Array code (NumPy, or CuPy on a GPU): no fused
    kernel; the embedding table's update costs a few passes over it.
    """

    def __init__(self, learning_rate=1e-3, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False):
        super().__init__(learning_rate)
        self.rho = _positive("RMSprop", "rho", rho, allow_zero=True, below_one=True)
        self.momentum = _positive("RMSprop", "momentum", momentum, allow_zero=True, below_one=True)
        self.epsilon = _positive("RMSprop", "epsilon", epsilon, allow_zero=True)
        self.centered = bool(centered)
        self._slot_names = ("velocity",) + (("momentum",) if self.momentum > 0 else ()) + (
            ("average_gradient",) if self.centered else ())

    def _update(self, param, grad, slots):
        if isinstance(grad, SparseRows):
            grad = grad.to_dense()
        t = param.dtype.type
        rho = t(self.rho)
        v = slots["velocity"]
        v *= rho
        v += (1 - rho) * grad * grad
        if self.centered:
            a = slots["average_gradient"]
            a *= rho
            a += (1 - rho) * grad
            denom = v - a * a
        else:
            denom = v
        xp = C.module_of(param)
        increment = t(self.learning_rate) * grad / xp.sqrt(denom + t(self.epsilon))
        if self.momentum > 0:
            mom = slots["momentum"]
            mom *= t(self.momentum)
            mom += increment
            param -= mom
        else:
            param -= increment

    def get_config(self):
        return dict(learning_rate=self.learning_rate, rho=self.rho, momentum=self.momentum, epsilon=self.epsilon,
                    centered=self.centered)


def _zeros_like(a):
    return C.module_of(a).zeros_like(a)


_BY_NAME = {"adam": Adam, "adamw": AdamW, "sgd": SGD, "rmsprop": RMSprop}


def get(identifier) -> Optimizer:
    """An Optimizer from an instance, a name ("adam", "adamw", "sgd", "rmsprop") or ``{"class_name", "config"}``."""
    return C.from_identifier("optimizer", identifier, Optimizer, _BY_NAME)
