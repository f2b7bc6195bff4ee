"""The training stack on a GPU (CuPy arrays end to end), and its device API on the host.

The GPU tests are parametrised over the GPU backends and skip with their reason where none
is usable.  The host tests cover the API (``device=``) and run the model's device path with
numpy under another name (``_NumpyAsDevice``): the loop then takes every device branch
(per-epoch gather, losses left unread until the epoch ends, deferred checks, targets checked
up front, dense table gradients) while the arrays stay on the host, so its result must be
bitwise the host path's.
"""
import math

import numpy as np
import pytest

from fastscale import BackendUnavailableError, _backends, nn, optim
from fastscale.nn import _device, losses
from fastscale.nn.model import _Inputs

from .data import binary, sequences

def _origin(V=200, mask_zero=True, dropout=0.0):
    layers = [nn.Embedding(V, 16, mask_zero=mask_zero), nn.GlobalAveragePooling1D(), nn.Dense(8, activation="relu")]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(layers + [nn.Dense(1, activation="sigmoid")])


def _compiled(lazy=False, lr=1e-2, metrics=("accuracy",), **kw):
    m = _origin(mask_zero=kw.pop("mask_zero", True), dropout=kw.pop("dropout", 0.0))
    m.compile(optimizer=optim.Adam(learning_rate=lr, lazy=lazy), loss="binary_crossentropy", metrics=list(metrics),
              seed=3, **kw)
    return m


def _device_bags(x):
    """Padded ids (0 = padding) as CSR bags (ids, offsets) of cupy arrays."""
    import cupy

    return cupy.asarray(x[x != 0]), cupy.asarray(np.concatenate([[0], np.cumsum((x != 0).sum(1))]))


# ---------------------------------------------------------------------------- on a GPU
@pytest.mark.parametrize("lazy, mask_zero, zeros", [(False, True, True), (True, True, True), (True, False, True),
                                                    (True, False, False)])
def test_fit_on_cupy_inputs_matches_numpy_and_stays_on_device(gpu_backend, lazy, mask_zero, zeros):
    """zeros=False: id 0 in 4 samples only, so most lazy steps of an unmasked table leave its
    row 0 (with moments from the others) alone."""
    import cupy

    x, y = binary(256)
    if not zeros:
        x[4:] = np.where(x[4:] == 0, 1 + np.arange(x[4:].size).reshape(x[4:].shape) % 199, x[4:])
    ref = _compiled(lazy, mask_zero=mask_zero)
    h_ref = ref.fit(x, y, epochs=2, batch_size=32, verbose=0)
    dev = _compiled(lazy, mask_zero=mask_zero, backend=gpu_backend)
    h_dev = dev.fit(cupy.asarray(x), cupy.asarray(y), epochs=2, batch_size=32, verbose=0)
    for a, b in zip(ref.get_weights(), dev.get_weights()):
        assert isinstance(b, cupy.ndarray)
        np.testing.assert_allclose(b.get(), a, rtol=1e-4, atol=2e-5)
    for k in h_ref.history:
        assert all(type(v) is float for v in h_dev.history[k])
        np.testing.assert_allclose(h_dev.history[k], h_ref.history[k], rtol=1e-4, atol=1e-5)
    for slots in dev.optimizer.slots.values():
        assert all(isinstance(a, cupy.ndarray) for a in slots.values())
    assert dev.optimizer.step == ref.optimizer.step


@pytest.mark.parametrize("model", ["origin", "origin, lazy adam", "origin unmasked, lazy adam",
                                   "embedding bag, csr, lazy adam", "embedding, flatten, lazy adam"])
