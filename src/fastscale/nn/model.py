"""Sequential: a Keras-style model (compile / fit / evaluate / predict / save).

Inputs ``x`` may be padded 2-D ids ``(N, T)`` (``text.pad_sequences``), CSR bags
``(ids, offsets)`` (``text.texts_to_bags``; needs ``EmbeddingBag`` or ``Embedding ->
GlobalAveragePooling1D`` first), a list of id sequences (turned into CSR bags, no padding),
or a float matrix ``(N, F)`` for a model that starts with ``Dense``.

Training is deterministic: weights come from the model seed (``compile(seed=)``, else the
first ``fit(seed=)``, else a fresh random seed that is then kept and saved), the shuffle of
epoch ``e`` from ``(seed, e)`` and Dropout masks from ``(seed, layer, step)``, where ``e``
and ``step`` count all epochs / updates the model has ever done.  So a model saved after
epoch 1, loaded and trained one more epoch ends bitwise equal to one trained 2 epochs in a
row.

Devices: ``compile(device="gpu")`` keeps the parameters, the optimizer's slots, the gradient
buffers, the activations and the data on a GPU as CuPy arrays for the whole of ``fit`` (NumPy
inputs are copied to the device once, before the first epoch, never per batch); CuPy inputs
move a model compiled with ``device=None`` (the default) there by themselves.  ``predict``
returns arrays of the model's module; ``evaluate`` and the history hold Python floats.  On a
GPU a training step reads nothing back from the device: the losses and metrics accumulate
there and are read once per epoch (and at each refresh of a terminal progress bar), so a
non-finite loss is reported at the end of its epoch, naming its step, not before the step
updates the weights as on the host (see ``fit``).
"""
from __future__ import annotations

import contextlib
import importlib
import math
import sys
import time
import warnings

import numpy as np

from .. import _checks as C, ops
from .. import optim as _optim
from .._checks import to_identifier
from ..ops._common import PendingRows
from . import _device
from . import callbacks as _callbacks
from . import losses as _losses
from . import metrics as _metrics
from ._step import FusedStep as _FusedStep
from .layers import Dense, Dropout, Embedding, EmbeddingBag, GlobalAveragePooling1D, Layer, _FusedEmbeddingPool, _snake

_DEFAULT_BATCH = 32
_MAX_VIEWS = 1 << 21  # CSR inputs up to this many samples keep one view per sample for take()


class TrainingDivergedError(FloatingPointError):
    """The loss became NaN or infinite during ``fit``."""


# ---------------------------------------------------------------------------- inputs
class _Inputs:
    """The samples of ``x`` in one of the accepted forms, sliceable into batches.

    The arrays are numpy or cupy (``xp``), as ``x`` came; ``to(xp)`` copies them once.  CSR
    offsets are also kept on the host (``hoff``, the same array for numpy) so that slicing a
    batch out of device-resident bags never reads anything back from the device."""

    def __init__(self, x, who="fit"):
        self.csr = None
        self.arr = None
        self.hoff = None
        self.ids_checked = None  # the table size these ids were checked against (a GPU loop's)
        if isinstance(x, tuple) and len(x) == 2:
            xp = _device.module_of(x[0] if _device.is_cupy(x[0]) else x[1])
            ids, offsets = (_device.as_module(a, xp) for a in x)
            if ids.ndim != 1 or offsets.ndim != 1 or offsets.shape[0] < 1:
                raise ValueError(f"{who}: CSR bags (ids, offsets) need 1-D ids and 1-D offsets of length N+1, got shapes "
                                 f"{ids.shape} and {offsets.shape}")
            self.csr = (_as_ids(ids, who, "ids"), offsets.astype(np.int64, copy=False))
            self.n = offsets.shape[0] - 1
        elif isinstance(x, list) and (not x or not np.isscalar(x[0])):
            xp = np
            lengths = np.fromiter((len(s) for s in x), np.int64, len(x))
            offsets = np.zeros(len(x) + 1, np.int64)
            np.cumsum(lengths, out=offsets[1:])
            ids = np.fromiter((i for s in x for i in s), np.int64, int(offsets[-1])) if x else np.zeros(0, np.int64)
            self.csr = (ids, offsets)
            self.n = len(x)
        else:
            xp = _device.module_of(x)
            arr = _device.as_module(x, xp)
            if arr.ndim != 2:
                raise ValueError(f"{who}: x must be 2-D (samples, tokens or features), CSR (ids, offsets) or a list of "
                                 f"sequences, got an array of shape {arr.shape}")
            if np.issubdtype(arr.dtype, np.integer):
                arr = _as_ids(arr, who, "x")
            elif np.issubdtype(arr.dtype, np.floating):
                arr = xp.ascontiguousarray(arr, dtype=np.float32)
            else:
                raise TypeError(f"{who}: x must hold integer ids or floats, got dtype {arr.dtype}")
            self.arr = xp.ascontiguousarray(arr)
            self.n = arr.shape[0]
        self.xp = xp
        if self.csr is not None:
            self.hoff = _device.to_host(self.csr[1])  # one read-back for bags given on the device

    @classmethod
    def _make(cls, xp, n, arr=None, csr=None, hoff=None):
        new = object.__new__(cls)
        new.xp, new.n, new.arr, new.csr = xp, n, arr, csr
        new.hoff = csr[1] if csr is not None and xp is np else hoff
        new.ids_checked = None
        return new

    @property
    def on_gpu(self):
        return self.xp is not np

    @property
    def shape(self):
        return (None, None) if self.csr is not None else (None,) + self.arr.shape[1:]

    @property
    def is_ids(self):
        return self.csr is not None or np.issubdtype(self.arr.dtype, np.integer)

    def to(self, xp):
        """These inputs as arrays of ``xp`` (copied once; self when they are already)."""
        if xp is self.xp:
            return self
        if self.arr is not None:
            return _Inputs._make(xp, self.n, arr=_device.to_module(self.arr, xp))
        return _Inputs._make(xp, self.n, csr=tuple(_device.to_module(a, xp) for a in self.csr), hoff=self.hoff)

    def take(self, idx):
        if self.arr is not None:
            return self.arr[idx]
        ids, off = self.csr
        if idx.shape[0] <= 4096 and self.n <= _MAX_VIEWS:
            # A batch: one view per bag, made once (fit gathers a shuffled batch every step,
            # and this halves the time: 27 -> 15 us for 64 IMDB reviews).
            views = self.__dict__.get("_views")
            if views is None:
                views = self._views = [ids[a:b] for a, b in zip(off[:-1].tolist(), off[1:].tolist())]
            new_off = np.zeros(idx.shape[0] + 1, np.int64)
            np.cumsum(self._lengths[idx], out=new_off[1:])
            parts = [views[i] for i in idx.tolist()]
            return (np.concatenate(parts) if parts else ids[:0]), new_off
        starts, ends = off[idx], off[idx + 1]
        new_off = np.zeros(idx.shape[0] + 1, np.int64)
        np.cumsum(ends - starts, out=new_off[1:])
        pos = np.arange(new_off[-1], dtype=np.int64) + np.repeat(starts - new_off[:-1], ends - starts)
        return ids[pos], new_off

    @property
    def _lengths(self):
        lengths = self.__dict__.get("_lens")
        if lengths is None:
            off = self.csr[1]
            lengths = self._lens = off[1:] - off[:-1]
        return lengths

    def permuted(self, order):
        """All samples in the host permutation ``order``, as new inputs of the same module: on
        a GPU one gather per epoch, so the batches are then plain slices (``take`` per batch
        would read bag boundaries back from the device every step)."""
        xp = self.xp
        o = xp.asarray(order)
        if self.arr is not None:
            return _Inputs._make(xp, self.n, arr=self.arr[o])
        ids, _off = self.csr
        h = self.hoff
        hnew = np.zeros(self.n + 1, np.int64)
        np.cumsum((h[1:] - h[:-1])[order], out=hnew[1:])
        total = int(hnew[-1])
        new_off = xp.asarray(hnew)
        if total:
            # Output id j belongs to bag b = the last with new_off[b] <= j, at rank j - new_off[b].
            j = xp.arange(total, dtype=np.int64)
            bag = xp.searchsorted(new_off, j, side="right") - 1
            pos = j - new_off[bag] + xp.asarray(h[:-1][order])[bag]
            new_ids = ids[pos]
        else:
            new_ids = ids[:0]
        return _Inputs._make(xp, self.n, csr=(new_ids, new_off), hoff=hnew)

    def slice(self, start, stop):
        if self.arr is not None:
            return self.arr[start:stop]
        ids, off = self.csr
        h = self.hoff  # bounds from the host copy: no read-back on a GPU
        return ids[h[start] : h[stop]], off[start : stop + 1] - off[start]

    def subset(self, start, stop):
        if self.arr is not None:
            return _Inputs._make(self.xp, stop - start, arr=self.arr[start:stop])
        h = self.hoff
        return _Inputs._make(self.xp, stop - start, csr=self.slice(start, stop), hoff=h[start : stop + 1] - h[start])

    def as_bags(self, V):
        """Padded ids as CSR bags of their non-zero ids, or self when that cannot be done.

        For a masked mean (Embedding(mask_zero=True) -> pooling) the two are the same
        computation, bitwise: the kernel skips id 0 wherever it sits and adds the rest in
        position order either way.  fit converts once so that every epoch gathers only the
        real tokens of a batch, not T ids per sample.  Out-of-range ids stay padded, so the
        error names the position the user knows."""
        a = self.arr
        if a is None or a.ndim != 2 or not np.issubdtype(a.dtype, np.integer) or a.size == 0:
            return self
        if int(a.min()) < 0 or int(a.max()) >= V:
            return self
        xp = self.xp
        keep = a != 0
        off = xp.zeros(a.shape[0] + 1, np.int64)
        xp.cumsum(xp.count_nonzero(keep, axis=1), out=off[1:])
        return _Inputs._make(xp, self.n, csr=(a[keep], off), hoff=_device.to_host(off))

    @staticmethod
    def tokens(batch):
        """Real (non-padding) tokens in a batch, for tokens/s (a device scalar for padded ids
        on a GPU, so that counting never waits for the device)."""
        if isinstance(batch, tuple):
            return int(batch[0].shape[0])
        if np.issubdtype(batch.dtype, np.integer):
            return _device.module_of(batch).count_nonzero(batch)
        return int(batch.shape[0])


