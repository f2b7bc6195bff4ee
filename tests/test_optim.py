"""fastscale.optim: Adam (Keras and PyTorch epsilon placement), lazy Adam, SGD, state."""
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
    lambda: optim.Adam(eps_placement="x"), lambda: optim.SGD(momentum=1.5), lambda: optim.get("rmsprop"),
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