def test_a_training_step_reads_nothing_back(gpu_backend, model):
    """No host synchronisation inside a training step: an epoch's device -> host reads (its
    loss, its metrics, the one check of its ids) do not grow with its number of steps, lazy
    Adam's sparse table gradient included (its row count stays on the device)."""
    import cupy

    from .. import emulated_gpu

    if not emulated_gpu.enabled():
        pytest.skip("counting read-backs needs the emulated GPU (FASTSCALE_TEST_EMULATED_GPU=1)")
    lazy = "lazy" in model
    if gpu_backend == "cupy" and lazy:
        pytest.skip("the cupy fallback's sparse gradient is xp.unique, whose size CuPy reads back; without "
                    "one, a lazy step is the cuda backend's")
    if model.startswith("embedding bag"):
        first = [nn.EmbeddingBag(200, 16, mode="mean")]
    elif model.startswith("embedding, flatten"):
        first = [nn.Embedding(200, 4, input_length=12), nn.Flatten()]
    else:
        first = [nn.Embedding(200, 16, mask_zero="unmasked" not in model), nn.GlobalAveragePooling1D()]

    def reads(n):
        m = nn.Sequential(first + [nn.Dense(8, activation="relu"), nn.Dense(1, activation="sigmoid")])
        m.compile(optimizer=optim.Adam(learning_rate=1e-2, lazy=lazy), loss="binary_crossentropy",
                  metrics=["accuracy"], seed=3, backend=gpu_backend)
        x, y = binary(n)
        x = x[:, :12]
        if model.startswith("embedding bag"):
            xd = _device_bags(x)
        else:
            xd = cupy.asarray(x)
        yd = cupy.asarray(y)
        m.fit(xd, yd, epochs=1, batch_size=32, verbose=0, shuffle=False)  # builds, plans, warms up
        before = emulated_gpu.read_backs()
        m.fit(xd, yd, epochs=1, batch_size=32, verbose=0, shuffle=False)
        return emulated_gpu.read_backs() - before

    assert reads(256) == reads(64)  # 8 steps, 2 steps


@pytest.mark.parametrize("csr", [False, True])
def test_bad_ids_on_the_device_raise_before_anything_runs(gpu_backend, csr):
    """On a GPU the ids are checked once, whole, before the loop: the IndexError names the
    sample as given (not a position in some batch), and no weight or slot has moved."""
    import cupy

    x, y = binary(96)
    x[70, 5] = 200  # the table has 200 rows
    if csr:
        xin = _device_bags(x)
        flat = int(np.flatnonzero(x[x != 0] == 200)[0])
        where = rf"ids\[{flat}\]"
    else:
        xin, where = cupy.asarray(x), r"x\[70, 5\]"
    m = _compiled(True, backend=gpu_backend)
    m.build((None, None))
    before = [w.get() for w in m.get_weights()]
    for call in ("fit", "evaluate", "predict"):
        with pytest.raises(IndexError, match=rf"{call}: {where} = 200 is out of range \[0, 200\)"):
            if call == "fit":
                m.fit(xin, cupy.asarray(y), epochs=1, batch_size=32, verbose=0)
            elif call == "evaluate":
                m.evaluate(xin, cupy.asarray(y), verbose=0)
            else:
                m.predict(xin)
    assert m.optimizer.step == 0
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b.get())


def test_fit_checks_the_device_ids_once(gpu_backend, monkeypatch):
    """The whole-input check runs once per fit for the training and once for the validation
    samples, not once per epoch."""
    import cupy

    from fastscale import _checks

    calls = []
    real = _checks.check_ids_range
    monkeypatch.setattr(_checks, "check_ids_range", lambda op, *a: (calls.append(op), real(op, *a))[1])
    x, y = binary(128)
    m = _compiled(backend=gpu_backend)
    m.fit(cupy.asarray(x), cupy.asarray(y), epochs=3, batch_size=32, validation_split=0.25, verbose=0)
    assert [op for op in calls if op.startswith("fit")] == ["fit", "fit(validation_data)"]


def test_bad_offsets_on_the_device_raise_before_anything_runs(gpu_backend):
    import cupy

    ids = cupy.asarray(np.array([1, 2, 3, 4, 5], np.int64))
    off = cupy.asarray(np.array([0, 3, 2, 5], np.int64))
    m = nn.Sequential([nn.EmbeddingBag(10, 4), nn.Dense(1, activation="sigmoid")])
    m.compile(loss="binary_crossentropy", seed=1, backend=gpu_backend)
    with pytest.raises(ValueError, match=r"fit: bad 'offsets': offsets must not decrease, got offsets\[1:3\] = \[3, 2\]"):
        m.fit((ids, off), cupy.asarray(np.array([0, 1, 0], np.float32)), verbose=0)
    assert m.optimizer.step == 0


