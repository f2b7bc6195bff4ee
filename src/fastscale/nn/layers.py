"""Layers with explicit forward / backward (no autograd tape).

A layer holds its parameters in ``params`` (name -> float32 array, numpy or cupy as the
model lives on the host or a GPU; Keras names:
``embeddings``, ``kernel``, ``bias``) and, after ``backward``, their gradients in ``grads``
(a dense array, or :class:`fastscale.SparseRows` for an embedding table when the model asked
for sparse gradients; inside a GPU training step on the ``cuda`` backend a ``PendingRows``,
whose row count stays on the device: ``resolve()`` gives the SparseRows).
``forward(x, mask, training)`` returns ``(y, mask)``: the mask is Keras's ``mask_zero`` mask,
carried from ``Embedding`` to the pooling layer.

Weights use the Keras layout (Dense ``kernel`` is ``(in, out)``), so Keras weights load
with ``set_weights`` unchanged.  Initialisers are Keras's: embeddings uniform(-0.05, 0.05),
Dense kernel glorot-uniform, bias zeros.

The layers call only the public ops (``fastscale.embedding_bag``, ``dense_forward``, ...).
``Sequential`` runs ``Embedding -> GlobalAveragePooling1D`` as one fused ``embedding_bag``
(see :class:`_FusedEmbeddingPool`); the unfused layer code below is the readable definition
the fused path is tested against.
"""
from __future__ import annotations

import re

import numpy as np

from .. import ops
from .._checks import to_identifier
from ..ops._common import PendingRows
from . import _device, initializers, regularizers

ACTIVATIONS = (None, "linear", "relu", "sigmoid", "tanh", "softmax")


def _snake(name: str) -> str:
    """Keras's layer naming: GlobalAveragePooling1D -> global_average_pooling1d."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _int_arg(layer, name, value, lo=1):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ValueError(f"{layer}: argument {name!r} must be an int >= {lo}, got {value!r}")
    return int(value)


class Layer:
    """Base class.  Subclasses set ``params`` in ``build`` and fill ``grads`` in ``backward``."""

    def __init__(self, name=None, trainable=True):
        if name is not None and not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: argument 'name' must be a str, got {type(name).__name__}")
        self.name = name
        self.trainable = bool(trainable)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict = {}
        self.built = False
        self.input_shape = None
        self.backend = None
        self.regularizers: dict = {}  # param name -> Regularizer (Sequential adds their penalties)

    def build(self, input_shape, rng: np.random.Generator, dtype=np.float32):
        self.input_shape = tuple(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, x, mask=None, training=False):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, dout, need_dx=True):  # pragma: no cover - abstract
        raise NotImplementedError

    def count_params(self) -> int:
        return int(sum(p.size for p in self.params.values()))

    def get_weights(self):
        return [p.copy() for p in self.params.values()]

    def set_weights(self, weights):
        if len(weights) != len(self.params):
            raise ValueError(f"{self.name}: set_weights expects {len(self.params)} arrays, got {len(weights)}")
        for (k, p), w in zip(self.params.items(), weights):
            w = _device.to_module(w, _device.module_of(p)) if _device.is_array(w) else np.asarray(w)
            if w.shape != p.shape:
                raise ValueError(f"{self.name}: weight {k!r} has shape {p.shape}, got an array of shape {w.shape}")
            p[...] = _device.module_of(p).asarray(w)  # in place: optimizer slots and fused views stay valid

    def get_config(self) -> dict:
        cfg = {"name": self.name, "trainable": self.trainable}
        for param, reg in self.regularizers.items():
            cfg[self._REG_ARG[param]] = to_identifier(reg)
        return cfg

    def _config_initializers(self, cfg, **defaults):
        """``cfg`` plus each initializer that is not its Keras default (a default stays
        implicit: files written before these arguments existed have none)."""
        for name, default in defaults.items():
            if getattr(self, name) != default:
                cfg[name] = to_identifier(getattr(self, name))
        return cfg

    _REG_ARG = {"embeddings": "embeddings_regularizer", "kernel": "kernel_regularizer", "bias": "bias_regularizer"}

    def _set_regularizers(self, **by_param):
        self.regularizers = {k: r for k, r in ((k, regularizers.get(v)) for k, v in by_param.items()) if r is not None}

    def __repr__(self):
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k not in ("name", "trainable"))
        return f"{type(self).__name__}({cfg})"


def _initial_table(layer, weights, shape):
    """Keras's ``weights=[table]`` (or the table itself): a float array of ``shape``, copied."""
    if weights is None:
        return None
    if isinstance(weights, (list, tuple)) and len(weights) == 1 and hasattr(weights[0], "shape"):
        weights = weights[0]
    w = _device.to_host(weights) if _device.is_cupy(weights) else np.asarray(weights)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"{layer}: argument 'weights' must hold numbers, got dtype {w.dtype}")
    if w.shape != shape:
        raise ValueError(f"{layer}: argument 'weights' must be [an array of shape {shape}], got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{layer}: argument 'weights' holds non-finite values")
    return w.copy()


