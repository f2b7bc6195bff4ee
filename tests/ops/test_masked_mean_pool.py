"""masked_mean_pool / masked_mean_pool_backward: every backend against the float64 reference."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastscale as fs
from fastscale.ops.masked_mean_pool import reference, reference_backward

from ..conftest import to_np

D_VALUES = (1, 3, 17, 128, 300)


@st.composite
def cases(draw):
    """x (B, T, D), a mask with all-false and all-true rows likely, and a dout (B, D)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    D = draw(st.sampled_from(D_VALUES))
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    B = draw(st.integers(0, 6))
    T = draw(st.integers(0, 40))
    density = draw(st.sampled_from((0.0, 0.1, 0.5, 1.0)))
    mask = rng.random((B, T)) < density
    if B and draw(st.booleans()):
        mask[0] = False  # an all-false row
    x = rng.standard_normal((B, T, D)).astype(dtype)
    dout = rng.standard_normal((B, D)).astype(dtype)
    return x, mask, dout


def close_to_reference(got, ref, ref_abs, dtype):
    """|got - ref| within a few ulps of the summed magnitudes (float32 sums round)."""
    rel = 4e-6 if dtype == np.float32 else 1e-14
    assert np.all(np.abs(got - ref) <= rel * ref_abs + 1e-300), np.max(np.abs(got - ref))


@given(case=cases())
def test_forward_matches_reference(backend, to_xp, case):
    x, mask, _ = case
    out = to_np(fs.masked_mean_pool(to_xp(x), to_xp(mask), backend=backend))
    assert out.dtype == x.dtype and out.shape == (x.shape[0], x.shape[2])
    assert np.all(np.isfinite(out))
    close_to_reference(out, reference(x, mask), reference(np.abs(x), mask), x.dtype)
    assert not np.any(out[~mask.any(axis=1)]), "an all-false row must give zeros"


@given(case=cases())
def test_backward_matches_reference(backend, to_xp, case):
    x, mask, dout = case
    dx = to_np(fs.masked_mean_pool_backward(to_xp(dout), to_xp(mask), backend=backend))
    assert dx.dtype == dout.dtype and dx.shape == x.shape
    ref = reference_backward(dout, mask)
    # One division per element: within an ulp of the float64 value.
    np.testing.assert_allclose(dx, ref, rtol=1.2e-7 if dout.dtype == np.float32 else 1e-15, atol=0)
    assert not np.any(dx[~mask]), "masked-out positions get no gradient"


@given(case=cases())
def test_reference_backward_is_the_gradient(case):
    """Central finite differences of reference() in float64 against reference_backward()."""
    x, mask, dout = case
    x, dout = x.astype(np.float64)[:3, :6, :3], dout.astype(np.float64)[:3, :3]
    mask = mask[:3, :6]
    grad = reference_backward(dout, mask)
    eps = 1e-6
    num = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += eps
        xm[idx] -= eps
        num[idx] = (np.sum(dout * reference(xp_, mask)) - np.sum(dout * reference(xm, mask))) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


def test_masked_out_nan_and_inf_do_not_leak(backend, to_xp):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 8, 5)).astype(np.float32)
    mask = np.zeros((3, 8), bool)
    mask[0, :4] = True
    mask[1, 2] = True
    x[0, 4:] = np.nan
    x[1, :2] = np.inf
    x[2] = -np.inf  # row 2 is all masked out
    out = to_np(fs.masked_mean_pool(to_xp(x), to_xp(mask), backend=backend))
    np.testing.assert_allclose(out[0], x[0, :4].mean(0), rtol=1e-6)
    np.testing.assert_array_equal(out[1], x[1, 2])
    np.testing.assert_array_equal(out[2], 0)
    dout = np.full((3, 5), np.nan, np.float32)
    dx = to_np(fs.masked_mean_pool_backward(to_xp(dout), to_xp(mask), backend=backend))
    assert np.all(dx[~mask] == 0) and np.all(np.isnan(dx[mask]))


def test_all_false_rows_are_zero_not_nan(backend, to_xp):
    x = np.ones((2, 3, 4), np.float64)
    mask = np.array([[False] * 3, [True, False, True]])
    out = to_np(fs.masked_mean_pool(to_xp(x), to_xp(mask), backend=backend))
    np.testing.assert_array_equal(out, [[0] * 4, [1] * 4])
    dx = to_np(fs.masked_mean_pool_backward(to_xp(np.ones((2, 4))), to_xp(mask), backend=backend))
    np.testing.assert_array_equal(dx[0], 0)
    np.testing.assert_array_equal(dx[1, :, 0], [0.5, 0, 0.5])


def test_noncontiguous_inputs(backend, to_xp):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 20, 16)).astype(np.float32)
    mask = rng.random((4, 20)) < 0.5
    xs, ms = x[:, ::2], mask[:, ::2]  # strided views
    out = to_np(fs.masked_mean_pool(to_xp(xs), to_xp(ms), backend=backend))
    close_to_reference(out, reference(xs, ms), reference(np.abs(xs), ms), np.float32)
    dout = np.asfortranarray(rng.standard_normal((4, 16)).astype(np.float32))
    dx = to_np(fs.masked_mean_pool_backward(to_xp(dout), to_xp(ms), backend=backend))
    np.testing.assert_allclose(dx, reference_backward(dout, ms), rtol=1.2e-7)


