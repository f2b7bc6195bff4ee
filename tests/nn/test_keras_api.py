"""The rest of the Keras surface a port meets: initialisers by name, pretrained embedding
tables (weights=), input_length, Input, get_layer, predict_on_batch / test_on_batch."""
import numpy as np
import pytest

from fastscale import nn
from fastscale.nn import initializers as I

from .fd import check_against_fd


def test_dense_default_init_is_unchanged_glorot_uniform():
    """The default draws stay what they were: the origin's runs keep their numbers."""
    m = nn.Sequential([nn.Embedding(50, 6), nn.GlobalAveragePooling1D(), nn.Dense(4), nn.Dense(1)])
    m.compile(loss="mse", seed=11)
    m.build()
    rng = np.random.default_rng(11)
    rng.random((50, 6), dtype=np.float32)  # the embedding's draws come first
    for fan_in, units, layer in [(6, 4, m.layers[2]), (4, 1, m.layers[3])]:
        limit = np.sqrt(6.0 / (fan_in + units))
        np.testing.assert_array_equal(layer.params["kernel"], rng.uniform(-limit, limit, size=(fan_in, units)).astype(np.float32))
        assert not layer.params["bias"].any()


@pytest.mark.parametrize("name, check", [
    ("glorot_uniform", lambda w, fi, fo: np.abs(w).max() <= np.sqrt(6 / (fi + fo)) and w.std() == pytest.approx(np.sqrt(2 / (fi + fo)), rel=0.05)),
    ("he_uniform", lambda w, fi, fo: np.abs(w).max() <= np.sqrt(6 / fi) and w.std() == pytest.approx(np.sqrt(2 / fi), rel=0.05)),
    ("glorot_normal", lambda w, fi, fo: np.abs(w).max() <= 2 * np.sqrt(2 / (fi + fo)) / 0.8796 + 1e-6
     and w.std() == pytest.approx(np.sqrt(2 / (fi + fo)), rel=0.05)),
    ("he_normal", lambda w, fi, fo: np.abs(w).max() <= 2 * np.sqrt(2 / fi) / 0.8796 + 1e-6 and w.std() == pytest.approx(np.sqrt(2 / fi), rel=0.05)),
    ("zeros", lambda w, fi, fo: not w.any()),
    ("ones", lambda w, fi, fo: (w == 1).all()),
])
def test_named_initializers(name, check):
    fi, fo = 300, 200
    w = I.get(name)(np.random.default_rng(0), (fi, fo), np.float32)
    assert w.shape == (fi, fo) and w.dtype == np.float32 and check(w, fi, fo)
    init = I.get(name)
    assert I.get(I.to_config(init)) == init  # what a saved model stores comes back
    assert (I.Constant(0.25)(None, (2, 3), np.float64) == 0.25).all()
    with pytest.raises(ValueError, match="Constant: argument 'value' must be a finite number"):
        I.Constant(np.ones(3))


def test_initializers_in_layers_save_and_load(tmp_path):
    m = nn.Sequential([nn.Embedding(40, 5, embeddings_initializer="zeros"), nn.GlobalAveragePooling1D(),
                       nn.Dense(3, activation="relu", kernel_initializer="he_normal", bias_initializer=I.Constant(0.1)),
                       nn.Dense(1, activation="sigmoid")])
    m.compile(loss="binary_crossentropy", seed=0)
    m.build()
    assert not m.layers[0].params["embeddings"].any() and (m.layers[2].params["bias"] == np.float32(0.1)).all()
    m.save(tmp_path / "m.fsm")
    back = nn.load_model(tmp_path / "m.fsm")
    assert back.get_config() == m.get_config()
    assert back.layers[2].kernel_initializer == I.HeNormal() and back.layers[2].bias_initializer == I.Constant(0.1)
    # Keras's defaults stay implicit in the config, as files written before these arguments had it.
    assert "kernel_initializer" not in m.layers[3].get_config()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pretrained_table_frozen_and_trainable(dtype):
    table = np.random.default_rng(1).standard_normal((30, 4))
    rng = np.random.default_rng(2)
    x = rng.integers(0, 30, (64, 7))
    y = rng.integers(0, 2, 64)
    for trainable in (False, True):
        m = nn.Sequential([nn.Embedding(30, 4, weights=[table], trainable=trainable, mask_zero=True, input_length=7),
                           nn.GlobalAveragePooling1D(), nn.Dense(1, activation="sigmoid")], dtype=dtype)
        m.compile(loss="binary_crossentropy", seed=0)
        m.build()
        np.testing.assert_array_equal(m.layers[0].params["embeddings"], table.astype(dtype))
        m.fit(x, y, epochs=2, verbose=0)
        same = np.array_equal(m.layers[0].params["embeddings"], table.astype(dtype))
        assert same == (not trainable)
    table[0, 0] = 99.0  # the layer copied the table
    bag = nn.EmbeddingBag(30, 4, weights=table)
    bag.build((None, None), np.random.default_rng(0))
    assert bag.params["embeddings"][0, 0] == 99.0
    for bad, exc, match in [([np.zeros((3, 4))], ValueError, r"'weights' must be \[an array of shape \(30, 4\)\], got shape \(3, 4\)"),
                            ([np.full((30, 4), np.nan)], ValueError, "non-finite"),
                            ([np.full((30, 4), "a")], TypeError, "must hold numbers")]:
        with pytest.raises(exc, match=match):
            nn.Embedding(30, 4, weights=bad)
    with pytest.raises(ValueError, match="'input_length' must be an int >= 1"):
        nn.Embedding(30, 4, input_length=0)
    assert nn.Embedding(30, 4, input_length=7).get_config()["input_length"] == 7