def test_gpu_check_epochs_run(gpu_backend):
    """benchmarks/bench_gpu.py's two IMDB epochs (the public ops under deferred checks, and
    Sequential.fit on the device), on a small data set: what gpu_check.sh runs on a GPU
    machine, checked wherever a GPU (or the emulated one) is."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    x, y = binary(400)
    data = (x[:, :24], y.astype(np.float32))
    seconds, acc, shape = bench.imdb_epoch(data, gpu_backend)
    assert seconds > 0 and 0.0 <= acc <= 1.0 and shape == data[0].shape
    seconds, acc, wall = bench.sequential_epoch(data, gpu_backend)
    assert 0 < seconds <= wall and 0.0 <= acc <= 1.0


def test_device_gpu_with_numpy_inputs_is_the_cupy_input_run(gpu_backend):
    import cupy

    x, y = binary(256)
    a = _compiled(device="gpu", backend=gpu_backend)
    a.fit(x, y, epochs=1, batch_size=32, verbose=0, validation_split=0.25)
    b = _compiled(backend=gpu_backend)
    b.fit(cupy.asarray(x), cupy.asarray(y), epochs=1, batch_size=32, verbose=0, validation_split=0.25)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert isinstance(wa, cupy.ndarray)
        if gpu_backend == "cuda":  # deterministic kernels (sort + segment reduction): bitwise
            np.testing.assert_array_equal(wa.get(), wb.get())
        else:  # cupy's scatter-add is atomic: the float sums' order, hence the last bits, vary by run
            np.testing.assert_allclose(wa.get(), wb.get(), rtol=1e-5, atol=1e-6)


def test_evaluate_and_predict_on_device(gpu_backend):
    import cupy

    x, y = binary(200)
    m = _compiled(backend=gpu_backend, metrics=("accuracy", "auc"))
    m.fit(cupy.asarray(x), cupy.asarray(y), epochs=1, batch_size=32, verbose=0)
    loss, acc, auc = m.evaluate(cupy.asarray(x), cupy.asarray(y), batch_size=64, verbose=0)
    assert all(type(v) is float for v in (loss, acc, auc))
    p = m.predict(x, batch_size=64)  # numpy inputs to a device model: a device result
    assert isinstance(p, cupy.ndarray) and p.shape == (200, 1)
    ref = _compiled(metrics=("accuracy", "auc"))  # evaluate() returns the loss and these two
    ref.build()
    ref.set_weights([w.get() for w in m.get_weights()])
    np.testing.assert_allclose(p.get(), ref.predict(x, batch_size=64), rtol=1e-5, atol=1e-6)
    rl, ra, rauc = ref.evaluate(x, y, batch_size=64, verbose=0)
    assert math.isclose(loss, rl, rel_tol=1e-5) and abs(acc - ra) <= 1 / 200 and abs(auc - rauc) < 1e-3


def test_save_load_round_trip_from_device(gpu_backend, tmp_path):
    import cupy

    x, y = binary(256)
    xd, yd = cupy.asarray(x), cupy.asarray(y)
    straight = _compiled(backend=gpu_backend)
    straight.fit(xd, yd, epochs=2, batch_size=32, verbose=0)
    m = _compiled(backend=gpu_backend)
    m.fit(xd, yd, epochs=1, batch_size=32, verbose=0)
    m.save(tmp_path / "m.fsm")
    on_host = nn.load_model(tmp_path / "m.fsm")
    for a, b in zip(m.get_weights(), on_host.get_weights()):
        assert type(b) is np.ndarray
        np.testing.assert_array_equal(a.get(), b)
    back = nn.load_model(tmp_path / "m.fsm", device="gpu")
    assert all(isinstance(w, cupy.ndarray) for w in back.get_weights())
    assert all(isinstance(a, cupy.ndarray) for s in back.optimizer.slots.values() for a in s.values())
    back.fit(xd, yd, epochs=1, batch_size=32, verbose=0)  # resumes on the device
    for a, b in zip(straight.get_weights(), back.get_weights()):
        np.testing.assert_allclose(b.get(), a.get(), rtol=1e-5, atol=1e-6)
    on_host.fit(xd, yd, epochs=1, batch_size=32, verbose=0)  # CuPy inputs move a device=None model
    assert all(isinstance(w, cupy.ndarray) for w in on_host.get_weights())


def test_divergence_on_device_is_reported_at_the_epoch_end(gpu_backend):
    import cupy

    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    x[40, 1] = np.nan  # batch 3 of 4 (batch_size 16, no shuffle)
    y = (x[:, 0] > 0).astype(np.float32)
    m = nn.Sequential([nn.Dense(4, activation="relu"), nn.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy", seed=0, backend=gpu_backend)
    with pytest.raises(nn.TrainingDivergedError, match=r"epoch 1/1, step 3/4"):
        m.fit(cupy.asarray(x), cupy.asarray(y), epochs=1, batch_size=16, shuffle=False, verbose=0)
    m2 = nn.Sequential([nn.Dense(4, activation="relu"), nn.Dense(1, activation="sigmoid")])
    m2.compile(optimizer="adam", loss="binary_crossentropy", seed=0, backend=gpu_backend)
    m2.build((None, 4))
    before = [w.get() for w in m2.get_weights()]
    with pytest.warns(RuntimeWarning, match="start of that epoch"):
        m2.fit(cupy.asarray(x), cupy.asarray(y), epochs=2, batch_size=16, shuffle=False, verbose=0,
               on_divergence="warn")
    for a, b in zip(before, m2.get_weights()):
        np.testing.assert_array_equal(a, b.get())
    assert m2.optimizer.step == 0


def _variant(name):
    """(layers, loss, metrics, optimizer, targets from labels, classes, csr inputs) of one model variant."""
    V, sig = 200, lambda: nn.Dense(1, activation="sigmoid")
    pool = lambda: [nn.Embedding(V, 8, mask_zero=True), nn.GlobalAveragePooling1D()]  # noqa: E731
    return {
        "max pooling, regularized": ([nn.Embedding(V, 6, mask_zero=True, embeddings_regularizer="l2"),
                                      nn.GlobalMaxPooling1D(), nn.Dense(4, activation="relu", kernel_regularizer="l1_l2"),
                                      sig()], "binary_crossentropy", ["accuracy"], "adam", None, 2, False),
        "flatten": ([nn.Embedding(V, 4), nn.Flatten(), sig()], "binary_crossentropy", ["accuracy"], "adam", None, 2, False),
        "dropout": (pool() + [nn.Dropout(0.3), sig()], "binary_crossentropy", ["accuracy"], "adam", None, 2, False),
        "sparse categorical": (pool() + [nn.Dense(3, activation="softmax")], "sparse_categorical_crossentropy",
                               ["accuracy"], "adam", None, 3, False),
        "categorical": (pool() + [nn.Dense(3, activation="softmax")], "categorical_crossentropy", ["accuracy"], "adam",
                        lambda y: np.eye(3)[y], 3, False),
        "mse": (pool() + [nn.Dense(2)], "mse", ["mae"], "adam", lambda y: np.stack([y, -y], 1).astype(np.float64), 2,
                False),
        "mae": (pool() + [nn.Dense(1)], "mae", ["mse"], "adam", lambda y: y.astype(np.float32), 2, False),
        "embedding bag, csr, sum": ([nn.EmbeddingBag(V, 8, mode="sum"), sig()], "binary_crossentropy", ["accuracy"],
                                    "adam", None, 2, True),
        "lazy adam, csr": ([nn.EmbeddingBag(V, 8, mode="mean"), sig()], "binary_crossentropy", ["accuracy", "auc"],
                           optim.Adam(learning_rate=1e-2, lazy=True), None, 2, True),
        "sgd": (pool() + [sig()], "binary_crossentropy", ["accuracy"], optim.SGD(learning_rate=0.1), None, 2, False),
    }[name]


VARIANTS = ["max pooling, regularized", "flatten", "dropout", "sparse categorical", "categorical", "mse", "mae",
            "embedding bag, csr, sum", "lazy adam, csr", "sgd"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_model_variants_train_on_device_as_on_the_host(gpu_backend, variant):
    """Layers, losses, metrics, optimizers, sample / class weights, validation data and callbacks
    with CuPy inputs: the host run's weights, history, evaluation and predictions (to rounding)."""
    import cupy

    from fastscale.nn import callbacks

    seqs, labels = sequences(160, _variant(variant)[5], seed=4)
    csr = _variant(variant)[6]
    if csr:
        off = np.zeros(len(seqs) + 1, np.int64)
        np.cumsum([len(s) for s in seqs], out=off[1:])
        x = (np.concatenate(seqs).astype(np.int64), off)
    else:
        from .data import padded

        x = padded(seqs)[:, :14]
    runs = []
    for on_device in (False, True):
        layers, loss, metrics, opt, target, _, _ = _variant(variant)  # fresh layers and optimizer per run
        y = labels if target is None else target(labels)
        dev = (lambda a: tuple(cupy.asarray(v) for v in a) if isinstance(a, tuple) else cupy.asarray(a)) if on_device \
            else (lambda a: a)
        m = nn.Sequential(layers)
        m.compile(optimizer=opt, loss=loss, metrics=metrics, seed=1, backend=gpu_backend if on_device else None)
        sw = np.random.default_rng(0).random(len(labels))
        kw = dict(sample_weight=dev(sw)) if variant in ("dropout", "lazy adam, csr") else {}
        if variant == "sparse categorical":
            kw["class_weight"] = {0: 1.0, 1: 2.0, 2: 0.5}
        if variant in ("flatten", "mse"):  # validation data and callbacks reading it
            kw["validation_data"] = (dev(x), dev(y))
            kw["callbacks"] = [callbacks.EarlyStopping(patience=5, restore_best_weights=True),
                               callbacks.ReduceLROnPlateau(patience=1, factor=0.5)]
        else:
            kw["validation_split"] = 0.25
        h = m.fit(dev(x), dev(y), epochs=3, batch_size=32, verbose=0, **kw)
        ev = m.evaluate(dev(x), dev(y), verbose=0)
        p = m.predict(dev(x))
        if on_device:
            assert isinstance(p, cupy.ndarray) and all(isinstance(w, cupy.ndarray) for w in m.get_weights())
            p, weights = p.get(), [w.get() for w in m.get_weights()]
        else:
            weights = m.get_weights()
        runs.append((h.history, weights, ev, p))
    (ha, wa, ea, pa), (hb, wb, eb, pb) = runs
    assert ha.keys() == hb.keys()
    for k in ha:
        assert all(type(v) is float for v in hb[k])
        np.testing.assert_allclose(hb[k], ha[k], rtol=1e-4, atol=1e-6, err_msg=k)
    for a, b in zip(wa, wb):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(eb, ea, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(pb, pa, rtol=1e-3, atol=1e-5)


# ---------------------------------------------------------------------------- on the host
class _NumpyAsDevice:
    """numpy under another name: ``model._xp is not numpy`` sends Sequential down its device
    path while every array and op stays on the host."""

    def __getattr__(self, name):
        return getattr(np, name)


def _as_device(model):
    model._place(_NumpyAsDevice())
    return model


CASES = {
    "padded masked, shuffled": dict(mask_zero=True, shuffle=True),
    "padded unmasked, shuffled, dropout": dict(mask_zero=False, shuffle=True, dropout=0.3),
    "csr bags, in order": dict(mask_zero=True, shuffle=False, csr=True),
    "lazy adam, csr, shuffled": dict(mask_zero=True, shuffle=True, csr=True, lazy=True),
}


@pytest.mark.parametrize("case", list(CASES))
def test_device_path_on_the_host_is_bitwise_the_host_path(case):
    c = dict(CASES[case])
    seqs, y = sequences(300, 2, seed=1)
    if c.pop("csr", False):
        off = np.zeros(len(seqs) + 1, np.int64)
        np.cumsum([len(s) for s in seqs], out=off[1:])
        x = (np.concatenate(seqs).astype(np.int64), off)
    else:
        from .data import padded

        x = padded(seqs)
    shuffle = c.pop("shuffle")
    lazy = c.pop("lazy", False)
    runs = []
    for device_path in (False, True):
        m = _compiled(lazy, metrics=("accuracy", "auc"), **c)
        if device_path:
            _as_device(m)
        h = m.fit(x, y, epochs=2, batch_size=32, shuffle=shuffle, validation_split=0.2, verbose=0)
        runs.append((m, h, m.evaluate(x, y, verbose=0), m.predict(x)))
    (a, ha, ea, pa), (b, hb, eb, pb) = runs
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    assert ha.history == hb.history and ea == eb
    np.testing.assert_array_equal(pa, pb)
    assert [s["tokens"] for s in ha.epoch_stats] == [s["tokens"] for s in hb.epoch_stats]


def test_device_path_sparse_categorical_on_the_host():
    seqs, y = sequences(240, 3, seed=2)
    from .data import padded

    x = padded(seqs)
    runs = []
    for device_path in (False, True):
        m = nn.Sequential([nn.Embedding(200, 8), nn.GlobalAveragePooling1D(), nn.Dense(3, activation="softmax")])
        m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], seed=1)
        if device_path:
            _as_device(m)
        runs.append((m.fit(x, y, epochs=1, batch_size=32, verbose=0).history, m.get_weights()))
    assert runs[0][0] == runs[1][0]
    for wa, wb in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(wa, wb)
    m = _as_device(nn.Sequential([nn.Embedding(200, 8), nn.GlobalAveragePooling1D(), nn.Dense(3, activation="softmax")]))
    m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", seed=1)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):  # checked up front on a device
        m.fit(x, np.full(len(y), 3), epochs=1, verbose=0)


