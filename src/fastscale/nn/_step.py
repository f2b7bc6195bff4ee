"""The training step of the usual text classifier as a straight run of kernel calls.

``Sequential.fit`` trains ``Embedding -> GlobalAveragePooling1D`` (fused) or ``EmbeddingBag``,
then ``Dense`` layers, a binary cross-entropy on the head's logit and Adam, on CSR bags,
through a :class:`FusedStep` whenever the model is of that form; the model keeps one across
``fit`` and ``train_on_batch`` calls while it stays valid.  The arrays a step touches are
checked once, when the plan is made; each step then calls the
ops' implementations (``fastscale.ops.implementation``) directly, into buffers reused across
steps, with the same calls, order and arguments as the layer-by-layer path.  The weights
therefore come out bitwise the same (tests/nn/test_determinism.py); what goes is the public
functions' per-call checks and dispatch, about a third of a step of the origin model.
"""
from __future__ import annotations

import math

import numpy as np

from .. import ops
from ..ops.adam import adam_coefficients
from ..ops.dense import ACTIVATION_CODES
from . import losses as _losses
from .layers import Dense, EmbeddingBag, _FusedEmbeddingPool

_CPU_BACKENDS = ("cpp", "numba", "numpy")
ENABLED = True  # tests turn it off to train the same model through the layer path