def test_input_declares_the_shape():
    m = nn.Sequential([nn.Input(shape=(6,)), nn.Dense(3, activation="relu"), nn.Dense(2, activation="softmax")])
    m.compile(loss="sparse_categorical_crossentropy", seed=0)
    m.build()  # no data needed
    assert m.output_shape == (None, 2) and m.count_params() == 6 * 3 + 3 + 3 * 2 + 2
    ids = nn.Sequential([nn.Input((12,)), nn.Embedding(20, 3), nn.GlobalAveragePooling1D()])
    ids.build()
    assert ids._input_shape == (None, 12)
    with pytest.raises(ValueError, match="an Input can only come first"):
        nn.Sequential([nn.Dense(2), nn.Input((3,))])
    with pytest.raises(ValueError, match="argument 'shape' must be a tuple of ints"):
        nn.Input(shape=(-1,))


def test_get_layer_and_on_batch():
    rng = np.random.default_rng(3)
    x = rng.integers(1, 20, (10, 5))
    y = rng.integers(0, 2, 10)
    m = nn.Sequential([nn.Embedding(20, 3), nn.GlobalAveragePooling1D(), nn.Dense(1, activation="sigmoid", name="head")])
    m.compile(loss="binary_crossentropy", metrics=["accuracy"], seed=0)
    assert m.get_layer("head") is m.layers[2] and m.get_layer(index=0) is m.layers[0] and m.get_layer(index=-1) is m.layers[2]
    with pytest.raises(ValueError, match=r"no layer named 'x'; the layers are \['embedding', 'global_average_pooling1d', 'head'\]"):
        m.get_layer("x")
    with pytest.raises(ValueError, match="exactly one of name and index"):
        m.get_layer()
    with pytest.raises(ValueError, match=r"index must be an int in \[0, 3\)"):
        m.get_layer(index=3)
    np.testing.assert_array_equal(m.predict_on_batch(x), m.predict(x))
    assert m.test_on_batch(x, y) == m.evaluate(x, y, verbose=0)
    w = rng.random(10)
    assert m.test_on_batch(x, y, sample_weight=w, return_dict=True) == m.evaluate(x, y, verbose=0, sample_weight=w, return_dict=True)


def _fd_check(m, ids, y, rng, per_param=8):
    from .test_layers import _grads

    _, _, g = _grads(m, ids, y)

    def at():
        return m.loss(y, m._forward(ids, training=False, logits=m._ask_logits), m._loss_logits)[0]

    check_against_fd(m, g, at, rng, per_param)


@pytest.mark.parametrize("mask_zero", [False, True])
def test_global_max_pooling(mask_zero):
    rng = np.random.default_rng(4)
    ids = rng.integers(1, 30, (6, 5))
    ids[0] = 0  # all padding
    ids[1, 2:] = 0
    m = nn.Sequential([nn.Embedding(30, 4, mask_zero=mask_zero), nn.GlobalMaxPooling1D(), nn.Dense(1, activation="sigmoid")],
                      dtype="float64")
    m.compile(loss="binary_crossentropy", seed=0)
    m.build()
    table = m.layers[0].params["embeddings"]
    e = table[ids]  # (B, T, D)
    if mask_zero:
        e = np.where((ids != 0)[:, :, None], e, -np.inf)
    want = e.max(axis=1)
    want[~np.isfinite(want)] = 0.0  # a sample with no token pools to zeros
    pool = m.layers[1]
    out, _ = pool.forward(m.layers[0].forward(ids)[0], (ids != 0) if mask_zero else None)
    np.testing.assert_array_equal(out, want)
    dout = rng.standard_normal(out.shape)
    dx = pool.backward(dout)
    ref = np.zeros_like(dx)
    arg = e.argmax(axis=1)  # first maximum, as the layer
    for b in range(6):
        for d in range(4):
            if np.isfinite(e[b, :, d]).any():
                ref[b, arg[b, d], d] = dout[b, d]
    np.testing.assert_array_equal(dx, ref)
    _fd_check(m, ids, rng.integers(0, 2, 6).astype(np.float64), rng)
    pool = nn.GlobalMaxPooling1D()
    z, _ = pool.forward(np.zeros((2, 0, 3)))
    assert z.shape == (2, 3) and not z.any() and pool.backward(np.ones((2, 3))).shape == (2, 0, 3)


