"""fit / evaluate / train_on_batch with sample_weight and class_weight, as Keras weighs them:
the batch's loss is the mean of weight * loss, each sample's gradient scaled by its weight."""
import numpy as np
import pytest

from fastscale import nn, optim

from .fd import check_against_fd
from .test_layers import _ids

HEADS = [  # (loss, head activation, units)
    ("binary_crossentropy", "sigmoid", 1),
    ("binary_crossentropy", "relu", 1),  # not the logit: clipped probabilities
    ("sparse_categorical_crossentropy", "softmax", 4),
    ("categorical_crossentropy", "softmax", 4),
    ("categorical_crossentropy", "sigmoid", 4),
    ("mse", None, 2),
    ("mae", None, 1),
]


def _model(loss, act, units, dtype="float64", seed=3):
    m = nn.Sequential([nn.Embedding(30, 5, mask_zero=True), nn.GlobalAveragePooling1D(),
                       nn.Dense(7, activation="tanh"), nn.Dense(units, activation=act)], dtype=dtype)
    m.compile(optimizer=optim.Adam(), loss=loss, metrics=["accuracy"] if "entropy" in loss else [], seed=seed)
    m.build()
    return m


def _targets(loss, rng, B, units):
    if loss == "binary_crossentropy":
        return rng.integers(0, 2, (B, 1)).astype(np.float64)
    if loss == "sparse_categorical_crossentropy":
        return rng.integers(0, units, B)
    if loss == "categorical_crossentropy":
        return np.eye(units)[rng.integers(0, units, B)]
    return rng.standard_normal((B, units))


@pytest.mark.parametrize("loss, act, units", HEADS)
def test_weighted_loss_and_gradient(loss, act, units):
    rng = np.random.default_rng(6)
    ids = _ids(rng, B=6, T=5)
    y = _targets(loss, rng, 6, units)
    w = np.array([0.0, 1.0, 2.5, 0.5, 1.0, 3.0])
    m = _model(loss, act, units)
    if act == "relu":  # keep the relu outputs inside (0, 1) so the clip does not flatten the loss
        m.layers[-1].params["bias"][:] = 0.5
    z = m._forward(ids, training=False, logits=m._ask_logits)
    per = m.loss.per_sample(y, z, m._loss_logits)
    assert m._loss(y, z)[0] == pytest.approx(per.mean(), rel=1e-12)  # per_sample agrees with the mean
    loss_w, dz = m._loss(y, z, w)
    assert loss_w == pytest.approx((w * per).mean(), rel=1e-12)
    np.testing.assert_allclose(dz, m._loss(y, z)[1] * w.reshape(-1, *[1] * (dz.ndim - 1)), rtol=1e-14)
    m._backward(dz)
    grads = {f"{n}": np.array(g.to_dense() if hasattr(g, "to_dense") else g) for n, _, g in m._params_and_grads()}

    def at():
        return m._loss(y, m._forward(ids, training=False, logits=m._ask_logits), w)[0]

    check_against_fd(m, grads, at, rng, per_param=8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unit_weights_train_bitwise_as_unweighted(dtype):
    """Weights of 1 take the weighted path (not the fused step) and give the same weights."""
    rng = np.random.default_rng(0)
    ids = _ids(rng, B=40, T=7)
    y = rng.integers(0, 2, 40)
    a, b = _model("binary_crossentropy", "sigmoid", 1, dtype), _model("binary_crossentropy", "sigmoid", 1, dtype)
    ha = a.fit(ids, y, epochs=3, batch_size=8, verbose=0)
    hb = b.fit(ids, y, epochs=3, batch_size=8, verbose=0, sample_weight=np.ones(40), class_weight={0: 1, 1: 1})
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-6 if dtype == "float32" else 1e-12)
    assert ha.history["accuracy"] == hb.history["accuracy"]


