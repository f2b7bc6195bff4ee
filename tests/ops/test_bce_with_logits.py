"""bce_with_logits: every backend against the float64 reference."""
import importlib

import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastscale as fs

from ..conftest import to_np

# fastscale.ops.bce_with_logits is the function (re-exported); the module holds reference().
reference = importlib.import_module("fastscale.ops.bce_with_logits").reference


@st.composite
def bce_cases(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = draw(st.sampled_from(((), (1,), (3,), (64, 1), (17, 3), (2, 3, 5), (300,), (4097,))))
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    scale = draw(st.sampled_from((0.1, 1.0, 10.0, 100.0)))
    z = np.asarray(rng.standard_normal(shape) * scale).astype(dtype)
    if draw(st.booleans()):
        y = np.asarray(rng.random(shape) < 0.5).astype(dtype)  # hard labels
    else:
        y = np.asarray(rng.random(shape)).astype(dtype)  # soft labels
    return z, y


def tol(dtype, n):
    # dlogits are O(1/N); float32 rounding of sigmoid(z) - y is ~1e-7 of O(1).
    if dtype == np.float32:
        return dict(rtol=1e-5, atol=2e-7 / n), dict(rel=1e-5, abs=1e-6)
    return dict(rtol=1e-12, atol=1e-15 / n), dict(rel=1e-12, abs=1e-14)


@given(case=bce_cases())
def test_matches_reference(backend, to_xp, case):
    z, y = case
    loss, g = fs.bce_with_logits(to_xp(z), to_xp(y), backend=backend)
    rloss, rg = reference(z, y)
    g = to_np(g)
    assert isinstance(loss, float)
    assert g.shape == z.shape and g.dtype == z.dtype
    gtol, ltol = tol(z.dtype, z.size)
    assert loss == pytest.approx(rloss, **ltol)
    np.testing.assert_allclose(g, rg, **gtol)


def test_reference_gradient_is_the_derivative():
    """Central finite differences of the reference loss in float64."""
    rng = np.random.default_rng(0)
    z = rng.standard_normal(7) * 3
    y = rng.random(7)
    _, g = reference(z, y)
    eps = 1e-6
    num = np.zeros_like(z)
    for i in range(z.size):
        p, m = z.copy(), z.copy()
        p[i] += eps
        m[i] -= eps
        num[i] = (reference(p, y)[0] - reference(m, y)[0]) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_extreme_logits_are_finite(backend, to_xp, dtype):
    z = np.array([1e4, -1e4, 1e4, -1e4, 0.0, 30.0, -30.0], dtype)
    y = np.array([1, 0, 0, 1, 1, 0, 1], dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, g = fs.bce_with_logits(to_xp(z), to_xp(y), backend=backend)
    g = to_np(g)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    rloss, rg = reference(z, y)
    # Right answers, not just finite ones: the two wrong-side 1e4 logits cost 1e4 each.
    assert loss == pytest.approx(rloss, rel=1e-6)
    assert loss == pytest.approx((2e4 + np.log(2) + 60) / 7, rel=1e-6)
    np.testing.assert_allclose(g, rg, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(g[:4], np.array([0, 0, 1, -1]) / 7, atol=1e-12)


def test_matches_torch(backend, to_xp):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    z = (rng.standard_normal((64, 1)) * 4).astype(np.float64)
    y = (rng.random((64, 1)) < 0.5).astype(np.float64)
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.binary_cross_entropy_with_logits(zt, torch.tensor(y))
    lt.backward()
    loss, g = fs.bce_with_logits(to_xp(z), to_xp(y), backend=backend)
    assert loss == pytest.approx(lt.item(), rel=1e-12)
    np.testing.assert_allclose(to_np(g), zt.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_noncontiguous_inputs(backend, to_xp):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((6, 8)).astype(np.float32)
    y = (rng.random((6, 8)) < 0.5).astype(np.float32)
    loss, g = fs.bce_with_logits(to_xp(z.T), to_xp(y.T), backend=backend)
    rloss, rg = reference(z.T, y.T)
    assert loss == pytest.approx(rloss, rel=1e-6)
    assert to_np(g).shape == (8, 6)
    np.testing.assert_allclose(to_np(g), rg, rtol=1e-5, atol=1e-9)


def test_cpp_bitwise_identical_for_1_and_2_threads():
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    rng = np.random.default_rng(5)
    z = (rng.standard_normal(200_003) * 5).astype(np.float32)
    y = rng.random(200_003).astype(np.float32)
    before = fs.get_num_threads()
    res = []
    try:
        for n in (1, 2):
            fs.set_num_threads(n)
            res.append(fs.bce_with_logits(z, y, backend="cpp"))
    finally:
        fs.set_num_threads(before)
    assert res[0][0] == res[1][0]
    assert res[0][1].tobytes() == res[1][1].tobytes()
    assert res[0][0] == pytest.approx(reference(z, y)[0], rel=1e-9)


# ---------------------------------------------------------------------------- bad inputs
Z = np.zeros((4, 1), np.float32)
Y = np.ones((4, 1), np.float32)

BAD = [
    ("shape mismatch", dict(targets=np.ones(4, np.float32)), ValueError),
    ("size mismatch", dict(targets=np.ones((5, 1), np.float32)), ValueError),
    ("empty", dict(logits=np.zeros((0, 1), np.float32), targets=np.zeros((0, 1), np.float32)), ValueError),
    ("target above 1", dict(targets=np.array([[1.0], [1.5], [0.0], [0.0]], np.float32)), ValueError),
    ("negative target", dict(targets=np.array([[0.0], [0.0], [0.0], [-0.1]], np.float32)), ValueError),
    ("NaN target", dict(targets=np.array([[0.0], [np.nan], [0.0], [1.0]], np.float32)), ValueError),
    ("mixed dtypes", dict(targets=Y.astype(np.float64)), TypeError),
    ("int targets", dict(targets=Y.astype(np.int64)), TypeError),
    ("bool targets", dict(targets=Y.astype(bool)), TypeError),
    ("int logits", dict(logits=Z.astype(np.int32)), TypeError),
    ("float16 logits", dict(logits=Z.astype(np.float16), targets=Y.astype(np.float16)), TypeError),
    ("list logits", dict(logits=Z.tolist()), TypeError),
    ("scalar targets", dict(targets=1.0), TypeError),
]


@pytest.mark.parametrize("what,change,exc", BAD, ids=[c[0] for c in BAD])
def test_bad_inputs(backend, to_xp, what, change, exc):
    args = dict(logits=Z, targets=Y)
    args.update(change)
    conv = {k: (to_xp(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match="bce_with_logits") as info:
        fs.bce_with_logits(conv["logits"], conv["targets"], backend=backend)
    if "target" in what and exc is ValueError and "mismatch" not in what:
        # The message names the first bad position and its value.
        bad = args["targets"].reshape(-1)
        pos = int(np.argmax(~((bad >= 0) & (bad <= 1))))
        assert f"[{pos}, 0]" in str(info.value)