def _as_ids(a, who, name):
    if not np.issubdtype(a.dtype, np.integer):
        raise TypeError(f"{who}: {name} must hold integer ids, got dtype {a.dtype}")
    if a.dtype not in (np.int32, np.int64):
        a = a.astype(np.int64)
    return _device.module_of(a).ascontiguousarray(a)


# ---------------------------------------------------------------------------- the model
class Input:
    """Keras's ``Input(shape=...)`` as the first item of a ``Sequential``: declares the
    per-sample input shape (``(T,)`` for padded ids, ``(features,)`` for features), so the
    model builds without data.  It holds no weights and is not a layer of the model."""

    def __init__(self, shape, dtype=None, name=None):
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (shape,)
        if not isinstance(shape, (tuple, list)) or not all(
                d is None or (isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0) for d in shape):
            raise ValueError(f"Input: argument 'shape' must be a tuple of ints >= 0 (or None), got {shape!r}")
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype, self.name = dtype, name

    def __repr__(self):
        return f"Input(shape={self.shape})"


class Sequential:
    """A stack of layers, trained with an explicit forward / backward pass.

    ``Embedding -> GlobalAveragePooling1D`` runs as one fused ``embedding_bag`` (forward and
    backward) unless ``compile(fuse=False)``.
    """

    def __init__(self, layers=None, name=None, dtype="float32"):
        self.name = name or "sequential"
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise ValueError(f"Sequential: dtype must be float32 or float64, got {dtype!r}")
        self.layers: list[Layer] = []
        self.optimizer = None
        self.loss = None
        self.metrics: list = []
        self.compiled = False
        self.built = False
        self.stop_training = False
        self.history = None
        self.tokenizer = None  # attach a fastscale.text.Tokenizer to have it saved with the model
        self.metadata: dict = {}  # JSON-serialisable extras saved with the model
        self._seed = None
        self._epochs_done = 0
        self._input_shape = None
        self._fuse = True
        self._backend = None
        self._device = None  # "cpu", "gpu", or None: where the inputs are
        self._xp = np  # the array module the weights live in
        self._loss_kw = {}
        for layer in layers or []:
            self.add(layer)

    # A pickle holds the array module by name (a module does not pickle) and leaves out
    # the cached step plan (remade on first use).
    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_plan", None)
        state["_xp"] = self._xp.__name__
        return state

    def __setstate__(self, state):
        state = dict(state)
        state["_xp"] = np if state["_xp"] == "numpy" else importlib.import_module(state["_xp"])
        self.__dict__.update(state)

    # -- construction
    def add(self, layer):
        if isinstance(layer, Input):
            if self.layers or self._input_shape is not None:
                raise ValueError("Sequential.add: an Input can only come first")
            self._input_shape = (None,) + layer.shape
            return
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential.add: expected a fastscale.nn layer, got {type(layer).__name__}")
        if self.built:
            raise ValueError("Sequential.add: the model is already built")
        if layer.name is None:
            base = _snake(type(layer).__name__)
            taken = {l.name for l in self.layers}
            layer.name = base if base not in taken else next(f"{base}_{i}" for i in range(1, 10**6) if f"{base}_{i}" not in taken)
        elif any(l.name == layer.name for l in self.layers):
            raise ValueError(f"Sequential.add: duplicate layer name {layer.name!r}")
        self.layers.append(layer)

    def compile(self, optimizer="adam", loss=None, metrics=None, *, seed=None, backend=None, fuse=True, device=None):
        """``optimizer``: an ``fastscale.optim`` optimizer or its name; ``loss``:
        ``"binary_crossentropy"``, ``"categorical_crossentropy"``,
        ``"sparse_categorical_crossentropy"``, ``"mse"``, ``"mae"`` or a Loss; ``metrics``:
        ``"accuracy"``, ``"auc"``, ``"mse"``, ``"mae"`` (see ``nn.metrics``).  ``seed`` fixes the initial weights and the
        training randomness; ``backend`` is passed to every op; ``fuse=False`` runs
        Embedding and pooling as separate layers (slower; for testing).

        ``device``: ``"gpu"`` keeps weights, optimizer state and data on the GPU as CuPy
        arrays (a built model is moved there now; NumPy inputs are copied there once per
        ``fit`` / ``evaluate`` / ``predict``); ``"cpu"`` keeps everything in NumPy (CuPy inputs
        are then a TypeError); ``None`` (default) starts on the host and moves to the GPU
        when CuPy inputs arrive.  ``backend="cuda"`` or ``"cupy"`` implies ``"gpu"``.
        ``device="gpu"`` without a usable GPU backend raises BackendUnavailableError."""
        if loss is None:
            raise ValueError("compile: a loss is required ('binary_crossentropy', 'categorical_crossentropy', "
                             "'sparse_categorical_crossentropy', 'mse' or 'mae')")
        if not self.layers:
            raise ValueError("compile: the model has no layers")
        from .._backends import CUPY_ORDER, NUMPY_ORDER

        _device.check_device(device, "compile")
        if backend in CUPY_ORDER or backend in NUMPY_ORDER:
            host = backend in NUMPY_ORDER
            if device == ("gpu" if host else "cpu"):
                raise ValueError(f"compile: backend {backend!r} runs on the {'host' if host else 'GPU'}, "
                                 f"not on device={device!r}")
            device = device or (None if host else "gpu")
        xp = None if device is None else _device.module_for(device, "compile")  # raises before any change
        self.optimizer = _optim.get(optimizer)
        self.loss = _losses.get(loss)
        self.metrics = [_metrics.get(m, self.loss.name) for m in (metrics or [])]
        if seed is not None:
            if self.built and seed != self._seed:
                pass  # weights exist already; the seed still drives shuffling and dropout
            self._seed = _check_seed(seed, "compile")
        self._backend = backend
        self._fuse = bool(fuse)
        self._device = device
        self.optimizer.backend = backend
        for layer in self.layers:
            layer.backend = backend
        self._place(xp or self._xp)
        self._configure_grads()
        last = self.layers[-1]
        # Work from the logit when the head's activation matches the loss (stable, and cheaper).
        self._ask_logits = (not self.loss.from_logits and isinstance(last, Dense) and self.loss.head_activation is not None
                            and last.activation == self.loss.head_activation)
        self._loss_logits = self.loss.from_logits or self._ask_logits
        self.compiled = True
        self._make_stages()

    def _configure_grads(self):
        opt = self.optimizer
        sparse = isinstance(opt, _optim.Adam) and opt.lazy or (isinstance(opt, _optim.SGD) and opt.momentum == 0)
        # Dense (Keras) Adam on the cpp backend also takes the table's gradient as SparseRows:
        # adam_step then updates every row without a (V, D) gradient -- the same numbers,
        # bitwise, with less memory traffic.  The other backends would only densify it again.
        sparse = sparse or isinstance(opt, _optim.Adam) and self._xp is np and _resolved_backend(self._backend) == "cpp"
        for layer in self.layers:
            if isinstance(layer, (Embedding, EmbeddingBag)):
                layer.sparse_grad = bool(sparse)

    def _place(self, xp):
        """Keep the weights, gradient buffers and optimizer slots as arrays of ``xp``."""
        if xp is not self._xp:
            for layer in self.layers:
                layer.params = {k: _device.to_module(p, xp) for k, p in layer.params.items()}
                layer.grads = {}
                if hasattr(layer, "_grad_buf"):
                    layer._grad_buf = None
            self._xp = xp
            # On a GPU the targets are checked once per call, up front (_device_targets).
            self._loss_kw = {} if xp is np else {"checked": True}
            if self.compiled:
                self._configure_grads()
            self._make_stages()
        opt = self.optimizer
        if opt is not None:
            opt.slots = {k: {s: _device.to_module(a, xp) for s, a in d.items()} for k, d in opt.slots.items()}

    def _data_module(self, on_gpu, who):
        """The array module for a call whose data is (``on_gpu``) or is not on a GPU: the
        model's, after moving it to the GPU when CuPy data comes to a model with device=None."""
        if on_gpu and self._xp is np:
            if self._device == "cpu":
                raise TypeError(f"{who}: the model was compiled with device='cpu' but got CuPy arrays; pass NumPy "
                                "arrays or compile(device='gpu') (fastscale never moves data between host and device "
                                "behind your back)")
            self._place(sys.modules["cupy"])
        return self._xp

    def _device_targets(self, y, who):
        """``y`` on the model's device; there, every target is checked once, up front, so that
        the loss checks nothing per batch (a check reads a value back from the device)."""
        y = _device.to_module(y, self._xp)
        if self._xp is not np:
            self.loss.check_targets(y, self.output_shape[-1])
        return y

    def build(self, input_shape=None):
        """Create the weights.  ``input_shape`` is ``(None, T)`` for ids, ``(None, F)`` for features;
        models that start with an embedding need none."""
        if self.built:
            return
        if not self.layers:
            raise ValueError("build: the model has no layers")
        first = self.layers[0]
        if input_shape is None:
            input_shape = self._input_shape  # declared by an Input, if any
        if input_shape is None:
            if not isinstance(first, (Embedding, EmbeddingBag)):
                raise ValueError("build: a model that does not start with an embedding needs input_shape=(None, features)")
            input_shape = (None, None)
        if self._seed is None:
            self._seed = int(np.random.SeedSequence().entropy % (2**63))
        rng = np.random.default_rng(self._seed)
        shape = tuple(input_shape)
        self._input_shape = shape
        for layer in self.layers:
            layer.build(shape, rng, self.dtype)
            shape = layer.compute_output_shape(shape)
            if self._xp is not np:  # drawn on the host (the same weights as there), then copied
                layer.params = {k: _device.to_module(p, self._xp) for k, p in layer.params.items()}
        self.built = True
        self._make_stages()

    def _make_stages(self):
        stages, i = [], 0
        while i < len(self.layers):
            layer = self.layers[i]
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if self._fuse and isinstance(layer, Embedding) and isinstance(nxt, GlobalAveragePooling1D):
                stages.append(_FusedEmbeddingPool(layer, nxt))
                i += 2
            else:
                stages.append(layer)
                i += 1
        self._stages = stages

    # -- forward / backward
    def _forward(self, x, training, logits):
        h, mask = x, None
        last = len(self._stages) - 1
        for i, st in enumerate(self._stages):
            if isinstance(st, Dropout):
                seed = self._seed if st.seed is None else st.seed
                st._rng_key = (seed, i, self.optimizer.step if self.optimizer else 0, 0xD0)
            if i == last and logits:
                h, mask = st.forward(h, mask, training=training, logits=True)
            else:
                h, mask = st.forward(h, mask, training=training)
        return h

    def _backward(self, dout):
        d = dout
        for i in range(len(self._stages) - 1, -1, -1):
            d = self._stages[i].backward(d, need_dx=i > 0)
            if d is None and i > 0:
                break

    def _params_and_grads(self):
        """``(name, param, grad)`` of every trainable weight; a regularized weight's gradient
        includes its penalty's (dense, even for an embedding table)."""
        out = []
        for layer in self.layers:
            if layer.trainable:
                for k, p in layer.params.items():
                    g = layer.grads[k]
                    reg = layer.regularizers.get(k)
                    if reg is not None:
                        g = (g.to_dense() if isinstance(g, (ops.SparseRows, PendingRows)) else g) + reg.grad(p)
                    out.append((f"{layer.name}/{k}", p, g))
        return out

    def _penalty(self):
        """The regularizers' penalty on the trainable weights (Keras's regularization losses)."""
        total = 0.0
        for layer in self.layers:
            if layer.trainable:
                for k, reg in layer.regularizers.items():
                    total = total + reg.penalty(layer.params[k])
        return total

    def _probs(self, z):
        """Probabilities from the head's output (logit or probability)."""
        return self.loss.probabilities(z) if self._loss_logits else z

    # -- the public API
    def fit(self, x, y, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, seed=None, on_divergence="raise", class_weight=None,
            sample_weight=None, initial_epoch=0, validation_batch_size=None, validation_freq=1):
        """Train; returns a :class:`History` (``history.history``: loss, metrics, val_* per epoch).

        ``validation_split`` takes the LAST fraction of ``x``/``y`` (before shuffling), as Keras.
        As in Keras, ``initial_epoch`` resumes a run (epochs ``initial_epoch`` to ``epochs - 1``
        are trained, and numbered so in the history and callbacks); ``validation_freq``
        validates every n-th epoch (an int) or after the listed 1-based epochs (a collection);
        ``validation_batch_size`` defaults to ``batch_size``.
        ``sample_weight`` (one non-negative weight per sample) and ``class_weight`` (``{class:
        weight}``, every class of ``y`` present) weight each sample's loss as Keras does: the
        mean over the batch of weight times loss; both together multiply.  The metrics stay
        unweighted, and so does the validation loss but for ``sample_weight``'s share of a
        ``validation_split`` or a third item of ``validation_data`` ``(x, y, sample_weight)``.
        A non-finite loss raises :class:`TrainingDivergedError` naming the epoch and step,
        before that step updates anything (checkpoints already written stay as they are);
        ``on_divergence="warn"`` instead warns (RuntimeWarning), stops training and returns the
        history so far, the weights being those from before the diverging step.

        On a GPU (``compile(device="gpu")`` or CuPy inputs) the loss stays on the device and is
        read once per epoch, so the error comes at the end of the diverging epoch (naming the
        first non-finite step) and the weights then hold that step's and the later updates;
        with ``on_divergence="warn"`` they are put back to those of the start of that epoch
        (a copy of the weights and optimizer state is kept on the device for it).
        """
        self._require_compiled("fit")
        if on_divergence not in ("raise", "warn"):
            raise ValueError(f"fit: on_divergence must be 'raise' or 'warn', got {on_divergence!r}")
        batch_size = _check_batch(batch_size, "fit")
        epochs = _check_int(epochs, "fit", "epochs", lo=0)
        initial_epoch = _check_int(initial_epoch, "fit", "initial_epoch", lo=0)
        val_batch = batch_size if validation_batch_size is None else _check_int(
            validation_batch_size, "fit", "validation_batch_size", lo=1)
        validate_after = _validation_epochs(validation_freq)
        if seed is not None:
            seed = _check_seed(seed, "fit")
            if self._seed is None:
                self._seed = seed
        inputs = _Inputs(x, "fit")
        y = _targets(y, inputs.n, "fit")
        user_sw, sw = _weights(sample_weight, class_weight, y, inputs.n, "fit")
        val, val_sw = None, None
        on_gpu = inputs.on_gpu or _device.is_cupy(y)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("fit: validation_data must be (x_val, y_val) or (x_val, y_val, sample_weight_val)")
            vin = _Inputs(validation_data[0], "fit(validation_data)")
            val = (vin, _targets(validation_data[1], vin.n, "fit(validation_data)"))
            if len(validation_data) == 3:
                val_sw = _sample_weights(validation_data[2], vin.n, "fit(validation_data)")
            on_gpu = on_gpu or vin.on_gpu or _device.is_cupy(val[1])
        elif validation_split:
            vs = float(validation_split)
            if not 0.0 < vs < 1.0:
                raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
            split = int(math.floor(inputs.n * (1.0 - vs)))
            if split < 1 or split >= inputs.n:
                raise ValueError(f"fit: validation_split={vs} of {inputs.n} samples leaves an empty training or validation set")
            if sw is not None:
                # The validation samples keep their sample_weight; class_weight is for training.
                sw, val_sw = sw[:split], None if user_sw is None else user_sw[split:]
            val = (inputs.subset(split, inputs.n), y[split:])
            inputs, y = inputs.subset(0, split), y[:split]
        if inputs.n == 0:
            raise ValueError("fit: no training samples")
        xp = self._data_module(on_gpu, "fit")
        self.build(inputs.shape)
        st = self._stages[0]
        if isinstance(st, _FusedEmbeddingPool) and st.emb.mask_zero:
            inputs = inputs.as_bags(st.emb.input_dim)
            if val is not None:
                val = (val[0].as_bags(st.emb.input_dim), val[1])
        # To the model's device once, before the first epoch (no-ops on the host).
        inputs, y = inputs.to(xp), self._device_targets(y, "fit")
        if val is not None:
            val = (val[0].to(xp), self._device_targets(val[1], "fit(validation_data)"))
        sw = None if sw is None else xp.asarray(sw)
        val_sw = None if val_sw is None else xp.asarray(val_sw)
        train_seed = seed if seed is not None else self._seed
        # The fused step is the host's, and unweighted.
        plan = self._fused_step(inputs, y) if xp is np and sw is None else None
        plan_y = None if plan is None else plan.targets(y)

        history = _callbacks.History()
        cbs = list(callbacks or []) + [history]  # last, as in Keras: it records what the others add to logs
        for cb in cbs:
            if not isinstance(cb, _callbacks.Callback):
                raise TypeError(f"fit: callbacks must be fastscale.nn.callbacks.Callback instances, got {type(cb).__name__}")
            cb.set_model(self)
        steps = -(-inputs.n // batch_size)
        history.params = {"epochs": epochs, "steps": steps, "batch_size": batch_size, "samples": inputs.n}
        mode = _progress_mode(verbose)
        self.stop_training = False
        self.history = history
        for cb in cbs:
            cb.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            for cb in cbs:
                cb.on_epoch_begin(epoch)
            # On a GPU a divergence is seen only at the end of its epoch: "warn" keeps a copy.
            snap = self._state_copy() if xp is not np and on_divergence == "warn" else None
            try:
                logs = self._train_epoch(inputs, y, batch_size, shuffle, train_seed, epoch, epochs, steps, mode, plan,
                                         plan_y, sw)
            except TrainingDivergedError as e:
                if on_divergence == "raise":
                    raise
                if snap is not None:
                    self._state_restore(snap)
                    weights = "from the start of that epoch (on the GPU the loss is checked once per epoch)"
                else:
                    weights = "from before that step"
                warnings.warn(f"{e}; training stopped with the weights {weights}", RuntimeWarning, stacklevel=2)
                self.stop_training = True
                break
            # Read by the monitoring callbacks: a val_* quantity may be absent on such an epoch.
            self._validation_skipped = val is not None and not validate_after(epoch + 1)
            if val is not None and not self._validation_skipped:
                vlogs = self._evaluate(val[0], val[1], val_batch, val_sw, "fit(validation_data)")
                logs.update({f"val_{k}": v for k, v in vlogs.items()})
            self._epochs_done += 1
            history.epoch_stats.append(self._last_epoch_stats)
            if mode:
                _print_epoch(epoch, epochs, logs, mode, self._last_epoch_stats)
            for cb in cbs:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in cbs:
            cb.on_train_end()
        return history

    def _train_epoch(self, inputs, y, batch_size, shuffle, seed, epoch, epochs, steps, mode, plan=None, plan_y=None,
                     sw=None):
        n = inputs.n
        xp = self._xp
        checks = self._device_checks(inputs, "fit")  # before the shuffle: positions as the user gave them
        order = np.random.default_rng((seed, self._epochs_done, 0x5F)).permutation(n) if shuffle else None
        losses = None
        if xp is not np:
            # The shuffle drawn on the host (the same as there), applied as one gather on the
            # device; the batches are then slices, and each step's loss lands in `losses`.
            if order is not None:
                perm = xp.asarray(order)
                inputs, y, order = inputs.permuted(order), y[perm], None
                sw = None if sw is None else sw[perm]
            losses = xp.empty(steps, np.float64)
        for m in self.metrics:
            m.reset()
        acc = next((m for m in self.metrics if m.name == "accuracy"), None)
        total_loss = 0.0
        tokens = 0
        t0 = time.perf_counter()
        bar = _bar(mode, steps, epoch, epochs)
        try:
            with checks:
                for s in range(steps):
                    lo, hi = s * batch_size, min(n, (s + 1) * batch_size)
                    if order is None:
                        xb, yb = inputs.slice(lo, hi), y[lo:hi]
                        wb = None if sw is None else sw[lo:hi]
                    else:
                        idx = order[lo:hi]
                        xb, yb = inputs.take(idx), y[idx]
                        wb = None if sw is None else sw[idx]
                    where = f"fit: the loss became {{}} at epoch {epoch + 1}/{epochs}, step {s + 1}/{steps}"
                    if plan is not None:
                        loss, z = plan.step(xb[0], xb[1], plan_y[lo:hi] if order is None else plan_y[idx], where)
                    else:
                        loss, z = self._step(xb, yb, where, sync=losses is None, wb=wb)
                    if losses is not None:
                        losses[s] = loss
                    total_loss += loss * (hi - lo)  # a device scalar on a GPU
                    tokens += _Inputs.tokens(xb)
                    if self.metrics:
                        p = self._probs(z)
                        for m in self.metrics:
                            m.update(yb, p)
                    if bar is not None:
                        bar.update(1)
                        if s % 8 == 0 or s == steps - 1:  # on a GPU, a read-back per refresh
                            dt = time.perf_counter() - t0
                            post = {"loss": f"{float(total_loss) / hi:.4f}"}  # hi = samples seen so far
                            if acc is not None:
                                post["accuracy"] = f"{acc.result():.4f}"
                            post["tok/s"] = f"{int(tokens) / max(dt, 1e-9):.3g}"
                            bar.set_postfix(post, refresh=False)
            total_loss = float(total_loss)  # on a GPU: the epoch's read-back, waiting for its last step
        finally:
            if bar is not None:
                bar.close()
        if losses is not None and not math.isfinite(total_loss):
            self._diverged(losses, epoch, epochs, steps)
        dt = time.perf_counter() - t0
        tokens = int(tokens)
        logs = {"loss": total_loss / n}
        for m in self.metrics:
            logs[m.name] = m.result()
        self._last_epoch_stats = {"seconds": dt, "tokens": tokens, "tokens_per_s": tokens / max(dt, 1e-9)}
        return logs

    def _diverged(self, losses, epoch, epochs, steps):
        """Raise TrainingDivergedError for the first non-finite loss of an epoch on a GPU."""
        host = _device.to_host(losses)
        bad = np.flatnonzero(~np.isfinite(host))
        s = int(bad[0]) if bad.size else steps - 1
        update = self.optimizer.step - steps + s + 1
        raise TrainingDivergedError(
            f"fit: the loss became {host[s]} at epoch {epoch + 1}/{epochs}, step {s + 1}/{steps} (update {update} of "
            "this model; on the GPU the loss is checked at the end of the epoch, so the weights hold that step's and "
            "the later updates); lower the learning rate or check the inputs for NaN/inf"
        )

    def _device_checks(self, inputs, who):
        """The input checks of a loop of ops over ``inputs``, as a context for the loop.  On
        the host, the ops' own (in their kernels).  On a GPU, deferred
        (``_device.deferred_checks``: read at the next synchronising op), and the ids and CSR
        offsets checked here, now, once and whole, so that no op reads a batch's back from the
        device (the ``cupy`` backend's checks would, every op of every step) and the error
        names the sample as the user gave it."""
        if self._xp is np:
            return contextlib.nullcontext()
        V = self._id_rows()
        checked = V is not None and inputs.is_ids
        if checked and inputs.ids_checked != V:  # fit's epochs and validations reuse their inputs
            if inputs.csr is not None:
                C.check_offsets(who, inputs.csr[1], inputs.csr[0].shape[0])
                C.check_ids_range(who, "ids", inputs.csr[0], V)
            else:
                C.check_ids_range(who, "x", inputs.arr, V)
            inputs.ids_checked = V
        return self._device_loop(checked)

    @contextlib.contextmanager
    def _device_loop(self, ids_checked):
        with contextlib.ExitStack() as stack:
            if ids_checked:
                stack.enter_context(C.ids_checked())
            stack.enter_context(_device.deferred_checks(self._xp))
            yield

    def _id_rows(self):
        """The number of rows of the table the inputs index (None: the model takes no ids)."""
        first = self._stages[0] if self._stages else None
        if isinstance(first, _FusedEmbeddingPool):
            return first.emb.input_dim
        return first.input_dim if isinstance(first, (Embedding, EmbeddingBag)) else None

    def _state_copy(self):
        opt = self.optimizer
        return ([{k: p.copy() for k, p in layer.params.items()} for layer in self.layers], opt.get_state())

    def _state_restore(self, snap):
        weights, state = snap
        for layer, saved in zip(self.layers, weights):
            for k, p in layer.params.items():
                p[...] = saved[k]
        self.optimizer.set_state(state)

    def _step(self, xb, yb, where, sync=True, wb=None):
        """One update: forward, loss, backward, optimizer; returns (loss, head output).  A
        non-finite loss raises before anything is updated (``where`` names the step); on a GPU
        with ``sync=False`` the loss is not read back (nor checked) here.  ``wb``: the samples'
        weights, or None."""
        # A diverging run is reported once, by the check below, not by NumPy warnings.
        with np.errstate(over="ignore", invalid="ignore"):
            z = self._forward(xb, training=True, logits=self._ask_logits)
            loss, dz = self._loss(yb, z, wb)
            if self._regularized:
                loss = loss + self._penalty()
        if sync and not math.isfinite(loss):
            raise TrainingDivergedError(
                where.format(float(loss)) + f" (update {self.optimizer.step + 1} of this model); lower the learning "
                "rate or check the inputs for NaN/inf"
            )
        self._backward(dz)
        self.optimizer.apply(self._params_and_grads())
        return loss, z

    def train_on_batch(self, x, y, return_dict=False, sample_weight=None, class_weight=None):
        """One gradient update on one batch (Keras's ``train_on_batch``): returns the batch's
        loss, or ``[loss, *metrics]`` (a dict with ``return_dict``), computed before the update.
        ``sample_weight`` / ``class_weight`` as in ``fit``."""
        self._require_compiled("train_on_batch")
        inputs = _Inputs(x, "train_on_batch")
        y = _targets(y, inputs.n, "train_on_batch")
        if inputs.n == 0:
            raise ValueError("train_on_batch: no samples")
        sw = _weights(sample_weight, class_weight, y, inputs.n, "train_on_batch")[1]
        xp = self._data_module(inputs.on_gpu or _device.is_cupy(y), "train_on_batch")
        self.build(inputs.shape)
        inputs, y = inputs.to(xp), self._device_targets(y, "train_on_batch")
        sw = None if sw is None else xp.asarray(sw)
        xb = inputs.csr if inputs.csr is not None else inputs.arr
        plan = self._fused_step(inputs, y) if xp is np and sw is None else None
        if plan is not None:
            # The fit's fused step, kept across calls while the model stays the same.
            loss, z = plan.step(xb[0], xb[1], plan.targets(y), "train_on_batch: the loss became {}")
        else:
            with self._device_checks(inputs, "train_on_batch"):
                loss, z = self._step(xb, y, "train_on_batch: the loss became {}", wb=sw)  # reads the loss back: it is returned
        logs = {"loss": float(loss)}
        if self.metrics:
            p = self._probs(z)
            for m in self.metrics:
                m.reset()
                m.update(y, p)
                logs[m.name] = m.result()
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def _fused_step(self, inputs, y):
        """The FusedStep that trains this data (fit, train_on_batch), or None: made once, and
        again whenever the model no longer matches it."""
        plan = self.__dict__.get("_plan")
        if plan is None or not plan.valid_for(self):
            plan = self._plan = _FusedStep.for_model(self)
        return plan if plan is not None and plan.accepts(inputs, y) else None

    def _loss(self, yb, z, wb=None):
        """(loss, d loss / d z) of one batch, weighted by ``wb`` when given."""
        if wb is None:
            return self.loss(yb, z, self._loss_logits, backend=self._backend, **self._loss_kw)
        return self.loss.weighted(yb, z, self._loss_logits, wb, backend=self._backend, **self._loss_kw)

    def _evaluate(self, inputs, y, batch_size, sw=None, who="evaluate"):
        for m in self.metrics:
            m.reset()
        total = 0.0
        with self._device_checks(inputs, who):
            for lo in range(0, inputs.n, batch_size):
                hi = min(inputs.n, lo + batch_size)
                xb, yb = inputs.slice(lo, hi), y[lo:hi]
                z = self._forward(xb, training=False, logits=self._ask_logits)
                loss, _ = self._loss(yb, z, None if sw is None else sw[lo:hi])
                total += loss * (hi - lo)  # a device scalar on a GPU
                if self.metrics:
                    p = self._probs(z)
                    for m in self.metrics:
                        m.update(yb, p)
            total = float(total)
        logs = {"loss": total / max(inputs.n, 1) + (float(self._penalty()) if self._regularized else 0.0)}
        for m in self.metrics:
            logs[m.name] = m.result()
        return logs

    def evaluate(self, x, y, batch_size=None, verbose="auto", return_dict=False, sample_weight=None):
        """Loss and metrics on ``(x, y)``: ``loss`` alone, or ``[loss, *metrics]`` (or a dict).
        ``sample_weight`` weights the loss as in ``fit``."""
        self._require_compiled("evaluate")
        batch_size = _check_batch(batch_size, "evaluate")
        return self._evaluate_inputs(_Inputs(x, "evaluate"), y, batch_size, verbose, return_dict, sample_weight,
                                     "evaluate")

    def _evaluate_inputs(self, inputs, y, batch_size, verbose, return_dict, sample_weight, who):
        """``evaluate`` once ``x`` is read (``batch_size`` None: all of it in one batch)."""
        y = _targets(y, inputs.n, who)
        sw = _sample_weights(sample_weight, inputs.n, who)
        xp = self._data_module(inputs.on_gpu or _device.is_cupy(y), who)
        self.build(inputs.shape)
        inputs, y = inputs.to(xp), self._device_targets(y, who)
        t0 = time.perf_counter()
        logs = self._evaluate(inputs, y, batch_size or max(1, inputs.n), None if sw is None else xp.asarray(sw), who)
        if _progress_mode(verbose):
            print(f"{who}: {inputs.n} samples - {time.perf_counter() - t0:.2f}s - "
                  + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()), flush=True)
        if return_dict:
            return logs
        vals = list(logs.values())
        return vals[0] if len(vals) == 1 else vals

    def predict(self, x, batch_size=None, verbose=0):
        """The model's outputs: probabilities ``(N, 1)`` (sigmoid head) or ``(N, classes)``
        (softmax), as NumPy arrays, or CuPy arrays for a model on the GPU."""
        batch_size = _check_batch(batch_size, "predict")
        return self._predict(_Inputs(x, "predict"), batch_size)

    def _predict(self, inputs, batch_size):
        """``predict`` once ``x`` is read (``batch_size`` None: all of it in one batch)."""
        xp = self._data_module(inputs.on_gpu, "predict")
        self.build(inputs.shape)
        inputs = inputs.to(xp)
        batch_size = batch_size or max(1, inputs.n)
        outs = []
        with self._device_checks(inputs, "predict"):
            for lo in range(0, inputs.n, batch_size):
                outs.append(self._forward(inputs.slice(lo, min(inputs.n, lo + batch_size)), training=False,
                                          logits=False))
        if not outs:
            return xp.zeros((0,) + tuple(self.output_shape[1:]), self.dtype)
        return xp.concatenate(outs)

    def __call__(self, x):
        return self._predict(_Inputs(x, "call"), None)

    def predict_on_batch(self, x):
        """``predict`` of one batch (Keras's ``predict_on_batch``)."""
        return self._predict(_Inputs(x, "predict_on_batch"), None)

    def test_on_batch(self, x, y, sample_weight=None, return_dict=False):
        """``evaluate`` of one batch (Keras's ``test_on_batch``): the loss, or ``[loss, *metrics]``."""
        self._require_compiled("test_on_batch")
        return self._evaluate_inputs(_Inputs(x, "test_on_batch"), y, None, 0, return_dict, sample_weight, "test_on_batch")

    def get_layer(self, name=None, index=None):
        """A layer by name or by position, as Keras's ``get_layer``."""
        if (name is None) == (index is None):
            raise ValueError("get_layer: give exactly one of name and index")
        if index is not None:
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -len(self.layers) <= index < len(self.layers):
                raise ValueError(f"get_layer: index must be an int in [0, {len(self.layers)}), got {index!r}")
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ValueError(f"get_layer: no layer named {name!r}; the layers are {[l.name for l in self.layers]}")

    # -- weights
    def get_weights(self):
        """Copies of the weights, in the model's array module (CuPy for a model on the GPU)."""
        return [p.copy() for layer in self.layers for p in layer.params.values()]

    def set_weights(self, weights):
        self._require_built("set_weights")
        weights = list(weights)
        n = sum(len(layer.params) for layer in self.layers)
        if len(weights) != n:
            raise ValueError(f"set_weights: the model has {n} weight arrays, got {len(weights)}")
        i = 0
        for layer in self.layers:
            k = len(layer.params)
            layer.set_weights(weights[i : i + k])
            i += k

    @property
    def weights(self):
        return [p for layer in self.layers for p in layer.params.values()]

    @property
    def output_shape(self):
        self._require_built("output_shape")
        shape = self._input_shape
        for layer in self.layers:
            shape = layer.compute_output_shape(shape)
        return shape

    def count_params(self):
        return sum(layer.count_params() for layer in self.layers)

    def summary(self, print_fn=print):
        """Layers, output shapes and parameter counts, as Keras prints them."""
        if not self.built:
            try:
                self.build()
            except ValueError:
                pass
        rows = []
        shape = self._input_shape
        fused = {id(st.emb) for st in getattr(self, "_stages", []) if isinstance(st, _FusedEmbeddingPool)}
        for layer in self.layers:
            out = "?" if shape is None else str(tuple(shape := layer.compute_output_shape(shape)))
            note = " *" if id(layer) in fused else ""
            rows.append((f"{layer.name} ({type(layer).__name__}){note}", out, str(layer.count_params() if self.built else "?")))
        w = [max(len(h), *(len(r[i]) for r in rows)) + 2 for i, h in enumerate(("Layer (type)", "Output Shape", "Param #"))]
        line = "-" * sum(w)
        print_fn(f'Model: "{self.name}"')
        print_fn(line)
        print_fn("".join(h.ljust(w[i]) for i, h in enumerate(("Layer (type)", "Output Shape", "Param #"))))
        print_fn("=" * sum(w))
        for r in rows:
            print_fn("".join(c.ljust(w[i]) for i, c in enumerate(r)))
        print_fn("=" * sum(w))
        if self.built:
            total = self.count_params()
            trainable = sum(l.count_params() for l in self.layers if l.trainable)
            print_fn(f"Total params: {total:,}")
            print_fn(f"Trainable params: {trainable:,}")
            print_fn(f"Non-trainable params: {total - trainable:,}")
        if fused:
            print_fn("* Embedding + GlobalAveragePooling1D run fused as one embedding_bag")

    # -- save / load
    def save(self, path):
        """Write weights, optimizer state, tokenizer and config to one file, atomically."""
        from .saving import save_model

        save_model(self, path)

    def get_config(self):
        return {
            "name": self.name,
            "dtype": self.dtype.name,
            "layers": [to_identifier(l) for l in self.layers],
        }

    @property
    def _regularized(self):
        return any(layer.trainable and layer.regularizers for layer in self.layers)

    def _require_compiled(self, who):
        if not self.compiled:
            raise RuntimeError(f"{who}: call model.compile(optimizer=..., loss=...) first")

    def _require_built(self, who):
        if not self.built:
            raise RuntimeError(f"{who}: the model has no weights yet (call build, fit or predict first)")

    def __repr__(self):
        return f"Sequential([{', '.join(map(repr, self.layers))}])"