@pytest.mark.parametrize("loss, units, act", [("binary_crossentropy", 1, "sigmoid"), ("categorical_crossentropy", 3, "softmax"),
                                         ("mse", 2, None)])
def test_device_path_weights_and_losses_on_the_host(loss, units, act):
    """sample_weight, class_weight and the newer losses on the device code path: bitwise the host."""
    seqs, labels = sequences(200, 3 if units == 3 else 2, seed=4)
    from .data import padded

    x = padded(seqs)
    y = {"binary_crossentropy": labels, "categorical_crossentropy": np.eye(3)[labels],
         "mse": np.stack([labels, -labels], 1).astype(np.float64)}[loss]
    cw = {k: 1.0 + k for k in range(3)} if loss != "mse" else None
    sw = np.random.default_rng(0).random(len(labels))
    runs = []
    for device_path in (False, True):
        m = nn.Sequential([nn.Embedding(200, 8), nn.GlobalAveragePooling1D(), nn.Dense(units, activation=act)])
        m.compile(optimizer="adam", loss=loss, metrics=["mae"] if loss == "mse" else ["accuracy", "auc"], seed=1)
        if device_path:
            _as_device(m)
        h = m.fit(x, y, epochs=2, batch_size=32, verbose=0, sample_weight=sw, class_weight=cw, validation_split=0.2)
        runs.append((h.history, m.get_weights(), m.evaluate(x, y, verbose=0, sample_weight=sw)))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    for wa, wb in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(wa, wb)


