"""Layers: initialisers, the fused Embedding -> pooling path against the unfused one, and the
whole model's backward pass against central finite differences."""
import numpy as np
import pytest

import fastscale.ops as ops
from fastscale import nn, optim

from .fd import check_against_fd


def _ids(rng, B=6, T=9, V=30, pad_frac=0.4):
    ids = rng.integers(1, V, size=(B, T))
    ids[rng.random((B, T)) < pad_frac] = 0  # zeros anywhere, not only at the end
    ids[0] = 0  # an all-padding row
    ids[1, :] = rng.integers(1, V, size=T)  # a row without padding
    return ids.astype(np.int32)


def _model(mask_zero, dtype="float64", head="sigmoid", lazy=False, fuse=True, seed=3):
    units = 1 if head == "sigmoid" else 4
    m = nn.Sequential([nn.Embedding(30, 5, mask_zero=mask_zero), nn.GlobalAveragePooling1D(),
                       nn.Dense(7, activation="tanh"), nn.Dense(units, activation=head)], dtype=dtype)
    loss = "binary_crossentropy" if head == "sigmoid" else "sparse_categorical_crossentropy"
    m.compile(optimizer=optim.Adam(lazy=lazy), loss=loss, seed=seed, fuse=fuse)
    m.build()
    return m


def _grads(m, ids, y):
    z = m._forward(ids, training=True, logits=m._ask_logits)
    loss, dz = m.loss(y, z, m._loss_logits)
    m._backward(dz)
    g = {}
    for name, _, grad in m._params_and_grads():
        g[name] = grad.to_dense() if isinstance(grad, ops.SparseRows) else np.array(grad)
    return z, loss, g


@pytest.mark.parametrize("mask_zero", [True, False])
@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_equals_unfused(mask_zero, sparse, dtype):
    rng = np.random.default_rng(0)
    ids = _ids(rng)
    y = rng.integers(0, 2, size=ids.shape[0]).astype(np.float32)
    fused = _model(mask_zero, dtype, lazy=sparse, fuse=True)
    plain = _model(mask_zero, dtype, lazy=sparse, fuse=False)
    assert any(isinstance(s, nn.layers._FusedEmbeddingPool) for s in fused._stages)
    assert not any(isinstance(s, nn.layers._FusedEmbeddingPool) for s in plain._stages)
    plain.set_weights(fused.get_weights())
    zf, lf, gf = _grads(fused, ids, y)
    zp, lp, gp = _grads(plain, ids, y)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(zf, zp, **tol)
    assert lf == pytest.approx(lp, rel=1e-5 if dtype == "float32" else 1e-12)
    assert gf.keys() == gp.keys()
    for k in gf:
        np.testing.assert_allclose(gf[k], gp[k], **tol, err_msg=k)
    e = gf["embedding/embeddings"]
    if mask_zero:
        assert not e[0].any()  # padding row: no gradient under the mask
    else:
        assert e[0].any()  # Keras averages the padding rows in too


def test_fused_row0_gradient_is_count_weighted():
    """Without mask_zero, row 0's gradient is sum_b n_zero[b] * dout[b] / T."""
    rng = np.random.default_rng(1)
    ids = _ids(rng)
    m = _model(False)
    stage = m._stages[0]
    out, _ = stage.forward(ids)
    dout = rng.standard_normal(out.shape)
    stage.backward(dout)
    T = ids.shape[1]
    n_zero = (ids == 0).sum(1)
    g = m.layers[0].grads["embeddings"]
    g = g.to_dense() if isinstance(g, ops.SparseRows) else g
    np.testing.assert_allclose(g[0], (n_zero[:, None] * dout).sum(0) / T, rtol=1e-12)


