"""fastscale.optim: Adam (Keras and PyTorch epsilon placement), lazy Adam, SGD, RMSprop, state."""
import numpy as np
import pytest

from fastscale import SparseRows, optim



def _keras_adam(p, grads, lr=1e-3, b1=0.9, b2=0.999, eps=1e-7):
    """keras.optimizers.Adam.update_step, float64."""
    p = p.astype(np.float64).copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(grads, 1):
        alpha = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        m += (g - m) * (1 - b1)
        v += (g * g - v) * (1 - b2)
        p -= alpha * m / (np.sqrt(v) + eps)
    return p


def test_adam_keras_defaults_and_formula():
    opt = optim.Adam()
    assert (opt.learning_rate, opt.beta_1, opt.beta_2, opt.epsilon, opt.eps_placement) == (1e-3, 0.9, 0.999, 1e-7, "keras")
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal((13, 7)).astype(np.float32)
    grads = [rng.standard_normal(p0.shape).astype(np.float32) for _ in range(5)]
    p = p0.copy()
    for g in grads:
        opt.apply([("w", p, g)])
    assert opt.step == 5
    np.testing.assert_allclose(p, _keras_adam(p0, grads), rtol=1e-5, atol=1e-6)


def test_adam_torch_placement_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    p0 = rng.standard_normal((9, 4)).astype(np.float32)
    grads = [rng.standard_normal(p0.shape).astype(np.float32) for _ in range(6)]
    p = p0.copy()
    opt = optim.Adam(learning_rate=1e-2, epsilon=1e-8, eps_placement="torch")
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.Adam([tp], lr=1e-2, eps=1e-8)
    for g in grads:
        opt.apply([("w", p, g)])
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_lazy_adam_touches_only_the_rows_given():
    rng = np.random.default_rng(2)
    p = rng.standard_normal((20, 3)).astype(np.float32)
    dense_p = p.copy()
    rows = np.array([1, 5, 6], np.int64)
    vals = rng.standard_normal((3, 3)).astype(np.float32)
    lazy = optim.Adam(1e-2, lazy=True)
    lazy.apply([("e", p, SparseRows(rows, vals, 20))])
    untouched = np.setdiff1d(np.arange(20), rows)
    np.testing.assert_array_equal(p[untouched], dense_p[untouched])
    assert not lazy.slots["e"]["m"][untouched].any()
    dense = optim.Adam(1e-2)
    dense.apply([("e", dense_p, SparseRows(rows, vals, 20))])  # non-lazy: densified, same first step
    np.testing.assert_allclose(p, dense_p, rtol=1e-6)
    # second step on other rows: lazy leaves row 1's moments alone, dense decays them
    lazy.apply([("e", p, SparseRows(np.array([2]), vals[:1], 20))])
    dense.apply([("e", dense_p, SparseRows(np.array([2]), vals[:1], 20))])
    assert not np.array_equal(p[1], dense_p[1])


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_matches_torch(nesterov):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    p0 = rng.standard_normal((5, 6)).astype(np.float32)
    p = p0.copy()
    opt = optim.SGD(0.1, momentum=0.9, nesterov=nesterov)
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9, nesterov=nesterov)
    for _ in range(4):
        g = rng.standard_normal(p0.shape).astype(np.float32)
        opt.apply([("w", p, g)])
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_sgd_sparse_rows():
    p = np.ones((6, 2), np.float32)
    optim.SGD(0.5).apply([("e", p, SparseRows(np.array([0, 3]), np.full((2, 2), 2, np.float32), 6))])
    np.testing.assert_array_equal(p[:, 0], [0, 1, 1, 0, 1, 1])


def test_state_round_trip_continues_identically():
    rng = np.random.default_rng(4)
    p = rng.standard_normal((4, 4)).astype(np.float32)
    grads = [rng.standard_normal((4, 4)).astype(np.float32) for _ in range(4)]
    a = optim.Adam(1e-2)
    pa = p.copy()
    for g in grads:
        a.apply([("w", pa, g)])
    b = optim.Adam(1e-2)
    pb = p.copy()
    for g in grads[:2]:
        b.apply([("w", pb, g)])
    c = optim.Adam(**b.get_config())
    c.set_state(b.get_state())
    for g in grads[2:]:
        c.apply([("w", pb, g)])
    np.testing.assert_array_equal(pa, pb)
    assert c.step == 4
    with pytest.raises(ValueError, match="slots"):
        c.set_state({"step": 1, "slots": {"w": {"m": p}}})


@pytest.mark.parametrize("bad", [
    lambda: optim.Adam(learning_rate=-1), lambda: optim.Adam(learning_rate=float("nan")), lambda: optim.Adam(beta_1=1.0),
    lambda: optim.Adam(eps_placement="x"), lambda: optim.SGD(momentum=1.5), lambda: optim.get("adagrad"),
    lambda: optim.RMSprop(rho=1.0), lambda: optim.RMSprop(momentum=-0.1), lambda: optim.RMSprop(epsilon=float("inf")),
])
def test_bad_hyperparameters(bad):
    with pytest.raises(ValueError):
        bad()