@pytest.mark.parametrize("variant", ["max pooling, regularized", "flatten"])
def test_device_path_newer_layers_on_the_host(variant):
    seqs, labels = sequences(160, 2, seed=5)
    from .data import padded

    x = padded(seqs)[:, :12]
    runs = []
    for device_path in (False, True):
        if variant == "flatten":
            layers = [nn.Embedding(200, 4), nn.Flatten(), nn.Dense(1, activation="sigmoid")]
        else:
            layers = [nn.Embedding(200, 6, mask_zero=True, embeddings_regularizer="l2"), nn.GlobalMaxPooling1D(),
                      nn.Dense(4, activation="relu", kernel_regularizer="l1_l2"), nn.Dense(1, activation="sigmoid")]
        m = nn.Sequential(layers)
        m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"], seed=1)
        if device_path:
            _as_device(m)
        h = m.fit(x, labels, epochs=2, batch_size=32, verbose=0, validation_split=0.25)
        runs.append((h.history, m.get_weights(), m.evaluate(x, labels, verbose=0)))
    assert runs[0][0] == runs[1][0] and runs[0][2] == runs[1][2]
    for wa, wb in zip(runs[0][1], runs[1][1]):
        np.testing.assert_array_equal(wa, wb)


def _nan_data():
    x = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    x[40, 1] = np.nan  # in batch 3 of 4 (batch_size 16, no shuffle)
    return x, (x[:, 0] > 0).astype(np.float32)


