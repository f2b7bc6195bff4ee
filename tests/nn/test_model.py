"""Sequential: the DESIGN.md example, fit / evaluate / predict, determinism, inputs, callbacks."""
import io
import math

import numpy as np
import pytest

from fastscale import nn, optim

from .data import binary, padded, sequences


def origin_model(V=200, D=16, H=8, mask_zero=True):
    return nn.Sequential([nn.Embedding(V, D, mask_zero=mask_zero), nn.GlobalAveragePooling1D(),
                          nn.Dense(H, activation="relu"), nn.Dense(1, activation="sigmoid")])


def test_design_example_ports_line_for_line():
    x, y = binary(400, seed=1)
    x_test, y_test = binary(200, seed=2)
    model = nn.Sequential([nn.Embedding(200, 128, mask_zero=True), nn.GlobalAveragePooling1D(),
                           nn.Dense(64, activation="relu"), nn.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optim.Adam(learning_rate=1e-3), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=10, batch_size=64, validation_split=0.2, verbose=0)
    loss, acc = model.evaluate(x_test, y_test, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 10 for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert acc > 0.9 and loss < 0.5
    p = model.predict(x_test)
    assert p.shape == (200, 1) and p.dtype == np.float32 and ((p >= 0) & (p <= 1)).all()
    assert np.mean((p[:, 0] > 0.5) == y_test) == pytest.approx(acc)


def _fit(seed, **kw):
    x, y = binary(300, seed=7)
    m = origin_model(mask_zero=kw.pop("mask_zero", True))
    m.compile(optimizer=kw.pop("optimizer", optim.Adam(learning_rate=3e-3)), loss="binary_crossentropy",
              metrics=["accuracy", "auc"], seed=seed)
    h = m.fit(x, y, epochs=kw.pop("epochs", 2), batch_size=32, validation_split=0.2, verbose=0, **kw)
    return m, h


@pytest.mark.parametrize("lazy", [False, True])
def test_same_seed_same_numbers(lazy):
    m1, h1 = _fit(11, optimizer=optim.Adam(3e-3, lazy=lazy))
    m2, h2 = _fit(11, optimizer=optim.Adam(3e-3, lazy=lazy))
    assert h1.history == h2.history
    for a, b in zip(m1.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(a, b)
    m3, h3 = _fit(12, optimizer=optim.Adam(3e-3, lazy=lazy))
    assert h3.history["loss"] != h1.history["loss"]


def test_fit_seed_alone_makes_it_deterministic():
    x, y = binary(100, seed=3)
    runs = []
    for _ in range(2):
        m = origin_model()
        m.compile(loss="binary_crossentropy")
        runs.append(m.fit(x, y, epochs=2, seed=5, verbose=0).history["loss"])
    assert runs[0] == runs[1]


def test_validation_split_takes_the_last_fraction():
    x, y = binary(200, seed=4)
    m = origin_model()
    m.compile(loss="binary_crossentropy", metrics=["accuracy"], seed=0)
    h = m.fit(x, y, epochs=1, batch_size=16, validation_split=0.25, verbose=0)
    assert h.params["samples"] == 150
    loss, acc = m.evaluate(x[150:], y[150:], verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(loss, rel=1e-6)
    assert h.history["val_accuracy"][0] == pytest.approx(acc)
    h2 = m.fit(x[:150], y[:150], epochs=1, validation_data=(x[150:], y[150:]), verbose=0)
    assert "val_loss" in h2.history


def test_initial_epoch_resumes_a_run_as_keras_does():
    """fit(epochs=2) then fit(epochs=4, initial_epoch=2) is the 4-epoch run, bitwise, and the
    second call numbers its epochs 2 and 3 (history, callbacks, the progress line)."""
    x, y = binary(200, seed=8)
    whole = origin_model()
    whole.compile(loss="binary_crossentropy", metrics=["accuracy"], seed=4)
    h_whole = whole.fit(x, y, epochs=4, batch_size=32, validation_split=0.2, verbose=0)
    parts = origin_model()
    parts.compile(loss="binary_crossentropy", metrics=["accuracy"], seed=4)
    parts.fit(x, y, epochs=2, batch_size=32, validation_split=0.2, verbose=0)
    seen = []

    class Epochs(nn.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    out = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out):
        h = parts.fit(x, y, epochs=4, batch_size=32, validation_split=0.2, verbose=2, initial_epoch=2,
                      callbacks=[Epochs()])
    assert seen == [2, 3] and h.epoch == [2, 3]
    assert "Epoch 3/4" in out.getvalue() and "Epoch 1/4" not in out.getvalue()
    assert h.history["loss"] == h_whole.history["loss"][2:]
    assert h.history["val_accuracy"] == h_whole.history["val_accuracy"][2:]
    for a, b in zip(parts.get_weights(), whole.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert parts.optimizer.step == whole.optimizer.step
    assert parts.fit(x, y, epochs=4, initial_epoch=4, verbose=0).epoch == []  # nothing left to train


@pytest.mark.parametrize("freq, validated", [(1, [0, 1, 2, 3]), (2, [1, 3]), (3, [2]), ([1, 4], [0, 3]),
                                             ((2,), [1]), (range(5, 9), [])])
def test_validation_freq(freq, validated):
    x, y = binary(120, seed=9)
    m = origin_model()
    m.compile(loss="binary_crossentropy", metrics=["accuracy"], seed=1)
    logged = []

    class Logs(nn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if "val_loss" in logs:
                logged.append(epoch)

    h = m.fit(x, y, epochs=4, batch_size=32, validation_split=0.25, validation_freq=freq, verbose=0,
              callbacks=[Logs()])
    assert logged == validated
    assert len(h.history.get("val_loss", [])) == len(validated)


def test_monitors_skip_epochs_validation_freq_skips():
    """EarlyStopping / ModelCheckpoint / ReduceLROnPlateau on val_loss with validation_freq=2
    compare only the validated epochs (Keras's callbacks skip a missing value); a misspelt
    quantity still raises at the first validated epoch."""
    x, y = binary(120, seed=12)
    m = origin_model()
    m.compile(loss="binary_crossentropy", seed=3)
    seen = []

    class Seen(nn.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, "val_loss" in logs, logs.get("learning_rate")))

    stop = nn.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=10.0)  # no epoch improves by 10
    plateau = nn.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=1, factor=0.5, min_delta=10.0)
    h = m.fit(x, y, epochs=8, batch_size=32, validation_split=0.25, validation_freq=2, verbose=0,
              callbacks=[stop, plateau, Seen()])
    # Epoch 1 is the first validated one (the baseline), epoch 3 the first without improvement.
    assert h.epoch == [0, 1, 2, 3] and stop.stopped_epoch == 3
    assert [v for _, v, _ in seen] == [False, True, False, True]
    assert [lr for _, _, lr in seen] == [1e-3, 1e-3, 1e-3, 5e-4]
    m2 = origin_model()
    m2.compile(loss="binary_crossentropy", seed=3)
    with pytest.raises(ValueError, match="monitored quantity 'val_los' is not logged"):
        m2.fit(x, y, epochs=3, validation_split=0.25, validation_freq=2, verbose=0,
               callbacks=[nn.callbacks.EarlyStopping(monitor="val_los")])


def test_validation_batch_size_changes_nothing_but_the_batches():
    x, y = binary(150, seed=10)
    hs = []
    for vbs in (None, 7, 1000):
        m = origin_model()
        m.compile(loss="binary_crossentropy", metrics=["accuracy"], seed=2)
        hs.append(m.fit(x, y, epochs=1, batch_size=32, validation_split=0.3, validation_batch_size=vbs,
                        verbose=0).history)
    for h in hs[1:]:
        assert h["val_loss"] == pytest.approx(hs[0]["val_loss"], rel=1e-5)
        assert h["val_accuracy"] == hs[0]["val_accuracy"] and h["loss"] == hs[0]["loss"]


@pytest.mark.parametrize("kw, exc, match", [
    (dict(initial_epoch=-1), ValueError, "initial_epoch must be an int >= 0"),
    (dict(initial_epoch=1.5), ValueError, "initial_epoch must be an int >= 0"),
    (dict(validation_batch_size=0), ValueError, "validation_batch_size must be an int >= 1"),
    (dict(validation_freq=0), ValueError, "validation_freq must be an int >= 1"),
    (dict(validation_freq=[0, 2]), ValueError, "validation_freq's epochs must be ints >= 1"),
    (dict(validation_freq=1.0), TypeError, "validation_freq must be an int >= 1 or a collection of epochs, got float"),
])
def test_fit_resume_and_validation_arguments_are_checked(kw, exc, match):
    x, y = binary(40, seed=11)
    m = origin_model()
    m.compile(loss="binary_crossentropy")
    with pytest.raises(exc, match=match):
        m.fit(x, y, epochs=1, validation_split=0.25, verbose=0, **kw)


def test_inputs_padded_csr_and_lists_agree():
    seqs, y = sequences(120, seed=5)
    x_pad = padded(seqs)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    x_csr = (np.concatenate(seqs).astype(np.int64), offsets)
    outs = []
    for x in (x_pad, x_csr, [list(s) for s in seqs]):
        m = origin_model()
        m.compile(loss="binary_crossentropy", seed=1)
        m.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=True)
        outs.append(m.predict(x))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(outs[0], outs[2], rtol=1e-4, atol=1e-6)


def test_embedding_bag_model_matches_masked_embedding_model():
    x, y = binary(100, seed=6)
    a = origin_model()
    b = nn.Sequential([nn.EmbeddingBag(200, 16, padding_idx=0), nn.Dense(8, activation="relu"),
                       nn.Dense(1, activation="sigmoid")])
    for m in (a, b):
        m.compile(loss="binary_crossentropy", seed=2)
        m.fit(x, y, epochs=2, verbose=0)
    np.testing.assert_allclose(a.predict(x), b.predict(x), rtol=1e-4, atol=1e-6)


def test_multiclass_softmax_head():
    seqs, y = sequences(600, classes=4, seed=8)
    x = padded(seqs)
    m = nn.Sequential([nn.Embedding(200, 16, mask_zero=True), nn.GlobalAveragePooling1D(), nn.Dense(16, activation="relu"),
                       nn.Dense(4, activation="softmax")])
    m.compile(optimizer=optim.Adam(1e-2), loss="sparse_categorical_crossentropy", metrics=["accuracy", "auc"], seed=0)
    h = m.fit(x[:500], y[:500], epochs=8, verbose=0)
    loss, acc, auc = m.evaluate(x[500:], y[500:], verbose=0)
    assert acc > 0.8 and auc > 0.9 and h.history["loss"][-1] < h.history["loss"][0]
    p = m.predict(x[500:])
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def test_non_sigmoid_head_uses_clipped_probabilities():
    x, y = binary(200, seed=9)
    m = nn.Sequential([nn.Embedding(200, 8, mask_zero=True), nn.GlobalAveragePooling1D(), nn.Dense(1, activation="linear")])
    m.compile(optimizer=optim.Adam(1e-2), loss=nn.losses.BinaryCrossentropy(from_logits=True), metrics=["accuracy"], seed=0)
    h = m.fit(x, y, epochs=5, verbose=0)
    assert h.history["accuracy"][-1] > 0.8


def test_auc_matches_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random((500, 1)), 2).astype(np.float32)  # ties included
    auc = nn.metrics.AUC()
    auc.update(y[:200], p[:200])
    auc.update(y[200:], p[200:])
    assert auc.result() == pytest.approx(sk.roc_auc_score(y, p[:, 0]), rel=1e-12)


def test_non_finite_loss_names_epoch_and_step():
    x, y = binary(100, seed=10)
    m = origin_model()
    m.compile(loss="binary_crossentropy", seed=0)
    m.build()
    w = m.get_weights()
    w[-2][:] = np.inf  # the last kernel
    m.set_weights(w)
    with pytest.raises(FloatingPointError, match=r"epoch 1/2, step 1/"):
        m.fit(x, y, epochs=2, verbose=0)


def test_early_stopping_and_restore_best_weights():
    x, y = binary(200, seed=11)
    m = origin_model()
    m.compile(optimizer=optim.Adam(5e-2), loss="binary_crossentropy", metrics=["accuracy"], seed=0)
    seen = []

    class Spy(nn.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((logs["val_loss"], self.model.get_weights()))

    # monitor loss that cannot improve: min_delta huge -> stops after patience+1 epochs
    es = nn.EarlyStopping(monitor="val_loss", patience=2, min_delta=10.0, restore_best_weights=True)
    h = m.fit(x, y, epochs=20, validation_split=0.2, callbacks=[es, Spy()], verbose=0)
    assert len(h.epoch) == 3 and es.stopped_epoch == 2
    for a, b in zip(m.get_weights(), seen[0][1]):
        np.testing.assert_array_equal(a, b)  # best = first epoch (nothing beat it by 10.0)


def test_model_checkpoint_save_best_only(tmp_path):
    x, y = binary(200, seed=12)
    m = origin_model()
    m.compile(optimizer=optim.Adam(1e-2), loss="binary_crossentropy", metrics=["accuracy"], seed=0)
    ck = nn.ModelCheckpoint(tmp_path / "best.fsm", monitor="val_accuracy", save_best_only=True)
    every = nn.ModelCheckpoint(str(tmp_path / "ep{epoch:02d}.fsm"))
    h = m.fit(x, y, epochs=3, validation_split=0.25, callbacks=[ck, every], verbose=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.fsm", "ep01.fsm", "ep02.fsm", "ep03.fsm"]
    best = nn.load_model(tmp_path / "best.fsm")
    _, acc = best.evaluate(x[150:], y[150:], verbose=0)
    assert acc == pytest.approx(max(h.history["val_accuracy"]))
    with pytest.raises(ValueError, match="val_auc"):
        m.fit(x, y, epochs=1, callbacks=[nn.EarlyStopping(monitor="val_auc")], verbose=0)


def test_progress_one_line_per_epoch_when_not_a_terminal(capsys):
    x, y = binary(64, seed=13)
    m = origin_model()
    m.compile(loss="binary_crossentropy", metrics=["accuracy"], seed=0)
    m.fit(x, y, epochs=3, batch_size=16, verbose="auto")
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and out[0].startswith("Epoch 1/3") and "tokens/s" in out[0] and "accuracy" in out[0]
    m.fit(x, y, epochs=1, verbose=0)
    assert capsys.readouterr().out == ""


def test_progress_bar_on_a_terminal(monkeypatch):
    pytest.importorskip("tqdm")

    class TTY(io.StringIO):
        def isatty(self):
            return True

    buf = TTY()
    monkeypatch.setattr("sys.stdout", buf)
    x, y = binary(64, seed=14)
    m = origin_model()
    m.compile(loss="binary_crossentropy", metrics=["accuracy"], seed=0)
    m.fit(x, y, epochs=1, batch_size=16)
    text = buf.getvalue()
    assert "Epoch 1/1" in text and "4/4" in text and "tok/s" in text and "accuracy" in text


def test_summary_weights_and_errors(capsys):
    m = origin_model()
    with pytest.raises(RuntimeError, match="compile"):
        m.fit(np.zeros((2, 3), np.int32), [0, 1])
    m.compile(loss="binary_crossentropy", seed=0)
    m.summary()
    out = capsys.readouterr().out
    assert "Total params: 3,345" in out and "fused" in out
    w = m.get_weights()
    assert [a.shape for a in w] == [(200, 16), (16, 8), (8,), (8, 1), (1,)]
    with pytest.raises(ValueError, match="5 weight arrays"):
        m.set_weights(w[:2])
    with pytest.raises(ValueError, match="y has 3"):
        m.fit(np.zeros((2, 3), np.int32), [0, 1, 1], verbose=0)
    with pytest.raises(IndexError):
        m.predict(np.full((2, 3), 200, np.int32))
    with pytest.raises(ValueError, match="loss"):
        origin_model().compile(optimizer="adam")


def test_sgd_and_momentum_train():
    for opt in (optim.SGD(0.5), optim.SGD(0.2, momentum=0.9, nesterov=True)):
        x, y = binary(300, seed=15)
        m = origin_model()
        m.compile(optimizer=opt, loss="binary_crossentropy", metrics=["accuracy"], seed=0)
        h = m.fit(x, y, epochs=6, verbose=0)
        assert h.history["loss"][-1] < h.history["loss"][0]
        assert math.isfinite(h.history["loss"][-1])


def test_dropout_in_model_is_deterministic_and_inactive_at_inference():
    x, y = binary(100, seed=16)
    res = []
    for _ in range(2):
        m = nn.Sequential([nn.Embedding(200, 16, mask_zero=True), nn.GlobalAveragePooling1D(), nn.Dropout(0.3),
                           nn.Dense(1, activation="sigmoid")])
        m.compile(loss="binary_crossentropy", seed=0)
        h = m.fit(x, y, epochs=2, verbose=0)
        res.append((h.history["loss"], m.predict(x)))
    assert res[0][0] == res[1][0]
    np.testing.assert_array_equal(res[0][1], res[1][1])
    np.testing.assert_array_equal(m.predict(x), m.predict(x))


def test_train_on_batch_is_one_fit_step():
    """train_on_batch (Keras's API) makes exactly the update fit makes for that batch, and
    reports that batch's loss and metrics from before the update."""
    x, y = binary(64, seed=12)
    a, b = origin_model(), origin_model()
    for m in (a, b):
        m.compile(optimizer=optim.Adam(3e-3), loss="binary_crossentropy", metrics=["accuracy"], seed=4)
    h = a.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    loss, acc = b.train_on_batch(x, y)
    assert loss == pytest.approx(h.history["loss"][0], rel=1e-6)
    assert acc == pytest.approx(h.history["accuracy"][0])
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert wa.tobytes() == wb.tobytes()
    assert set(b.train_on_batch(x, y, return_dict=True)) == {"loss", "accuracy"}
    w = b.get_weights()
    w[-2][:] = np.inf
    b.set_weights(w)
    with pytest.raises(FloatingPointError, match="train_on_batch: the loss became"):
        b.train_on_batch(x, y)


def test_pickle_round_trip_keeps_training_bitwise():
    """A Sequential pickles (scikit-learn's estimators and joblib rely on it), also after
    train_on_batch cached its step plan; the copy trains on exactly as the original."""
    import pickle

    rng = np.random.default_rng(0)
    off = np.arange(0, 33 * 5, 5, dtype=np.int64)
    ids = rng.integers(1, 50, off[-1]).astype(np.int32)
    y = rng.integers(0, 2, 32).astype(np.float32)
    model = nn.Sequential([nn.Embedding(50, 4, mask_zero=True), nn.GlobalAveragePooling1D(),
                           nn.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"], seed=0)
    model.train_on_batch((ids, off), y)
    copy = pickle.loads(pickle.dumps(model))
    for m in (model, copy):
        m.fit((ids, off), y, epochs=2, batch_size=8, seed=1, verbose=0)
        m.train_on_batch((ids, off), y)
    for a, b in zip(model.get_weights(), copy.get_weights()):
        assert a.tobytes() == b.tobytes()