def test_class_weight_is_sample_weight_by_class_and_they_multiply():
    rng = np.random.default_rng(1)
    ids = _ids(rng, B=30, T=6)
    y = rng.integers(0, 3, 30)
    sw = rng.random(30)
    a, b = _model("sparse_categorical_crossentropy", "softmax", 3), _model("sparse_categorical_crossentropy", "softmax", 3)
    a.fit(ids, y, epochs=2, batch_size=7, verbose=0, class_weight={0: 0.5, 1: 2.0, 2: 1.0, 7: 9.0}, sample_weight=sw)
    b.fit(ids, y, epochs=2, batch_size=7, verbose=0, sample_weight=sw * np.array([0.5, 2.0, 1.0])[y])
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    # One-hot targets: the class is the row's argmax.
    c = _model("categorical_crossentropy", "softmax", 3)
    c.fit(ids, np.eye(3)[y], epochs=2, batch_size=7, verbose=0, class_weight={0: 0.5, 1: 2.0, 2: 1.0}, sample_weight=sw)
    for wa, wc in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_allclose(wa, wc, rtol=1e-9, atol=1e-12)


def test_validation_keeps_sample_weight_not_class_weight():
    rng = np.random.default_rng(2)
    ids = _ids(rng, B=40, T=6)
    y = rng.integers(0, 2, 40)
    sw = rng.random(40) + 0.1
    m = _model("binary_crossentropy", "sigmoid", 1)
    h = m.fit(ids, y, epochs=1, verbose=0, validation_split=0.25, sample_weight=sw, class_weight={0: 5.0, 1: 1.0})
    assert h.history["val_loss"][0] == pytest.approx(m.evaluate(ids[30:], y[30:], verbose=0, sample_weight=sw[30:])[0], rel=1e-12)
    h = m.fit(ids[:30], y[:30], epochs=1, verbose=0, validation_data=(ids[30:], y[30:], sw[30:]))
    assert h.history["val_loss"][0] == pytest.approx(m.evaluate(ids[30:], y[30:], verbose=0, sample_weight=sw[30:])[0], rel=1e-12)


def test_evaluate_and_train_on_batch_weights():
    rng = np.random.default_rng(3)
    ids = _ids(rng, B=12, T=6)
    y = rng.standard_normal((12, 2))
    w = rng.random(12)
    m = _model("mse", None, 2)
    p = m.predict(ids)
    assert m.evaluate(ids, y, verbose=0, sample_weight=w) == pytest.approx((w * ((p - y) ** 2).mean(1)).mean(), rel=1e-12)
    before = m.evaluate(ids, y, verbose=0, sample_weight=w)
    assert m.train_on_batch(ids, y, sample_weight=w) == pytest.approx(before, rel=1e-12)  # the loss before the update


@pytest.mark.parametrize("kw, exc, match", [
    (dict(sample_weight=np.ones(3)), ValueError, r"fit: sample_weight must have shape \(8,\), one weight per sample, got \(3,\)"),
    (dict(sample_weight=-np.ones(8)), ValueError, r"fit: sample_weight must be finite and >= 0, got sample_weight\[0\] = -1.0"),
    (dict(sample_weight=np.r_[np.ones(7), np.nan]), ValueError, r"sample_weight\[7\] = nan"),
    (dict(sample_weight=np.array(["a"] * 8)), TypeError, "fit: sample_weight must be numeric"),
    (dict(class_weight=[1, 2]), TypeError, r"fit: class_weight must be a dict \{class: weight\}, got list"),
    (dict(class_weight={0: 1.0}), ValueError, r"fit: class_weight has no weight for class\(es\) \[1\] present in y"),
    (dict(class_weight={0: 1.0, 1: -2.0}), ValueError, r"fit: class_weight\[1\] must be a finite number >= 0, got -2.0"),
    (dict(class_weight={"0": 1.0, 1: 1.0}), TypeError, "fit: class_weight keys must be int class labels, got '0'"),
])
def test_bad_weights(kw, exc, match):
    m = _model("binary_crossentropy", "sigmoid", 1)
    before = [w.copy() for w in m.get_weights()]
    ids = _ids(np.random.default_rng(0), B=8, T=4)
    with pytest.raises(exc, match=match):
        m.fit(ids, np.arange(8) % 2, verbose=0, **kw)
    for a, b in zip(before, m.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing trained


def test_class_weight_needs_class_labels():
    m = _model("mse", None, 1)
    ids = _ids(np.random.default_rng(0), B=8, T=4)
    with pytest.raises(ValueError, match="fit: class_weight needs class labels"):
        m.fit(ids, np.linspace(0, 1, 8), verbose=0, class_weight={0: 1.0})