# ---------------------------------------------------------------------------- helpers
def _resolved_backend(backend):
    """The backend the ops will run on numpy arrays: the one asked for, else the first usable."""
    import os

    from .._backends import status

    backend = backend or os.environ.get("FASTSCALE_BACKEND") or None
    if backend is not None:
        return backend
    # In order, stopping at the first usable one: probing numba too would import it (~0.3 s).
    return next((n for n in ("cpp", "numba", "numpy") if status(n) is None), None)


def _check_seed(seed, who):
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{who}: seed must be an int >= 0 or None, got {seed!r}")
    return int(seed)


def _check_int(v, who, name, lo):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{who}: {name} must be an int >= {lo}, got {v!r}")
    return int(v)


def _validation_epochs(freq):
    """fit's validation_freq as a test of the 1-based epoch number (Keras's meaning)."""
    if isinstance(freq, (int, np.integer)) and not isinstance(freq, bool):
        if freq < 1:
            raise ValueError(f"fit: validation_freq must be an int >= 1 or a collection of epochs, got {freq!r}")
        return lambda e: e % int(freq) == 0
    try:
        epochs = set(freq)
    except TypeError:
        raise TypeError(f"fit: validation_freq must be an int >= 1 or a collection of epochs, got "
                        f"{type(freq).__name__}") from None
    if not all(isinstance(e, (int, np.integer)) and not isinstance(e, bool) and e >= 1 for e in epochs):
        raise ValueError(f"fit: validation_freq's epochs must be ints >= 1 (1-based, as in Keras), got {freq!r}")
    return lambda e: e in epochs