def _small(device_path):
    m = nn.Sequential([nn.Dense(4, activation="relu"), nn.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy", seed=0)
    m.build((None, 4))
    return _as_device(m) if device_path else m


def test_device_path_divergence_names_the_step_at_the_epoch_end():
    x, y = _nan_data()
    host = _small(False)
    with pytest.raises(nn.TrainingDivergedError, match=r"step 3/4 \(update 3 of") as e_host:
        host.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert host.optimizer.step == 2  # raised before the diverging step's update
    dev = _small(True)
    with pytest.raises(nn.TrainingDivergedError, match=r"step 3/4 \(update 3 of this model; on the GPU") as e_dev:
        dev.fit(x, y, epochs=1, batch_size=16, shuffle=False, verbose=0)
    assert dev.optimizer.step == 4  # the device path learns of it at the end of the epoch
    assert "nan" in str(e_host.value) and "nan" in str(e_dev.value)


def test_device_path_warn_restores_the_epoch_start():
    x, y = _nan_data()
    m = _small(True)
    m.fit(x[:32], y[:32], epochs=1, batch_size=16, shuffle=False, verbose=0)
    before = m.get_weights()
    slots = {k: {s: a.copy() for s, a in d.items()} for k, d in m.optimizer.slots.items()}
    with pytest.warns(RuntimeWarning, match="weights from the start of that epoch"):
        h = m.fit(x, y, epochs=3, batch_size=16, shuffle=False, verbose=0, on_divergence="warn")
    assert h.history == {} and m.optimizer.step == 2
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)
    for k, d in slots.items():
        for s, a in d.items():
            np.testing.assert_array_equal(a, m.optimizer.slots[k][s])


@pytest.mark.parametrize("csr", [False, True])
@pytest.mark.parametrize("n", [0, 1, 37])
def test_permuted_inputs_batch_as_take_does(csr, n):
    seqs, _ = sequences(max(n, 1), 2, seed=4)
    seqs = seqs[:n]
    if n:
        seqs[0] = seqs[0][:0]  # an empty bag
    if csr:
        x = [list(s) for s in seqs]
    else:
        from .data import padded

        x = padded(seqs, T=12) if n else np.zeros((0, 12), np.int32)
    inputs = _Inputs(x, "test")
    order = np.random.default_rng(0).permutation(n)
    perm = inputs.permuted(order)
    for lo in range(0, n, 8):
        hi = min(n, lo + 8)
        want, got = inputs.take(order[lo:hi]), perm.slice(lo, hi)
        if csr:
            np.testing.assert_array_equal(want[0], got[0])
            np.testing.assert_array_equal(want[1], got[1])
        else:
            np.testing.assert_array_equal(want, got)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_logits_xp_is_the_ops_formula(dtype):
    import fastscale as fs

    rng = np.random.default_rng(0)
    z = (rng.standard_normal(300) * 20).astype(dtype)
    y = (rng.random(300) < 0.5).astype(dtype)
    loss, dz = losses.bce_logits_xp(np, z, y)
    ref_loss, ref_dz = fs.bce_with_logits(z, y, backend="numpy")
    assert loss.shape == () and loss.dtype == np.float64 and dz.dtype == dtype
    assert math.isclose(float(loss), ref_loss, rel_tol=1e-12)
    np.testing.assert_array_equal(dz, ref_dz)


def test_bce_check_targets():
    bce = losses.BinaryCrossentropy()
    bce.check_targets(np.array([0.0, 1.0, 0.5]), 1)
    for bad in ([0.0, 1.5], [-0.1, 1.0], [0.0, np.nan]):
        with pytest.raises(ValueError, match=r"targets must have values in \[0, 1\]"):
            bce.check_targets(np.array(bad), 1)


def test_device_cpu_explicit_is_the_default():
    x, y = binary(200)
    a, b = _compiled(), _compiled(device="cpu")
    a.fit(x, y, epochs=1, batch_size=32, verbose=0)
    b.fit(x, y, epochs=1, batch_size=32, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert type(wb) is np.ndarray
        np.testing.assert_array_equal(wa, wb)
    assert type(b.predict(x)) is np.ndarray


def test_device_gpu_without_a_gpu_says_how_to_get_one(tmp_path):
    if _backends.status("cuda") is None or _backends.status("cupy") is None:
        pytest.skip("a GPU backend is usable here")
    m = _origin()
    with pytest.raises(BackendUnavailableError, match=r"device='gpu' needs a CUDA GPU.*to get one: pip install"):
        m.compile(optimizer="adam", loss="binary_crossentropy", device="gpu")
    assert not m.compiled and m.optimizer is None
    ok = _compiled()
    ok.fit(*binary(64), epochs=1, verbose=0)
    ok.save(tmp_path / "m.fsm")
    with pytest.raises(BackendUnavailableError, match="device='gpu'"):
        nn.load_model(tmp_path / "m.fsm", device="gpu")
    with pytest.raises(BackendUnavailableError):
        _origin().compile(optimizer="adam", loss="binary_crossentropy", backend="cuda")


@pytest.mark.parametrize("kw, match", [
    (dict(device="tpu"), "argument 'device' must be 'cpu', 'gpu' or None"),
    (dict(device="gpu", backend="cpp"), "backend 'cpp' runs on the host, not on device='gpu'"),
    (dict(device="cpu", backend="cuda"), "backend 'cuda' runs on the GPU, not on device='cpu'"),
])
def test_bad_device_arguments(kw, match):
    m = _origin()
    with pytest.raises(ValueError, match=match):
        m.compile(optimizer="adam", loss="binary_crossentropy", **kw)
    assert not m.compiled


def test_load_model_on_the_host_by_default(tmp_path):
    x, y = binary(64)
    m = _compiled()
    m.fit(x, y, epochs=1, verbose=0)
    m.save(tmp_path / "m.fsm")
    for device in (None, "cpu"):
        back = nn.load_model(tmp_path / "m.fsm", device=device)
        assert back._device == device and back._xp is np
        assert all(type(w) is np.ndarray for w in back.get_weights())
    with pytest.raises(ValueError, match="argument 'device'"):
        nn.load_model(tmp_path / "m.fsm", device="cuda")


def test_device_path_save_load_on_the_host(tmp_path):
    """save() from a model on the device path writes host copies (no-ops here) and resumes bitwise."""
    x, y = binary(128)
    straight = _compiled()
    straight.fit(x, y, epochs=2, batch_size=32, verbose=0)
    m = _as_device(_compiled())
    m.fit(x, y, epochs=1, batch_size=32, verbose=0)
    m.save(tmp_path / "m.fsm")
    back = nn.load_model(tmp_path / "m.fsm")
    back.fit(x, y, epochs=1, batch_size=32, verbose=0)
    for a, b in zip(straight.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