def _table(layer, init, rng, dtype):
    if layer._initial is not None:
        return layer._initial.astype(dtype)
    return init(rng, (layer.input_dim, layer.output_dim), dtype)


class Embedding(Layer):
    """Lookup table ``(input_dim, output_dim)``: ids ``(B, T)`` -> ``(B, T, output_dim)``.

    ``mask_zero=True``: id 0 is padding; the mask travels to ``GlobalAveragePooling1D``, which
    then averages only the real tokens (so ``input_dim`` must leave room for id 0, as in Keras).
    In a ``Sequential`` followed by ``GlobalAveragePooling1D`` this layer is fused with the
    pooling into one ``embedding_bag`` and the ``(B, T, D)`` output is never built.

    ``weights=[table]``: start from a pretrained ``(input_dim, output_dim)`` table (GloVe,
    word2vec), as Keras's ``weights`` argument; with ``trainable=False`` it stays fixed.
    ``input_length`` (Keras 2) is accepted and not needed: padded inputs of any length work.
    """

    def __init__(self, input_dim, output_dim, mask_zero=False, name=None, trainable=True, embeddings_initializer="uniform",
                 weights=None, input_length=None, embeddings_regularizer=None):
        super().__init__(name, trainable)
        self._set_regularizers(embeddings=embeddings_regularizer)
        self.input_dim = _int_arg("Embedding", "input_dim", input_dim)
        self.output_dim = _int_arg("Embedding", "output_dim", output_dim)
        self.mask_zero = bool(mask_zero)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.input_length = None if input_length is None else _int_arg("Embedding", "input_length", input_length)
        self._initial = _initial_table("Embedding", weights, (self.input_dim, self.output_dim))
        self.sparse_grad = False  # set by Sequential.compile for Adam(lazy=True)

    def build(self, input_shape, rng, dtype=np.float32):
        self.params = {"embeddings": _table(self, self.embeddings_initializer, rng, dtype)}
        super().build(input_shape, rng, dtype)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if len(shape) == 2 and shape[1] is None and self.input_length is not None:
            shape = (shape[0], self.input_length)  # Keras 2: the declared length (Flatten needs it)
        return shape + (self.output_dim,)

    def forward(self, x, mask=None, training=False):
        if not _device.is_array(x) or x.ndim != 2:
            raise ValueError(
                f"{self.name}: an Embedding not followed by GlobalAveragePooling1D needs padded 2-D ids (B, T), "
                f"got {type(x).__name__}{'' if not hasattr(x, 'shape') else ' of shape ' + str(x.shape)}"
            )
        self._ids = x
        out = ops.embedding(self.params["embeddings"], x, backend=self.backend)
        return out, (x != 0) if self.mask_zero else None

    def backward(self, dout, need_dx=True):
        if self.trainable:
            self.grads["embeddings"] = ops.embedding_backward(
                dout, self._ids, self.input_dim, sparse=self.sparse_grad, backend=self.backend
            )
        return None  # ids have no gradient

    def get_config(self):
        cfg = {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim,
               "mask_zero": self.mask_zero}
        self._config_initializers(cfg, embeddings_initializer=initializers.RandomUniform())
        if self.input_length is not None:
            cfg["input_length"] = self.input_length
        return cfg  # a weights= table is not config: a saved model holds the trained table