def test_cpp_bitwise_identical_for_1_and_2_threads():
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 300, 130)).astype(np.float32)
    mask = np.arange(300)[None, :] < rng.integers(0, 300, 64)[:, None]
    dout = rng.standard_normal((64, 130)).astype(np.float32)
    results = []
    before = fs.get_num_threads()
    try:
        for n in (1, 2):
            fs.set_num_threads(n)
            results.append((fs.masked_mean_pool(x, mask, backend="cpp"),
                            fs.masked_mean_pool_backward(dout, mask, backend="cpp")))
    finally:
        fs.set_num_threads(before)
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


# ---------------------------------------------------------------------------- bad inputs
X = np.zeros((2, 3, 4), np.float32)
MASK = np.ones((2, 3), bool)

BAD_FORWARD = [
    ("mask uint8", dict(mask=MASK.astype(np.uint8)), TypeError),
    ("mask int", dict(mask=MASK.astype(np.int64)), TypeError),
    ("mask float", dict(mask=MASK.astype(np.float32)), TypeError),
    ("mask list", dict(mask=MASK.tolist()), TypeError),
    ("x list", dict(x=X.tolist()), TypeError),
    ("x int", dict(x=X.astype(np.int32)), TypeError),
    ("x float16", dict(x=X.astype(np.float16)), TypeError),
    ("x 2-D", dict(x=np.zeros((2, 3), np.float32)), ValueError),
    ("x 4-D", dict(x=np.zeros((2, 3, 4, 1), np.float32)), ValueError),
    ("mask 1-D", dict(mask=np.ones(2, bool)), ValueError),
    ("mask 3-D", dict(mask=np.ones((2, 3, 1), bool)), ValueError),
    ("mask (B, T+1)", dict(mask=np.ones((2, 4), bool)), ValueError),
    ("mask (B+1, T)", dict(mask=np.ones((3, 3), bool)), ValueError),
]


@pytest.mark.parametrize("what,change,exc", BAD_FORWARD, ids=[c[0] for c in BAD_FORWARD])
def test_bad_forward_inputs(backend, to_xp, what, change, exc):
    args = dict(x=X, mask=MASK)
    args.update(change)
    conv = {k: (to_xp(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match="masked_mean_pool"):
        fs.masked_mean_pool(conv["x"], conv["mask"], backend=backend)


DOUT = np.zeros((2, 4), np.float32)
BAD_BACKWARD = [
    ("mask uint8", dict(mask=MASK.astype(np.uint8)), TypeError),
    ("mask list", dict(mask=MASK.tolist()), TypeError),
    ("dout list", dict(dout=DOUT.tolist()), TypeError),
    ("dout int", dict(dout=DOUT.astype(np.int64)), TypeError),
    ("dout 3-D", dict(dout=np.zeros((2, 3, 4), np.float32)), ValueError),
    ("dout 1-D", dict(dout=np.zeros(4, np.float32)), ValueError),
    ("dout rows != mask rows", dict(dout=np.zeros((3, 4), np.float32)), ValueError),
    ("mask 3-D", dict(mask=np.ones((2, 3, 1), bool)), ValueError),
    ("out wrong shape", dict(out=np.zeros((2, 3, 5), np.float32)), ValueError),
    ("out float64 with float32 dout", dict(out=np.zeros((2, 3, 4), np.float64)), TypeError),
    ("out read-only", dict(out=np.zeros((2, 3, 4), np.float32)), ValueError),
    ("out not C-contiguous", dict(out=np.zeros((4, 3, 2), np.float32).T), ValueError),
    ("out a list", dict(out=np.zeros((2, 3, 4)).tolist()), TypeError),
]


@pytest.mark.parametrize("what,change,exc", BAD_BACKWARD, ids=[c[0] for c in BAD_BACKWARD])
def test_bad_backward_inputs_write_nothing(backend, to_xp, what, change, exc):
    args = dict(dout=DOUT, mask=MASK, out=None)
    args.update(change)
    if what == "out read-only" and backend in ("cuda", "cupy"):
        pytest.skip("cupy arrays cannot be made read-only (to_xp copies a read-only numpy array to a writeable one)")
    if what == "out read-only":
        args["out"].flags.writeable = False
    if args["out"] is None:
        args["out"] = np.full((2, 3, 4), 3.0, np.float32)  # must come back untouched
    sentinel = np.array(args["out"], copy=True)
    conv = {k: (to_xp(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match="masked_mean_pool_backward"):
        fs.masked_mean_pool_backward(conv["dout"], conv["mask"], out=conv["out"], backend=backend)
    if isinstance(args["out"], np.ndarray):
        np.testing.assert_array_equal(to_np(conv["out"]), sentinel, err_msg="nothing may be written before the error")


def test_backward_reuses_out(backend, to_xp):
    rng = np.random.default_rng(4)
    mask = rng.random((3, 7)) < 0.5
    dout = rng.standard_normal((3, 5))
    buf = to_xp(np.full((3, 7, 5), 7.0))  # stale contents must be overwritten
    dx = fs.masked_mean_pool_backward(to_xp(dout), to_xp(mask), out=buf, backend=backend)
    assert dx is buf
    np.testing.assert_allclose(to_np(dx), reference_backward(dout, mask), rtol=1e-15)


def test_backend_selection_is_strict():
    with pytest.raises(ValueError, match="unknown backend"):
        fs.masked_mean_pool(X, MASK, backend="fortran")
    with pytest.raises(ValueError, match="takes cupy arrays"):
        fs.masked_mean_pool_backward(DOUT, MASK, backend="cuda")
