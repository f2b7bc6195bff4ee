"""Callbacks, as in Keras: History, EarlyStopping, ModelCheckpoint, LearningRateScheduler,
ReduceLROnPlateau.

``fit`` calls ``on_train_begin``, then per epoch ``on_epoch_begin`` / ``on_epoch_end(epoch,
logs)`` (``logs``: loss, metrics, val_loss, val_metrics of that epoch), then
``on_train_end``.  A callback stops training by setting ``model.stop_training = True``.
"""
from __future__ import annotations

import math
import os


class Callback:
    def __init__(self):
        self.model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_train_batch_end(self, batch, logs=None):
        pass


class History(Callback):
    """Returned by ``fit``: ``history`` maps each logged quantity to its per-epoch list."""

    def __init__(self):
        super().__init__()
        self.history: dict[str, list] = {}
        self.epoch: list[int] = []
        self.params: dict = {}
        # per epoch: training seconds (validation excluded), real tokens seen, tokens/s
        self.epoch_stats: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _mode(monitor, mode, who):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: argument 'mode' must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if any(k in monitor for k in ("acc", "auc")) else "min"
    return mode


class _Monitor(Callback):
    def __init__(self, monitor, mode, min_delta, who):
        super().__init__()
        self.monitor = monitor
        self.mode = _mode(monitor, mode, who)
        self.min_delta = abs(float(min_delta))
        self._who = who

    def _better(self, current, best):
        if best is None:
            return True
        if self.mode == "min":
            return current < best - self.min_delta
        return current > best + self.min_delta

    def _current(self, logs):
        """The monitored value, or None on an epoch that fit's validation_freq did not
        validate (the callback then skips the epoch, as Keras's do)."""
        value = (logs or {}).get(self.monitor)
        if value is None:
            if self.monitor.startswith("val_") and getattr(self.model, "_validation_skipped", False):
                return None
            raise ValueError(
                f"{self._who}: monitored quantity {self.monitor!r} is not logged; available: {sorted(logs or {})} "
                "(val_* needs validation_split or validation_data)"
            )
        return float(value)


class EarlyStopping(_Monitor):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras semantics).

    ``restore_best_weights=True`` puts back the weights of the best epoch when training ends.
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__(monitor, mode, min_delta, "EarlyStopping")
        self.patience = int(patience)
        self.verbose = verbose
        self.baseline = baseline
        self.restore_best_weights = bool(restore_best_weights)
        self.start_from_epoch = int(start_from_epoch)

    def on_train_begin(self, logs=None):
        self.wait = 0
        self.stopped_epoch = 0
        self.best = None
        self.best_weights = None
        self.best_epoch = 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        if current is None or epoch < self.start_from_epoch or not math.isfinite(current):
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights = self.model.get_weights()
        self.wait += 1
        if self._better(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            if self.baseline is None or self._better(current, float(self.baseline)):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(_Monitor):
    """Save the model (``model.save``) after each epoch, or only when ``monitor`` improves.

    ``filepath`` may hold ``{epoch}`` and logged names, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.fsm"``.
    """

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, mode="auto", min_delta=0.0):
        super().__init__(monitor, mode, min_delta, "ModelCheckpoint")
        self.filepath = os.fspath(filepath)
        self.verbose = verbose
        self.save_best_only = bool(save_best_only)
        self.best = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_best_only:
            current = self._current(logs)
            if current is None or not (math.isfinite(current) and self._better(current, self.best)):
                return
            if self.verbose:
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {self.best} to {current:.5f}, saving model to {path}")
            self.best = current
        elif self.verbose:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        self.model.save(path)


def _set_lr(model, lr, who):
    try:
        v = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"{who}: the learning rate must be a number, got {type(lr).__name__}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{who}: the learning rate must be finite and > 0, got {lr!r}")
    model.optimizer.learning_rate = v
    return v


class LearningRateScheduler(Callback):
    """At the start of each epoch, ``learning_rate = schedule(epoch, learning_rate)`` (epoch
    counted from 0, as in Keras); the rate in use is logged as ``learning_rate``."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable, got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = _set_lr(self.model, self.schedule(epoch, self.model.optimizer.learning_rate), "LearningRateScheduler")
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class ReduceLROnPlateau(_Monitor):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for
    ``patience`` epochs, then wait ``cooldown`` epochs; never below ``min_lr`` (Keras semantics).
    The rate in use is logged as ``learning_rate``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4, cooldown=0,
                 min_lr=0.0):
        super().__init__(monitor, mode, min_delta, "ReduceLROnPlateau")
        if not 0.0 < float(factor) < 1.0:
            raise ValueError(f"ReduceLROnPlateau: argument 'factor' must be in (0, 1), got {factor!r}")
        self.factor = float(factor)
        self.patience = int(patience)
        self.verbose = verbose
        self.cooldown = int(cooldown)
        self.min_lr = float(min_lr)

    def on_train_begin(self, logs=None):
        self.best = None
        self.wait = 0
        self.cooldown_counter = 0

    def on_epoch_end(self, epoch, logs=None):
        current = self._current(logs)
        opt = self.model.optimizer
        if current is None:  # not validated this epoch: nothing to compare, no cooldown step
            if logs is not None:
                logs["learning_rate"] = opt.learning_rate
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if math.isfinite(current) and self._better(current, self.best):
            self.best = current
            self.wait = 0
        elif self.cooldown_counter == 0:
            self.wait += 1
            if self.wait >= self.patience and opt.learning_rate > self.min_lr:
                new = max(opt.learning_rate * self.factor, self.min_lr)
                _set_lr(self.model, new, "ReduceLROnPlateau")
                if self.verbose:
                    print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                self.cooldown_counter = self.cooldown
                self.wait = 0
        if logs is not None:
            logs["learning_rate"] = opt.learning_rate