def _check_batch(batch_size, who):
    return _DEFAULT_BATCH if batch_size is None else _check_int(batch_size, who, "batch_size", 1)


def _targets(y, n, who):
    if y is None:
        raise ValueError(f"{who}: targets y are required")
    y = y if _device.is_cupy(y) else np.asarray(y)
    if y.shape[0] != n:
        raise ValueError(f"{who}: x has {n} samples but y has {y.shape[0]}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == bool):
        raise TypeError(f"{who}: y must be numeric, got dtype {y.dtype}")
    return y


def _sample_weights(sample_weight, n, who):
    """``sample_weight`` checked, as float64 ``(n,)`` on the host, or None."""
    if sample_weight is None:
        return None
    w = _device.to_host(sample_weight) if _device.is_cupy(sample_weight) else np.asarray(sample_weight)
    if not (np.issubdtype(w.dtype, np.number) or w.dtype == bool):
        raise TypeError(f"{who}: sample_weight must be numeric, got dtype {w.dtype}")
    if w.shape not in ((n,), (n, 1)):
        raise ValueError(f"{who}: sample_weight must have shape ({n},), one weight per sample, got {w.shape}")
    w = w.astype(np.float64).reshape(n)
    if not (np.isfinite(w).all() and (w >= 0).all()):
        bad = int(np.flatnonzero(~(np.isfinite(w) & (w >= 0)))[0])
        raise ValueError(f"{who}: sample_weight must be finite and >= 0, got sample_weight[{bad}] = {w[bad]}")
    return w


def _weights(sample_weight, class_weight, y, n, who):
    """``(sample_weight checked, the samples' weights)`` as float64 ``(n,)`` on the host (or
    None): the weights are sample_weight times the class weight of each sample's class."""
    w = _sample_weights(sample_weight, n, who)
    cw = _class_weights(class_weight, y, n, who)
    return w, (cw if w is None else w if cw is None else w * cw)


def _class_weights(class_weight, y, n, who):
    """Each sample's ``class_weight[its class]`` as float64 ``(n,)`` on the host, or None."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, dict):
        raise TypeError(f"{who}: class_weight must be a dict {{class: weight}}, got {type(class_weight).__name__}")
    yh = _device.to_host(y) if _device.is_cupy(y) else np.asarray(y)
    cls = yh.argmax(axis=1) if yh.ndim == 2 and yh.shape[1] > 1 else yh.reshape(n)
    if cls.size and not np.array_equal(cls, np.round(cls)):
        raise ValueError(f"{who}: class_weight needs class labels (integers, or one-hot rows), got non-integer targets")
    cls = cls.astype(np.int64)
    present = np.unique(cls)
    table = {}
    for k, v in class_weight.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise TypeError(f"{who}: class_weight keys must be int class labels, got {k!r}")
        if not (isinstance(v, (int, float, np.number)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{who}: class_weight[{k}] must be a finite number >= 0, got {v!r}")
        table[int(k)] = float(v)
    missing = [int(c) for c in present if int(c) not in table]
    if missing:
        raise ValueError(f"{who}: class_weight has no weight for class(es) {missing} present in y")
    lut = np.zeros(int(present.max()) + 1 if present.size else 0, np.float64)
    for c in present:
        lut[c] = table[int(c)]
    return lut[cls] if present.size else np.zeros(0)


def _progress_mode(verbose):
    """0: silent; "bar": tqdm bar; "line": one line per epoch."""
    if verbose in (0, False):
        return 0
    if verbose == 2:
        return "line"
    if verbose not in ("auto", 1, True):
        raise ValueError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
    if getattr(sys.stdout, "isatty", lambda: False)():
        try:
            import tqdm  # noqa: F401

            return "bar"
        except ImportError:
            pass
    return "line"


def _bar(mode, steps, epoch, epochs):
    if mode != "bar":
        return None
    from tqdm import tqdm

    return tqdm(total=steps, desc=f"Epoch {epoch + 1}/{epochs}", unit="step", file=sys.stdout, leave=True,
                dynamic_ncols=True)


def _print_epoch(epoch, epochs, logs, mode, st):
    stats = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
    speed = f"{st['seconds']:.2f}s - {st['tokens_per_s']:,.0f} tokens/s"
    if mode == "line":
        print(f"Epoch {epoch + 1}/{epochs} - {speed} - {stats}", flush=True)
    else:  # under the epoch's bar
        print(f"  {speed} - {stats}", flush=True)