def test_flatten_after_an_embedding_of_fixed_length(tmp_path):
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 30, (6, 4))
    m = nn.Sequential([nn.Embedding(30, 3, input_length=4), nn.Flatten(), nn.Dense(2, activation="tanh"),
                       nn.Dense(1, activation="sigmoid")], dtype="float64")
    m.compile(loss="binary_crossentropy", seed=0)
    m.build()  # input_length gives the shape
    assert m.layers[2].params["kernel"].shape == (12, 2) and m.output_shape == (None, 1)
    _fd_check(m, ids, rng.integers(0, 2, 6).astype(np.float64), rng)
    m.save(tmp_path / "f.fsm")
    np.testing.assert_array_equal(nn.load_model(tmp_path / "f.fsm").predict(ids), m.predict(ids))
    bags = nn.Sequential([nn.Embedding(30, 3), nn.Flatten(), nn.Dense(1)])
    bags.compile(loss="mse", seed=0)
    with pytest.raises(ValueError, match="Flatten needs a fixed input shape, got \\(None, None, 3\\)"):
        bags.fit((np.arange(5), np.array([0, 2, 5])), np.zeros(2), verbose=0)


def test_regularizers_penalty_gradient_and_saving(tmp_path):
    from fastscale.nn import regularizers as R

    rng = np.random.default_rng(6)
    ids = rng.integers(0, 30, (6, 5))
    y = rng.integers(0, 2, 6).astype(np.float64)
    m = nn.Sequential([nn.Embedding(30, 4, mask_zero=True, embeddings_regularizer=R.L2(0.03)), nn.GlobalAveragePooling1D(),
                       nn.Dense(3, activation="tanh", kernel_regularizer=R.L1L2(0.02, 0.05), bias_regularizer="l1"),
                       nn.Dense(1, activation="sigmoid")], dtype="float64")
    m.compile(optimizer="adam", loss="binary_crossentropy", seed=0)
    m.build()
    w = {l.name: l.params for l in m.layers}
    want = (0.03 * (w["embedding"]["embeddings"] ** 2).sum() + 0.02 * np.abs(w["dense"]["kernel"]).sum()
            + 0.05 * (w["dense"]["kernel"] ** 2).sum() + 0.01 * np.abs(w["dense"]["bias"]).sum())
    assert m._penalty() == pytest.approx(want, rel=1e-12)
    # The gradient fit applies is that of loss + penalty.
    z = m._forward(ids, training=True, logits=m._ask_logits)
    loss, dz = m.loss(y, z, m._loss_logits)
    m._backward(dz)
    g = {n: np.asarray(gr) for n, _, gr in m._params_and_grads()}

    def total():
        return m.loss(y, m._forward(ids, training=False, logits=m._ask_logits), m._loss_logits)[0] + m._penalty()

    check_against_fd(m, g, total, rng, per_param=8)
    assert m.evaluate(ids, y, verbose=0) == pytest.approx(loss + want, rel=1e-12)  # reported with the penalty, as Keras
    m.save(tmp_path / "r.fsm")
    back = nn.load_model(tmp_path / "r.fsm")
    assert back.layers[2].regularizers == {"kernel": R.L1L2(0.02, 0.05), "bias": R.L1(0.01)}
    assert back.evaluate(ids, y, verbose=0) == m.evaluate(ids, y, verbose=0)
    with pytest.raises(ValueError, match="L2: argument 'l2' must be a finite number >= 0"):
        R.L2(-1.0)
    with pytest.raises(ValueError, match="regularizer: unknown name 'l3'"):
        nn.Dense(2, kernel_regularizer="l3")


def test_l2_everywhere_is_adams_coupled_weight_decay():
    """L2(lam) on every weight adds 2 * lam * w to each gradient: Adam(weight_decay=2 * lam)'s update."""
    from fastscale import optim

    rng = np.random.default_rng(7)
    x = rng.integers(1, 30, (48, 6))
    y = rng.integers(0, 2, 48)
    lam = 0.01
    runs = []
    for reg in (True, False):
        r = (lambda: "l2" if reg else None)
        m = nn.Sequential([nn.Embedding(30, 4, mask_zero=True, embeddings_regularizer=r()), nn.GlobalAveragePooling1D(),
                           nn.Dense(3, activation="relu", kernel_regularizer=r(), bias_regularizer=r()),
                           nn.Dense(1, activation="sigmoid", kernel_regularizer=r(), bias_regularizer=r())], dtype="float64")
        m.compile(optimizer=optim.Adam(1e-2, weight_decay=0.0 if reg else 2 * lam), loss="binary_crossentropy", seed=0)
        m.fit(x, y, epochs=3, batch_size=16, verbose=0, seed=0)
        runs.append(m.get_weights())
    for a, b in zip(*runs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)