def test_fused_path_never_builds_btd(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("the fused path must not call the unfused ops")

    for name in ("embedding", "embedding_backward", "masked_mean_pool", "masked_mean_pool_backward"):
        monkeypatch.setattr(ops, name, boom)
    rng = np.random.default_rng(2)
    for mask_zero in (True, False):
        m = _model(mask_zero, "float32")
        ids = _ids(rng, B=20)
        m.fit(ids, rng.integers(0, 2, 20), epochs=1, batch_size=8, verbose=0)


@pytest.mark.parametrize("head", ["sigmoid", "softmax"])
@pytest.mark.parametrize("mask_zero", [True, False])
def test_backward_matches_finite_differences(head, mask_zero):
    rng = np.random.default_rng(4)
    ids = _ids(rng, B=5, T=6)
    y = rng.integers(0, 2 if head == "sigmoid" else 4, size=5)
    m = _model(mask_zero, "float64", head=head)
    _, _, g = _grads(m, ids, y.astype(np.float64) if head == "sigmoid" else y)

    def loss_at():
        z = m._forward(ids, training=False, logits=m._ask_logits)
        return m.loss(y, z, m._loss_logits)[0]

    check_against_fd(m, g, loss_at, rng, per_param=12)


def test_keras_initialisers_and_dtype():
    m = nn.Sequential([nn.Embedding(1000, 64), nn.GlobalAveragePooling1D(), nn.Dense(32, activation="relu"),
                       nn.Dense(1, activation="sigmoid")])
    m.compile(loss="binary_crossentropy", seed=0)
    m.build()
    emb, _, d1, d2 = m.layers
    w = emb.params["embeddings"]
    assert w.dtype == np.float32 and w.shape == (1000, 64)
    assert np.abs(w).max() <= 0.05 and np.abs(w).max() > 0.049  # uniform(-0.05, 0.05)
    limit = np.sqrt(6 / (64 + 32))
    k = d1.params["kernel"]
    assert k.shape == (64, 32) and np.abs(k).max() <= limit and np.abs(k).max() > 0.9 * limit
    assert not d1.params["bias"].any() and not d2.params["bias"].any()
    assert abs(w.mean()) < 0.002 and w.std() == pytest.approx(0.1 / np.sqrt(12), rel=0.02)


def test_embedding_bag_layer_padded_equals_csr():
    rng = np.random.default_rng(5)
    ids = _ids(rng, B=7, T=8)
    lay = nn.EmbeddingBag(30, 4)
    lay.build((None, None), np.random.default_rng(0))
    out_pad, _ = lay.forward(ids)
    bags = [r[r != 0] for r in ids]
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in bags])]).astype(np.int64)
    out_csr, _ = lay.forward((np.concatenate(bags).astype(np.int64), offsets))
    np.testing.assert_allclose(out_pad, out_csr, rtol=1e-6)
    lay.forward(ids)
    d = rng.standard_normal(out_pad.shape).astype(np.float32)
    lay.backward(d)
    g1 = lay.grads["embeddings"].copy()
    lay.forward((np.concatenate(bags).astype(np.int64), offsets))
    lay.backward(d)
    np.testing.assert_allclose(g1, lay.grads["embeddings"], rtol=1e-5, atol=1e-7)


def test_dropout_training_only_and_scaled():
    drop = nn.Dropout(0.5)
    x = np.ones((200, 50), np.float32)
    y, _ = drop.forward(x, training=False)
    assert y is x
    drop._rng_key = (1, 2, 3)
    y, _ = drop.forward(x, training=True)
    assert set(np.unique(y)) <= {0.0, 2.0}
    assert 0.45 < np.mean(y == 0) < 0.55
    np.testing.assert_array_equal(drop.backward(x), y)


@pytest.mark.parametrize("bad", [
    lambda: nn.Embedding(0, 4), lambda: nn.Embedding(10, -1), lambda: nn.Dense(0),
    lambda: nn.Dense(4, activation="gelu"), lambda: nn.Dropout(1.0), lambda: nn.EmbeddingBag(5, 2, mode="max"),
    lambda: nn.EmbeddingBag(5, 2, padding_idx=5),
])
def test_bad_layer_arguments(bad):
    with pytest.raises(ValueError):
        bad()


def test_embedding_initializers_keras_names_and_saving(tmp_path):
    from fastscale.nn import initializers as I

    rng = np.random.default_rng(0)
    u = nn.Embedding(2000, 64)
    assert u.embeddings_initializer == I.RandomUniform(-0.05, 0.05)  # Keras's default
    u.build((None, 3), rng)
    w = u.params["embeddings"]
    assert w.dtype == np.float32 and -0.05 <= w.min() < -0.049 and 0.049 < w.max() <= 0.05
    n = nn.Embedding(2000, 64, embeddings_initializer=I.RandomNormal(stddev=1.0))  # PyTorch's N(0, 1)
    n.build((None, 3), np.random.default_rng(0))
    assert abs(n.params["embeddings"].std() - 1.0) < 0.01 and abs(n.params["embeddings"].mean()) < 0.01
    assert nn.Embedding(5, 2, embeddings_initializer="random_normal").embeddings_initializer == I.RandomNormal(0, 0.05)
    with pytest.raises(ValueError, match="unknown name"):
        nn.Embedding(5, 2, embeddings_initializer="lecun_normal")
    with pytest.raises(ValueError, match="stddev"):
        I.RandomNormal(stddev=-1)
    m = nn.Sequential([nn.Embedding(50, 4, mask_zero=True, embeddings_initializer=I.RandomNormal(stddev=1.0)),
                       nn.GlobalAveragePooling1D(), nn.Dense(1, activation="sigmoid")])
    m.compile(loss="binary_crossentropy", seed=3)
    m.build()
    m.save(tmp_path / "m.fsm")
    back = nn.load_model(tmp_path / "m.fsm")
    assert back.layers[0].embeddings_initializer == I.RandomNormal(0.0, 1.0)
    for a, b in zip(m.get_weights(), back.get_weights()):
        np.testing.assert_array_equal(a, b)