def test_get():
    assert isinstance(optim.get("adam"), optim.Adam) and isinstance(optim.get("SGD"), optim.SGD)
    assert optim.get({"class_name": "Adam", "config": {"lazy": True}}).lazy
    with pytest.raises(TypeError):
        optim.get(3)


@pytest.mark.parametrize("module, kind, base", [("optim", "optimizer", "an Optimizer"),
                                                ("initializers", "initializer", "an Initializer")])
def test_get_resolves_names_and_configs_and_names_bad_identifiers(module, kind, base):
    """optim.get and nn.initializers.get (one lookup, _checks.from_identifier): instances,
    names in any case and config dicts resolve; anything else says what was expected."""
    from fastscale.nn import initializers

    mod = optim if module == "optim" else initializers
    inst = mod.Adam() if module == "optim" else initializers.RandomNormal(stddev=2.0)
    assert mod.get(inst) is inst
    name = "ADAM" if module == "optim" else "Random_Normal"
    assert type(mod.get(name)) is type(inst)
    cfg = {"class_name": type(inst).__name__, "config": inst.get_config()}
    assert type(mod.get(cfg)) is type(inst) and mod.get(cfg).get_config() == inst.get_config()
    with pytest.raises(ValueError, match=rf"^{kind}: unknown name 'nope'; expected one of \["):
        mod.get("nope")
    with pytest.raises(ValueError, match=rf"^{kind}: unknown class 'Nope'"):
        mod.get({"class_name": "Nope"})
    with pytest.raises(TypeError, match=rf"^{kind}: expected {base}, a name or a config dict, got int"):
        mod.get(3)


def _keras_rmsprop(p, grads, lr=1e-3, rho=0.9, momentum=0.0, eps=1e-7, centered=False):
    """keras.optimizers.RMSprop.update_step, float64."""
    p = p.astype(np.float64).copy()
    vel, mom, avg = np.zeros_like(p), np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        vel = rho * vel + (1 - rho) * np.square(g)
        if centered:
            avg = rho * avg + (1 - rho) * g
            denominator = vel - np.square(avg)
        else:
            denominator = vel
        increment = lr * g / np.sqrt(denominator + eps)
        if momentum > 0:
            mom = momentum * mom + increment
            p -= mom
        else:
            p -= increment
    return p


@pytest.mark.parametrize("momentum", [0.0, 0.8])
@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rmsprop_is_keras(momentum, centered, dtype):
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal((6, 3)).astype(dtype)
    grads = [rng.standard_normal((6, 3)).astype(dtype) for _ in range(5)]
    grads[2] = np.zeros_like(grads[2])
    grads[2][1] = 1.0  # a step where most rows get no gradient: their accumulators still decay
    want = _keras_rmsprop(p0, grads, 1e-2, 0.9, momentum, 1e-7, centered)
    dense, sparse = p0.copy(), p0.copy()
    a = optim.RMSprop(1e-2, momentum=momentum, centered=centered)
    b = optim.RMSprop(1e-2, momentum=momentum, centered=centered)
    for g in grads:
        a.apply([("w", dense, g)])
        rows = np.flatnonzero(np.abs(g).sum(1))
        b.apply([("w", sparse, SparseRows(rows, g[rows], 6))])  # a sparse gradient is made dense, as in Keras
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dense, want, **tol)
    np.testing.assert_array_equal(dense, sparse)
    assert dense.dtype == dtype
    assert sorted(a.slots["w"]) == sorted(["velocity"] + (["momentum"] if momentum else [])
                                          + (["average_gradient"] if centered else []))


def test_rmsprop_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    p0 = rng.standard_normal((5, 4))
    p = p0.copy()
    # torch adds eps after the square root; with eps = 0 both are lr * g / sqrt(v).
    opt = optim.RMSprop(1e-2, rho=0.9, momentum=0.5, epsilon=0.0, centered=True)
    tp = torch.nn.Parameter(torch.tensor(p0))
    topt = torch.optim.RMSprop([tp], lr=1e-2, alpha=0.9, momentum=0.5, eps=0.0, centered=True)
    for _ in range(4):
        g = rng.standard_normal(p0.shape)
        opt.apply([("w", p, g)])
        tp.grad = torch.tensor(g)
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12)


def test_rmsprop_by_name_trains_and_resumes(tmp_path):
    from fastscale import nn

    rng = np.random.default_rng(7)
    x = rng.integers(1, 40, (120, 6))
    y = (x[:, 0] > 20).astype(int)

    def model():
        m = nn.Sequential([nn.Embedding(40, 8, mask_zero=True), nn.GlobalAveragePooling1D(), nn.Dense(1, activation="sigmoid")])
        m.compile(optimizer="rmsprop", loss="binary_crossentropy", seed=0)
        return m

    a = model()
    a.fit(x, y, epochs=4, verbose=0, seed=1)
    b = model()
    b.fit(x, y, epochs=2, verbose=0, seed=1)
    b.save(tmp_path / "b.fsm")
    c = nn.load_model(tmp_path / "b.fsm")
    assert isinstance(c.optimizer, optim.RMSprop)
    c.fit(x, y, epochs=2, verbose=0, seed=1)
    for wa, wc in zip(a.get_weights(), c.get_weights()):
        np.testing.assert_array_equal(wa, wc)
