"""LearningRateScheduler and ReduceLROnPlateau: Keras's schedules, step by step, and in fit."""
import math

import numpy as np
import pytest

from fastscale import nn, optim


class _Model:
    def __init__(self, lr):
        self.optimizer = optim.Adam(lr)
        self.stop_training = False


def _drive(cb, values, lr=1.0, monitor="val_loss"):
    """The learning rate after each epoch whose monitored value is values[epoch]."""
    model = _Model(lr)
    cb.set_model(model)
    cb.on_train_begin()
    out = []
    for e, v in enumerate(values):
        cb.on_epoch_begin(e)
        logs = {monitor: v}
        cb.on_epoch_end(e, logs)
        assert logs["learning_rate"] == model.optimizer.learning_rate
        out.append(model.optimizer.learning_rate)
    return out


def test_reduce_on_plateau_patience_cooldown_min_lr():
    # Keras: improvement resets the wait; `patience` epochs without one multiply by `factor`;
    # then `cooldown` epochs whose wait is reset (Keras's order: the epoch that ends the
    # cooldown already counts); never below min_lr.  Traced by hand through Keras's code.
    cb = nn.ReduceLROnPlateau(factor=0.5, patience=2, cooldown=1, min_lr=0.2, min_delta=0.0)
    lrs = _drive(cb, [5, 4, 4, 4, 4, 4, 4, 4, 3, 3, 3])
    assert lrs == [1, 1, 1, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2, 0.2, 0.2]
    cb = nn.ReduceLROnPlateau(factor=0.5, patience=1, cooldown=2, min_delta=0.0)
    assert _drive(cb, [3, 3, 3, 3, 3, 3]) == [1, 0.5, 0.5, 0.25, 0.25, 0.125]
    # mode max for accuracies; min_delta counts
    cb = nn.ReduceLROnPlateau(monitor="val_accuracy", factor=0.1, patience=1, min_delta=0.05)
    lrs = _drive(cb, [0.5, 0.52, 0.6, 0.6], monitor="val_accuracy")
    assert lrs == pytest.approx([1, 0.1, 0.1, 0.01])
    # a NaN is no improvement
    assert _drive(nn.ReduceLROnPlateau(patience=1, factor=0.5), [1.0, math.nan]) == [1.0, 0.5]


def test_scheduler_and_bad_arguments():
    assert _drive(nn.LearningRateScheduler(lambda e, lr: lr if e < 2 else lr * 0.1), [0] * 4) == pytest.approx(
        [1, 1, 0.1, 0.01])
    for bad, exc in [(lambda e, lr: float("nan"), ValueError), (lambda e, lr: -1.0, ValueError),
                     (lambda e, lr: "fast", TypeError)]:
        with pytest.raises(exc, match="LearningRateScheduler: the learning rate must be"):
            _drive(nn.LearningRateScheduler(bad), [0])
    with pytest.raises(TypeError, match="schedule must be callable"):
        nn.LearningRateScheduler(0.1)
    with pytest.raises(ValueError, match=r"'factor' must be in \(0, 1\)"):
        nn.ReduceLROnPlateau(factor=1.5)
    with pytest.raises(ValueError, match="monitored quantity 'val_loss' is not logged"):
        _drive(nn.ReduceLROnPlateau(), [1.0], monitor="loss")


def test_in_fit_the_rate_is_used_and_recorded():
    """The fused step and the layer path both read the optimizer's rate each step."""
    rng = np.random.default_rng(0)
    x = rng.integers(1, 40, (96, 6))
    y = (x[:, 0] > 20).astype(int)

    def run(callbacks, lr=1e-2, epochs=3):
        m = nn.Sequential([nn.Embedding(40, 8), nn.GlobalAveragePooling1D(), nn.Dense(1, activation="sigmoid")])
        m.compile(optimizer=optim.Adam(lr), loss="binary_crossentropy", seed=0)
        h = m.fit(x, y, epochs=epochs, batch_size=16, verbose=0, seed=0, callbacks=callbacks)
        return m, h

    # A schedule that keeps the rate trains exactly as no schedule, and is recorded in the history.
    a, ha = run([])
    b, hb = run([nn.LearningRateScheduler(lambda e, lr: lr)])
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert hb.history["learning_rate"] == [1e-2] * 3 and "learning_rate" not in ha.history
    # Dropping the rate to a tiny value after the first epoch freezes the weights from there on.
    c, _ = run([nn.LearningRateScheduler(lambda e, lr: 1e-2 if e == 0 else 1e-30)])
    d, _ = run([], epochs=1)
    for wc, wd in zip(c.get_weights(), d.get_weights()):
        np.testing.assert_allclose(wc, wd, rtol=1e-6, atol=1e-9)