class GlobalAveragePooling1D(Layer):
    """Mean over the time axis: ``(B, T, D)`` -> ``(B, D)``; masked positions are left out."""

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def forward(self, x, mask=None, training=False):
        if x.ndim != 3:
            raise ValueError(f"{self.name}: expects (B, T, D) input, got shape {x.shape}")
        self._mask, self._shape = mask, x.shape
        if mask is not None:
            return ops.masked_mean_pool(x, mask, backend=self.backend), None
        return x.mean(axis=1, dtype=x.dtype), None

    def backward(self, dout, need_dx=True):
        if self._mask is not None:
            return ops.masked_mean_pool_backward(dout, self._mask, backend=self.backend)
        B, T, D = self._shape
        return _device.module_of(dout).broadcast_to((dout / dout.dtype.type(T))[:, None, :], (B, T, D)).copy()


class GlobalMaxPooling1D(Layer):
    """Max over the time axis: ``(B, T, D)`` -> ``(B, D)``.  Under ``Embedding(mask_zero=True)``
    only the real tokens compete (padding's row never wins); a sample with none gives zeros.
    The gradient goes to the first position holding each maximum (as ``argmax``)."""

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def forward(self, x, mask=None, training=False):
        if x.ndim != 3:
            raise ValueError(f"{self.name}: expects (B, T, D) input, got shape {x.shape}")
        xp = _device.module_of(x)
        B, T, D = x.shape
        self._shape = x.shape
        if T == 0:
            self._at = None
            return xp.zeros((B, D), x.dtype), None
        xm = x if mask is None else xp.where(mask[:, :, None], x, x.dtype.type(-np.inf))
        idx = xm.argmax(axis=1)  # (B, D)
        self._at = (xp.arange(B)[:, None], idx, xp.arange(D)[None, :])  # plain indexing: NumPy and CuPy alike
        out = xm[self._at]
        self._valid = None if mask is None else mask.any(axis=1)  # (B,)
        if self._valid is not None:
            out = xp.where(self._valid[:, None], out, x.dtype.type(0))
        return out, None

    def backward(self, dout, need_dx=True):
        xp = _device.module_of(dout)
        dx = xp.zeros(self._shape, dout.dtype)
        if self._at is not None:
            g = dout if self._valid is None else xp.where(self._valid[:, None], dout, dout.dtype.type(0))
            dx[self._at] = g
        return dx


class Flatten(Layer):
    """``(B, d1, d2, ...)`` -> ``(B, d1 * d2 * ...)``, as Keras's: the classic
    ``Embedding(input_length=T) -> Flatten -> Dense``.  It needs padded ids of one fixed length
    (from the data, ``nn.Input(shape=(T,))`` or ``input_length``); a mask is not carried on."""

    def compute_output_shape(self, input_shape):
        rest = tuple(input_shape[1:])
        if any(d is None for d in rest):
            raise ValueError(f"{self.name}: Flatten needs a fixed input shape, got {tuple(input_shape)}: give the model "
                             "padded ids of one length (nn.Input(shape=(T,)) or Embedding(input_length=T)), not bags")
        return (input_shape[0], int(np.prod(rest, dtype=np.int64)))

    def forward(self, x, mask=None, training=False):
        self._shape = x.shape
        return x.reshape(x.shape[0], -1), None

    def backward(self, dout, need_dx=True):
        return dout.reshape(self._shape)


