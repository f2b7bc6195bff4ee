"""A diverging run stops with an error naming the step (or a warning on request), keeping the
last good checkpoint."""
import numpy as np
import pytest

from fastscale import nn, optim


def _model(lr):
    model = nn.Sequential([nn.Embedding(50, 8, mask_zero=True), nn.GlobalAveragePooling1D(),
                           nn.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optim.SGD(learning_rate=lr), loss="binary_crossentropy", seed=0)
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.integers(1, 50, (64, 5)).astype(np.int32), (rng.random(64) > 0.5).astype(np.float32)


class _BlowUp(nn.callbacks.Callback):
    """After the first epoch, makes the weights overflow so that the next loss is not finite."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            w = self.model.get_weights()
            w[-2][...] = 3e38
            self.model.set_weights(w)


def test_divergence_raises_naming_the_step_and_keeps_the_checkpoint(tmp_path):
    x, y = _data()
    model = _model(0.1)
    ckpt = str(tmp_path / "last.fsm")
    with pytest.raises(nn.TrainingDivergedError, match=r"epoch 2/3, step \d+/4"):
        model.fit(x, y, epochs=3, batch_size=16, verbose=0,
                  callbacks=[nn.callbacks.ModelCheckpoint(ckpt), _BlowUp()])
    good = nn.load_model(ckpt)  # written after epoch 1, before the weights blew up
    assert all(np.all(np.isfinite(w)) for w in good.get_weights())


def test_divergence_can_be_a_warning():
    x, y = _data()
    model = _model(0.1)
    with pytest.warns(RuntimeWarning, match="training stopped"):
        history = model.fit(x, y, epochs=3, batch_size=16, verbose=0, callbacks=[_BlowUp()], on_divergence="warn")
    assert len(history.history["loss"]) == 1
    with pytest.raises(ValueError, match="on_divergence"):
        model.fit(x, y, on_divergence="ignore")