class FusedStep:
    """One training step of ``model`` on CSR bags: ``step(ids, offsets, y) -> (loss, logits)``."""

    @classmethod
    def for_model(cls, model):
        """The plan for ``model``, or None when it is not of the form above (the layer path
        then trains it, and reports what is wrong); ``accepts`` says whether it takes a given
        batch's data."""
        opt = model.optimizer
        st = model._stages
        if model.dtype not in (np.float32, np.float64) or len(st) < 2:
            return None
        if type(opt) not in _adam_types() or type(model.loss) is not _losses.BinaryCrossentropy:
            return None
        if not model._loss_logits or not ENABLED:
            return None
        first = st[0]
        if isinstance(first, _FusedEmbeddingPool):
            emb, pad, mean = first.emb, (0 if first.emb.mask_zero else -1), True
        elif isinstance(first, EmbeddingBag):
            emb, mean = first, first.mode == "mean"
            pad = -1 if first.padding_idx is None else first.padding_idx
        else:
            return None
        dense = st[1:]
        if not all(type(d) is Dense and d.activation in ACTIVATION_CODES for d in dense):
            return None
        if not all(layer.trainable and not layer.regularizers for layer in model.layers):
            return None
        try:
            backend, _ = ops.implementation("embedding_bag", model._backend)
        except (ValueError, RuntimeError):  # unknown / unavailable: the layer path raises it
            return None
        if backend not in _CPU_BACKENDS:
            return None
        return cls(model, emb, pad, mean, dense)

    def accepts(self, inputs, y) -> bool:
        """True for CSR bags of int32 / int64 ids and numeric targets, one per head unit."""
        if inputs.csr is None or inputs.csr[0].dtype not in (np.int32, np.int64):
            return False
        return y.size == inputs.n * self.dense[-1].units and (np.issubdtype(y.dtype, np.number) or y.dtype == bool)

    def targets(self, y):
        """The targets in the model's dtype, one row per sample, as the loss converts each batch's."""
        return np.ascontiguousarray(y.reshape(-1, self.dense[-1].units).astype(self.model.dtype, copy=False))

    def valid_for(self, model) -> bool:
        """True while ``model`` still trains exactly what this plan was made for: the same
        optimizer, loss, backend, parameter and slot arrays (``optimizer.set_state`` replaces
        the slots, ``compile`` the optimizer), every layer still trainable."""
        return self.key == _key(model)

    def __init__(self, model, emb, pad, mean, dense):
        be = model._backend
        self.model, self.emb, self.pad, self.mean, self.dense = model, emb, pad, mean, dense
        self.V = emb.input_dim
        _, self.eb_fwd = ops.implementation("embedding_bag", be)
        _, self.eb_bwd = ops.implementation("embedding_bag_backward", be)
        _, self.d_fwd = ops.implementation("dense_forward", be)
        _, self.d_bwd = ops.implementation("dense_backward", be)
        _, self.bce = ops.implementation("bce_with_logits", be)
        _, self.adam_multi = ops.implementation("adam_step(multi-tensor)", be)
        opt = model.optimizer
        self.sparse = emb.sparse_grad
        if self.sparse:
            _, self.adam_table = ops.implementation("sparse_adam_step" if opt.lazy else "adam_step(SparseRows)", be)
        # Each Dense's op activation; a sigmoid head asked for its logit applies none.
        self.acts = [ACTIVATION_CODES[d.activation] for d in dense]
        if model._ask_logits:
            self.acts[-1] = 0
        self.W = emb.params["embeddings"]
        # Optimizer slots in the layer path's order (model.layers, then params), made as it does.
        names = []
        for layer in model.layers:
            for k, p in layer.params.items():
                name = f"{layer.name}/{k}"
                if name not in opt.slots:
                    opt.slots[name] = {s: np.zeros_like(p) for s in opt._slot_names}
                names.append((name, p))
        # adam_step's multi-tensor lists: every dense gradient (the table's too when it is
        # dense) in a buffer reused across steps, in the order of the optimizer's slots.
        self.dgrads = [(np.empty_like(d.params["kernel"]), np.empty(d.units, model.dtype)) for d in dense]
        self.table_grad = None if self.sparse else np.empty_like(self.W)
        grads = {id(self.W): self.table_grad}
        for d, (dw, db) in zip(dense, self.dgrads):
            grads[id(d.params["kernel"])] = dw
            if "bias" in d.params:
                grads[id(d.params["bias"])] = db
        self.multi = ([], [], [], [])
        for name, p in names:
            if p is self.W:
                self.table_slots = opt.slots[name]
                if self.sparse:
                    continue
            for lst, a in zip(self.multi, (p, grads[id(p)], opt.slots[name]["m"], opt.slots[name]["v"])):
                lst.append(a)
        self._bufs = {}
        self.key = _key(model)
        # Held, so that a replaced optimizer or loss cannot hand its id to a new one while this
        # plan lives (the parameter and slot arrays the key names are held by the lists above).
        self._keyed = (opt, model.loss)

    def _buffers(self, B):
        """Per-batch-size activations: h[0] pooled, h[i+1] dense i's output, dh[i] its input's
        gradient, dz the head's gradient."""
        b = self._bufs.get(B)
        if b is None:
            dt = self.model.dtype
            h = [np.empty((B, self.W.shape[1]), dt)] + [np.empty((B, d.units), dt) for d in self.dense]
            dh = [np.empty(a.shape, dt) for a in h[:-1]]
            b = self._bufs[B] = (h, dh, np.empty(h[-1].size, dt))
        return b

    def step(self, ids, offsets, y, where):
        """Forward, loss, backward and Adam on one batch; returns (loss, head logits).

        ``y`` holds the targets in the model's dtype, shaped like the head's output.  A
        non-finite loss raises TrainingDivergedError (``where`` names the step) before
        anything is updated."""
        B = offsets.shape[0] - 1
        h, dh, dz = self._buffers(B)
        self.eb_fwd(self.W, ids, offsets, None, self.pad, self.mean, h[0])
        dense, acts = self.dense, self.acts
        for i, d in enumerate(dense):
            self.d_fwd(h[i], d.params["kernel"], d.params.get("bias"), acts[i], h[i + 1])
        z = h[-1]
        loss = self.bce(z.reshape(-1), y.reshape(-1), dz)
        if not math.isfinite(loss):
            from .model import TrainingDivergedError

            opt = self.model.optimizer
            raise TrainingDivergedError(
                where.format(loss) + f" (update {opt.step + 1} of this model); lower the learning rate or "
                "check the inputs for NaN/inf")
        d = dz.reshape(z.shape)
        for i in range(len(dense) - 1, -1, -1):
            layer = dense[i]
            dw, db = self.dgrads[i]
            act = acts[i]
            self.d_bwd(d, h[i], layer.params["kernel"], h[i + 1] if act else None, act, dh[i], dw, db)
            d = dh[i]
        self._update(ids, offsets, d)
        return loss, z

    def _update(self, ids, offsets, d0):
        """Optimizer.apply: the table (as SparseRows, or dense), then the dense tensors."""
        opt = self.model.optimizer
        opt.step += 1
        k = adam_coefficients(opt.step, opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon, opt.weight_decay,
                              opt.decoupled, opt.eps_placement)
        if self.sparse:
            rows, values = self.eb_bwd(d0, ids, offsets, None, self.pad, self.mean, None, self.V)
            self.adam_table(self.W, rows, values, self.table_slots["m"], self.table_slots["v"], k)
        else:
            self.eb_bwd(d0, ids, offsets, None, self.pad, self.mean, self.table_grad, self.V)
        self.adam_multi(*self.multi, k)


def _key(model):
    opt = model.optimizer
    return (id(opt), id(model.loss), model._backend, ENABLED, tuple(l.trainable for l in model.layers),
            tuple(id(p) for l in model.layers for p in l.params.values()),
            tuple(id(a) for d in opt.slots.values() for a in d.values()))


def _adam_types():
    from ..optim import Adam, AdamW

    return (Adam, AdamW)