class EmbeddingBag(Layer):
    """Mean (or sum) of the embedding rows of each bag: ``Embedding + pooling`` in one op.

    Input: padded 2-D ids ``(B, T)`` (ids equal to ``padding_idx`` are skipped), or CSR bags
    ``(ids, offsets)`` as made by ``fastscale.text.texts_to_bags`` (no padding at all).
    """

    def __init__(self, input_dim, output_dim, mode="mean", padding_idx=0, name=None, trainable=True,
                 embeddings_initializer="uniform", weights=None, embeddings_regularizer=None):
        super().__init__(name, trainable)
        self._set_regularizers(embeddings=embeddings_regularizer)
        self.input_dim = _int_arg("EmbeddingBag", "input_dim", input_dim)
        self.output_dim = _int_arg("EmbeddingBag", "output_dim", output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self._initial = _initial_table("EmbeddingBag", weights, (self.input_dim, self.output_dim))
        if mode not in ("mean", "sum"):
            raise ValueError(f"EmbeddingBag: argument 'mode' must be 'mean' or 'sum', got {mode!r}")
        if padding_idx is not None:
            padding_idx = _int_arg("EmbeddingBag", "padding_idx", padding_idx, lo=0)
            if padding_idx >= self.input_dim:
                raise ValueError(f"EmbeddingBag: padding_idx must be < input_dim={self.input_dim}, got {padding_idx}")
        self.mode = mode
        self.padding_idx = padding_idx
        self.sparse_grad = False
        self._grad_buf = None

    def build(self, input_shape, rng, dtype=np.float32):
        self.params = {"embeddings": _table(self, self.embeddings_initializer, rng, dtype)}
        super().build(input_shape, rng, dtype)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def forward(self, x, mask=None, training=False):
        ids, offsets = x if isinstance(x, tuple) else (x, None)
        self._ids, self._offsets = ids, offsets
        out = ops.embedding_bag(
            self.params["embeddings"], ids, offsets, mode=self.mode, padding_idx=self.padding_idx, backend=self.backend
        )
        return out, None

    def backward(self, dout, need_dx=True):
        if self.trainable:
            kw = dict(num_embeddings=self.input_dim, mode=self.mode, padding_idx=self.padding_idx, backend=self.backend)
            if self.sparse_grad:
                g = ops.embedding_bag_backward(dout, self._ids, self._offsets, sparse=True, **kw)
            else:
                # One (V, D) buffer reused across steps: a fresh zeroed table per step costs more
                # than the kernel itself.
                buf = self._grad_buf
                if buf is None or buf.shape != self.params["embeddings"].shape or buf.dtype != dout.dtype:
                    buf = self._grad_buf = _device.module_of(dout).empty(self.params["embeddings"].shape, dout.dtype)
                g = ops.embedding_bag_backward(dout, self._ids, self._offsets, out=buf, **kw)
            self.grads["embeddings"] = g
        return None

    def get_config(self):
        cfg = {**super().get_config(), "input_dim": self.input_dim, "output_dim": self.output_dim, "mode": self.mode,
               "padding_idx": self.padding_idx}
        return self._config_initializers(cfg, embeddings_initializer=initializers.RandomUniform())


class _FusedEmbeddingPool:
    """``Embedding -> GlobalAveragePooling1D`` as one ``embedding_bag`` (forward and backward).

    mask_zero=True: ``embedding_bag(mode="mean", padding_idx=0)``, exactly Keras's masked mean.
    mask_zero=False (Keras averages all T positions, padding rows included):
    ``(sum of the non-zero ids' rows + n_zero * weight[0]) / T``; the sum skips id 0 through
    ``padding_idx=0``, so row 0 is read once per batch rather than gathered n_zero times, and
    its gradient is ``sum_b n_zero[b] * dout[b] / T``, added once.
    CSR input ``(ids, offsets)`` is a plain mean over each bag (id 0 skipped under mask_zero).
    The ``(B, T, D)`` tensor is never built.  Gradients land in ``emb.grads`` as usual.
    """

    def __init__(self, emb: Embedding, pool: GlobalAveragePooling1D):
        self.emb, self.pool = emb, pool
        self._grad_buf = None

    @property
    def name(self):
        return self.emb.name

    def forward(self, x, mask=None, training=False):
        emb = self.emb
        W = emb.params["embeddings"]
        be = emb.backend
        if isinstance(x, tuple):
            ids, offsets = x
            self._state = (ids, offsets, None, None)
            out = ops.embedding_bag(W, ids, offsets, mode="mean", padding_idx=0 if emb.mask_zero else None, backend=be)
            return out, None
        ids = x
        if emb.mask_zero:
            self._state = (ids, None, None, None)
            return ops.embedding_bag(W, ids, mode="mean", padding_idx=0, backend=be), None
        T = ids.shape[1]
        n_zero = (ids.shape[1] - _device.module_of(ids).count_nonzero(ids, axis=1)).astype(W.dtype)
        out = ops.embedding_bag(W, ids, mode="sum", padding_idx=0, backend=be)
        if T:
            out += n_zero[:, None] * W[0]
            out /= W.dtype.type(T)
        self._state = (ids, None, n_zero, T)
        return out, None

    def backward(self, dout, need_dx=True):
        emb = self.emb
        if not emb.trainable:
            return None
        ids, offsets, n_zero, T = self._state
        V = emb.input_dim
        be = emb.backend
        if n_zero is None:  # masked mean (padded or CSR), or plain CSR mean
            kw = dict(num_embeddings=V, mode="mean", padding_idx=0 if emb.mask_zero else None, backend=be)
        else:
            dout = dout / dout.dtype.type(T) if T else dout
            kw = dict(num_embeddings=V, mode="sum", padding_idx=0, backend=be)
        if emb.sparse_grad:
            g = ops.embedding_bag_backward(dout, ids, offsets, sparse=True, **kw)
            if n_zero is not None and T:
                g0 = n_zero @ dout  # (D,): row 0's gradient, once
                if isinstance(g, PendingRows):  # a GPU training step: decided on the device
                    g = _prepend_row0_pending(g, g0, n_zero.any())
                elif n_zero.any():  # row 0 joins only when the batch holds id 0
                    g = _prepend_row0(g, g0)
        else:
            buf = self._grad_buf
            if buf is None or buf.shape != emb.params["embeddings"].shape or buf.dtype != dout.dtype:
                buf = self._grad_buf = _device.module_of(dout).empty(emb.params["embeddings"].shape, dout.dtype)
            g = ops.embedding_bag_backward(dout, ids, offsets, out=buf, **kw)
            if n_zero is not None and T:
                g[0] += n_zero @ dout
        emb.grads["embeddings"] = g
        return None


def _prepend_row0_pending(g, g0, present):
    """_prepend_row0 for a PendingRows, without a read-back: ``present`` (a device bool) puts
    row 0 first and counts it, else it goes past the count, where nothing reads it."""
    rows, values, count = g.buffers
    xp = _device.module_of(values)
    first = xp.concatenate([xp.zeros(1, rows.dtype), rows])
    last = xp.concatenate([rows, xp.zeros(1, rows.dtype)])
    r0 = g0[None, :].astype(values.dtype)
    rows = xp.where(present, first, last)
    values = xp.where(present, xp.concatenate([r0, values]), xp.concatenate([values, r0]))
    return PendingRows(rows, values, count + present.astype(count.dtype), g.num_embeddings, g._check)


def _prepend_row0(g, g0):
    """SparseRows g (row 0 absent: it was the padding row) plus a gradient for row 0."""
    xp = _device.module_of(g.values)
    rows = xp.concatenate([xp.zeros(1, g.rows.dtype), xp.asarray(g.rows)])
    values = xp.concatenate([g0[None, :].astype(g.values.dtype), g.values])
    return ops.SparseRows(rows, values, g.num_embeddings)


class Dense(Layer):
    """``activation(x @ kernel + bias)``, fused in ``fastscale.dense_forward``.

    activation: None / "linear", "relu", "sigmoid", "tanh", or "softmax" (the softmax itself is
    applied in NumPy over the op's linear output).
    """

    def __init__(self, units, activation=None, use_bias=True, name=None, trainable=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None):
        super().__init__(name, trainable)
        self._set_regularizers(kernel=kernel_regularizer, bias=bias_regularizer if use_bias else None)
        self.units = _int_arg("Dense", "units", units)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        if activation == "linear":
            activation = None
        if activation not in ACTIVATIONS:
            raise ValueError(f"Dense: argument 'activation' must be one of {ACTIVATIONS}, got {activation!r}")
        self.activation = activation
        self.use_bias = bool(use_bias)

    def build(self, input_shape, rng, dtype=np.float32):
        if len(input_shape) != 2:
            raise ValueError(f"{self.name}: Dense expects 2-D input (B, features), got shape {tuple(input_shape)}")
        params = {"kernel": self.kernel_initializer(rng, (int(input_shape[-1]), self.units), dtype)}
        if self.use_bias:
            params["bias"] = self.bias_initializer(rng, (self.units,), dtype)
        self.params = params
        super().build(input_shape, rng, dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def forward(self, x, mask=None, training=False, logits=False):
        """``logits=True`` skips a final sigmoid / softmax (the loss works from the logit)."""
        act = self.activation
        op_act = None if (logits or act == "softmax") else act
        x = _device.module_of(x).ascontiguousarray(x)
        out = ops.dense_forward(x, self.params["kernel"], self.params.get("bias"), activation=op_act, backend=self.backend)
        self._x, self._out, self._op_act = x, out, op_act
        self._softmax = None
        if act == "softmax" and not logits:
            out = _softmax(out)
            self._softmax = out
        return out, None

    def backward(self, dout, need_dx=True):
        if self._softmax is not None:
            s = self._softmax
            dout = s * (dout - (dout * s).sum(axis=1, keepdims=True, dtype=s.dtype))
        dx, dw, db = ops.dense_backward(
            _device.module_of(dout).ascontiguousarray(dout, dtype=self._out.dtype), self._x, self.params["kernel"], self._out, self._op_act,
            need_dx=need_dx, backend=self.backend,
        )
        if self.trainable:
            self.grads["kernel"] = dw
            if self.use_bias:
                self.grads["bias"] = db
        return dx

    def get_config(self):
        cfg = {**super().get_config(), "units": self.units, "activation": self.activation, "use_bias": self.use_bias}
        return self._config_initializers(cfg, kernel_initializer=initializers.GlorotUniform(),
                                         bias_initializer=initializers.Zeros())


def _softmax(z):
    e = _device.module_of(z).exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Dropout(Layer):
    """Inverted dropout: in training, zero a fraction ``rate`` of the inputs and scale the rest.

    The mask of each step comes from ``(model seed, layer seed, step)``, so a resumed run
    draws the same masks as an uninterrupted one.
    """

    def __init__(self, rate, seed=None, name=None, trainable=True):
        super().__init__(name, trainable)
        if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Dropout: argument 'rate' must be a number in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = None if seed is None else _int_arg("Dropout", "seed", seed, lo=0)
        self._rng_key = None  # set by Sequential per step

    def forward(self, x, mask=None, training=False):
        self._keep = None
        if not training or self.rate == 0.0:
            return x, mask
        # Drawn on the host, the same masks on every device; a GPU model copies the mask over.
        rng = np.random.default_rng(self._rng_key)
        keep = _device.to_module(rng.random(x.shape, dtype=np.float32) >= self.rate, _device.module_of(x))
        scale = x.dtype.type(1.0 / (1.0 - self.rate))
        self._keep = keep * scale
        return x * self._keep, mask

    def backward(self, dout, need_dx=True):
        return dout if self._keep is None else dout * self._keep

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


LAYERS = {c.__name__: c for c in (Embedding, GlobalAveragePooling1D, GlobalMaxPooling1D, Flatten, EmbeddingBag, Dense,
                                   Dropout)}


def from_config(class_name: str, config: dict) -> Layer:
    cls = LAYERS.get(class_name)
    if cls is None:
        raise ValueError(f"unknown layer class {class_name!r}; known: {sorted(LAYERS)}")
    return cls(**config)
