"""categorical_crossentropy, mean squared / absolute error and their metrics: values against
formulas written out here (Keras's definitions), gradients against central finite differences
through a whole model, training, saving, and bad targets."""
import numpy as np
import pytest

from fastscale import nn, optim

from .data import padded, sequences
from .fd import check_against_fd
from .test_layers import _grads, _ids


def _model(loss, act, units, dtype="float64"):
    m = nn.Sequential([nn.Embedding(30, 5, mask_zero=True), nn.GlobalAveragePooling1D(),
                       nn.Dense(7, activation="tanh"), nn.Dense(units, activation=act)], dtype=dtype)
    m.compile(optimizer=optim.Adam(), loss=loss, seed=3)
    m.build()
    return m


def _targets(loss, rng, B, units):
    if loss == "categorical_crossentropy":
        y = rng.random((B, units))
        return y / y.sum(1, keepdims=True)  # probability rows (label smoothing), not only one-hot
    return rng.standard_normal((B, units))


@pytest.mark.parametrize("loss, act, units", [
    ("categorical_crossentropy", "softmax", 4),  # from the logit
    ("categorical_crossentropy", "sigmoid", 4),  # Keras's path: outputs scaled to sum 1, clipped
    ("mse", None, 3),
    ("mse", "tanh", 1),
    ("mae", None, 2),
])
def test_gradients_match_finite_differences(loss, act, units):
    rng = np.random.default_rng(4)
    ids = _ids(rng, B=5, T=6)
    y = _targets(loss, rng, 5, units)
    m = _model(loss, act, units)
    _, _, grads = _grads(m, ids, y)

    def loss_at():
        return m.loss(y, m._forward(ids, training=False, logits=m._ask_logits), m._loss_logits)[0]

    check_against_fd(m, grads, loss_at, rng)


def test_values_are_keras_formulas():
    rng = np.random.default_rng(0)
    out = rng.random((6, 3)) + 0.05
    y = np.eye(3)[rng.integers(0, 3, 6)]
    p = np.clip(out / out.sum(1, keepdims=True), 1e-7, 1 - 1e-7)
    loss, _ = nn.losses.CategoricalCrossentropy()(y, out, False)
    assert loss == pytest.approx(-(y * np.log(p)).sum(1).mean(), rel=1e-12)
    z = rng.standard_normal((6, 3))
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    loss, _ = nn.losses.CategoricalCrossentropy()(y, z, True)
    assert loss == pytest.approx(-(y * logp).sum(1).mean(), rel=1e-12)
    t = rng.standard_normal((6, 3))
    assert nn.losses.get("mse")(t, out, False)[0] == pytest.approx(((out - t) ** 2).mean(), rel=1e-12)
    assert nn.losses.get("mae")(t, out, False)[0] == pytest.approx(np.abs(out - t).mean(), rel=1e-12)
    for name, f in [("mse", lambda d: d * d), ("mae", np.abs)]:
        met = nn.metrics.get(name, "mse")
        met.update(t[:2], out[:2])
        met.update(t[2:], out[2:])
        assert met.result() == pytest.approx(f(out - t).mean(), rel=1e-12)
    acc = nn.metrics.get("accuracy", "categorical_crossentropy")
    acc.update(y, out)
    assert acc.result() == pytest.approx(np.mean(out.argmax(1) == y.argmax(1)))


def test_categorical_trains_like_sparse_categorical_on_one_hot(tmp_path):
    seqs, labels = sequences(400, classes=4, seed=8)
    x = padded(seqs)
    hist, preds = {}, {}
    for loss, y in [("sparse_categorical_crossentropy", labels), ("categorical_crossentropy", np.eye(4)[labels])]:
        m = nn.Sequential([nn.Embedding(200, 16, mask_zero=True), nn.GlobalAveragePooling1D(),
                           nn.Dense(4, activation="softmax")])
        m.compile(optimizer=optim.Adam(1e-2), loss=loss, metrics=["accuracy", "auc"], seed=0)
        hist[loss] = m.fit(x, y, epochs=4, verbose=0, validation_split=0.25).history
        preds[loss] = m.predict(x)
        m.save(tmp_path / "m.fsm")
        back = nn.load_model(tmp_path / "m.fsm")
        assert back.evaluate(x, y, verbose=0) == m.evaluate(x, y, verbose=0)
    a, b = hist.values()
    assert a.keys() == b.keys() and a["accuracy"][-1] > 0.8
    for k in a:  # the same model, the same numbers (the losses' reductions differ in rounding only)
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, err_msg=k)
    np.testing.assert_allclose(*preds.values(), rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["mse", "mae"])
def test_regression_learns_a_bag_mean(loss, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(1, 100, (800, 12))
    target = rng.standard_normal(100)[x].mean(1)
    m = nn.Sequential([nn.Embedding(100, 8), nn.GlobalAveragePooling1D(), nn.Dense(1)])
    m.compile(optimizer=optim.Adam(1e-2), loss=loss, metrics=["mae", "mean_squared_error"], seed=0)
    h = m.fit(x, target, epochs=10, verbose=0)
    assert h.history["mean_squared_error"][-1] < 0.05 * target.var()  # near-exact: the model can be the target
    assert not hasattr(m.loss, "from_logits") or m.loss.from_logits is False
    assert m.predict(x[:3]).shape == (3, 1)  # the raw output, no sigmoid
    m.save(tmp_path / "r.fsm")
    np.testing.assert_array_equal(nn.load_model(tmp_path / "r.fsm").predict(x), m.predict(x))


def test_bad_targets():
    m = _model("categorical_crossentropy", "softmax", 3)
    ids = _ids(np.random.default_rng(0), B=4, T=5)
    with pytest.raises(ValueError, match=r"categorical_crossentropy: targets of shape \(4,\) do not match outputs of "
                                         r"shape \(4, 3\).*sparse_categorical_crossentropy for class indices"):
        m.fit(ids, np.array([0, 1, 2, 1]), verbose=0)
    with pytest.raises(ValueError, match=r"categorical_crossentropy: targets must have values in \[0, 1\]"):
        m.fit(ids, np.full((4, 3), 2.0), verbose=0)
    r = _model("mse", None, 1)
    with pytest.raises(ValueError, match="mean_squared_error: targets must be finite, got 1 non-finite"):
        r.fit(ids, np.array([0.0, np.nan, 1.0, 2.0]), verbose=0)
    with pytest.raises(ValueError, match="metrics: unknown metric 'msle'"):
        nn.metrics.get("msle", "mse")
    with pytest.raises(ValueError, match="loss: unknown loss 'hinge'"):
        nn.losses.get("hinge")
