"""dense_forward / dense_backward: every backend against the float64 reference."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastscale as fs
from fastscale.ops.dense import reference, reference_backward

from ..conftest import to_np

ACTS = (None, "linear", "relu", "sigmoid", "tanh")
FEATURES = (0, 1, 3, 17, 128, 300)


def _cpp_or_skip():
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")


def make(B, I, O, dtype, seed=0, bias=True):
    """x ~ N(0, 1), weight scaled by 1/sqrt(I) so pre-activations are O(1) for any I."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, I)).astype(dtype)
    w = (rng.standard_normal((I, O)) / np.sqrt(max(I, 1))).astype(dtype)
    b = rng.standard_normal(O).astype(dtype) if bias else None
    dout = rng.standard_normal((B, O)).astype(dtype)
    return x, w, b, dout


@st.composite
def dense_cases(draw):
    I = draw(st.sampled_from(FEATURES))
    O = draw(st.sampled_from(FEATURES[1:] + (64, 70)))
    # B covers 0, tails of the 4-row tile, and more than one tile; the float64 loops of
    # the reference bound B * I * O.
    B = draw(st.integers(0, 13))
    if B * I * O > 60_000:
        B = max(1, 60_000 // max(1, I * O))
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    x, w, b, dout = make(B, I, O, dtype, seed=draw(st.integers(0, 2**32 - 1)), bias=draw(st.booleans()))
    return dict(x=x, w=w, b=b, dout=dout, act=draw(st.sampled_from(ACTS)))


def tol(dtype, K=1):
    if dtype == np.float32:
        a = 2e-6 * max(1.0, np.sqrt(K)) * 4
        return dict(rtol=2e-5, atol=a)
    return dict(rtol=1e-12, atol=1e-12)


@given(case=dense_cases())
def test_forward_matches_reference(backend, to_xp, case):
    x, w, b, act = case["x"], case["w"], case["b"], case["act"]
    out = fs.dense_forward(to_xp(x), to_xp(w), to_xp(b), act, backend=backend)
    ref = reference(x, w, b, act)
    out = to_np(out)
    assert out.dtype == x.dtype and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, **tol(x.dtype, x.shape[1]))


@given(case=dense_cases(), need_dx=st.booleans())
def test_backward_matches_reference(backend, to_xp, case, need_dx):
    x, w, b, act, dout = case["x"], case["w"], case["b"], case["act"], case["dout"]
    out = reference(x, w, b, act).astype(x.dtype)
    dx, dw, db = fs.dense_backward(
        to_xp(dout), to_xp(x), to_xp(w), to_xp(out), act, need_dx=need_dx, backend=backend
    )
    rdx, rdw, rdb = reference_backward(dout, x, w, out, act)
    if need_dx:
        dx = to_np(dx)
        assert dx.dtype == x.dtype and dx.shape == x.shape
        np.testing.assert_allclose(dx, rdx, **tol(x.dtype, w.shape[1]))
    else:
        assert dx is None
    dw, db = to_np(dw), to_np(db)
    assert dw.shape == w.shape and db.shape == (w.shape[1],) and dw.dtype == db.dtype == x.dtype
    np.testing.assert_allclose(dw, rdw, **tol(x.dtype, x.shape[0]))
    np.testing.assert_allclose(db, rdb, **tol(x.dtype, x.shape[0]))


@pytest.mark.parametrize("act", ACTS)
def test_reference_backward_is_the_gradient(act):
    """Central finite differences of sum(dout * reference(...)) in float64."""
    x, w, b, dout = make(3, 4, 3, np.float64, seed=5)
    out = reference(x, w, b, act)
    dx, dw, db = reference_backward(dout, x, w, out, act)
    eps = 1e-6

    def numeric(arr, f):
        g = np.zeros_like(arr)
        for idx in np.ndindex(*arr.shape):
            p, m = arr.copy(), arr.copy()
            p[idx] += eps
            m[idx] -= eps
            g[idx] = (f(p) - f(m)) / (2 * eps)
        return g

    loss = lambda xx, ww, bb: np.sum(dout * reference(xx, ww, bb, act))  # noqa: E731
    np.testing.assert_allclose(dx, numeric(x, lambda v: loss(v, w, b)), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(dw, numeric(w, lambda v: loss(x, v, b)), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(db, numeric(b, lambda v: loss(x, w, v)), rtol=1e-6, atol=1e-8)


# The origin model's two layers.  The float64 loops are slow at these sizes: compute once.
ORIGIN = {"hidden": (64, 128, 64, "relu"), "output": (64, 64, 1, "sigmoid")}
_origin_cache = {}


def origin_case(name):
    if name not in _origin_cache:
        B, I, O, act = ORIGIN[name]
        x, w, b, dout = make(B, I, O, np.float32, seed=11)
        out = reference(x, w, b, act)
        _origin_cache[name] = (x, w, b, dout, act, out, reference_backward(dout, x, w, out.astype(np.float32), act))
    return _origin_cache[name]


@pytest.mark.parametrize("name", list(ORIGIN))
def test_origin_shapes(backend, to_xp, name):
    x, w, b, dout, act, ref, (rdx, rdw, rdb) = origin_case(name)
    out = to_np(fs.dense_forward(to_xp(x), to_xp(w), to_xp(b), act, backend=backend))
    np.testing.assert_allclose(out, ref, **tol(np.float32, x.shape[1]))
    dx, dw, db = fs.dense_backward(to_xp(dout), to_xp(x), to_xp(w), to_xp(ref.astype(np.float32)), act, backend=backend)
    np.testing.assert_allclose(to_np(dx), rdx, **tol(np.float32, w.shape[1]))
    np.testing.assert_allclose(to_np(dw), rdw, **tol(np.float32, x.shape[0]))
    np.testing.assert_allclose(to_np(db), rdb, **tol(np.float32, x.shape[0]))


def test_linear_is_none_and_needs_no_out(backend, to_xp):
    x, w, b, dout = make(5, 7, 9, np.float64, seed=3)
    a = to_np(fs.dense_forward(to_xp(x), to_xp(w), to_xp(b), "linear", backend=backend))
    n = to_np(fs.dense_forward(to_xp(x), to_xp(w), to_xp(b), None, backend=backend))
    np.testing.assert_array_equal(a, n)
    g1 = fs.dense_backward(to_xp(dout), to_xp(x), to_xp(w), None, "linear", backend=backend)
    g2 = fs.dense_backward(to_xp(dout), to_xp(x), to_xp(w), to_xp(a), None, backend=backend)
    for u, v in zip(g1, g2):
        np.testing.assert_array_equal(to_np(u), to_np(v))


def test_saturated_activations_stay_finite(backend, to_xp, recwarn):
    """Pre-activations of +-1e4: sigmoid gives exactly 0 / 1 and tanh -1 / 1, no overflow."""
    x = np.array([[1e4], [-1e4], [0.0]], np.float32)
    w = np.ones((1, 2), np.float32)
    with np.errstate(over="raise", invalid="raise"):
        s = to_np(fs.dense_forward(to_xp(x), to_xp(w), None, "sigmoid", backend=backend))
        t = to_np(fs.dense_forward(to_xp(x), to_xp(w), None, "tanh", backend=backend))
    np.testing.assert_array_equal(s, [[1, 1], [0, 0], [0.5, 0.5]])
    np.testing.assert_array_equal(t, [[1, 1], [-1, -1], [0, 0]])


def test_noncontiguous_inputs(backend, to_xp):
    x, w, b, dout = make(9, 13, 21, np.float32, seed=4)
    xf, wt = np.asfortranarray(x), np.ascontiguousarray(w.T).T  # neither is C-contiguous
    out = to_np(fs.dense_forward(to_xp(xf), to_xp(wt), to_xp(b[::1]), "tanh", backend=backend))
    ref = reference(x, w, b, "tanh")
    np.testing.assert_allclose(out, ref, **tol(np.float32, 13))
    dx, dw, db = fs.dense_backward(
        to_xp(np.asfortranarray(dout)), to_xp(xf), to_xp(wt), to_xp(np.asfortranarray(out)), "tanh", backend=backend
    )
    rdx, rdw, rdb = reference_backward(dout, x, w, out, "tanh")
    np.testing.assert_allclose(to_np(dx), rdx, **tol(np.float32, 21))
    np.testing.assert_allclose(to_np(dw), rdw, **tol(np.float32, 9))


def test_inputs_are_not_modified(backend, to_xp):
    x, w, b, dout = make(6, 5, 4, np.float32, seed=6)
    copies = [a.copy() for a in (x, w, b, dout)]
    out = fs.dense_forward(to_xp(x), to_xp(w), to_xp(b), "relu", backend=backend)
    out_copy = to_np(out).copy()
    fs.dense_backward(to_xp(dout), to_xp(x), to_xp(w), out, "relu", backend=backend)
    for a, c in zip((x, w, b, dout), copies):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(to_np(out), out_copy)


# Big enough to fork (>= 2**20 multiply-adds per GEMM), plus the origin shapes (one thread).
THREAD_SHAPES = [(64, 128, 64, "relu"), (64, 64, 1, "sigmoid"), (130, 300, 70, "tanh"), (1030, 3, 401, None)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_cpp_bitwise_identical_for_1_and_2_threads(dtype):
    _cpp_or_skip()
    results = []
    before = fs.get_num_threads()
    try:
        for n in (1, 2):
            fs.set_num_threads(n)
            res = []
            for B, I, O, act in THREAD_SHAPES:
                x, w, b, dout = make(B, I, O, dtype, seed=B)
                out = fs.dense_forward(x, w, b, act, backend="cpp")
                res += [out, *fs.dense_backward(dout, x, w, out, act, backend="cpp")]
            results.append(res)
    finally:
        fs.set_num_threads(before)
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


def test_isa_variants_agree(tmp_path):
    """The scalar, AVX2 and AVX-512 builds use different tile shapes; all match the reference."""
    _cpp_or_skip()
    import os
    import subprocess
    import sys

    cases = [(13, 37, 70, "relu"), (6, 17, 1, "sigmoid"), (5, 3, 29, "tanh")]
    arrays = {}
    for k, (B, I, O, _) in enumerate(cases):
        x, w, b, dout = make(B, I, O, np.float32, seed=k)
        arrays.update({f"x{k}": x, f"w{k}": w, f"b{k}": b, f"d{k}": dout})
    np.savez(tmp_path / "case.npz", **arrays)
    code = (
        "import numpy as np, fastscale as fs, sys; d = np.load(sys.argv[1]); acts = sys.argv[3].split(',');"
        "res = {};\n"
        "for k, act in enumerate(acts):\n"
        "    act = None if act == 'none' else act\n"
        "    o = fs.dense_forward(d[f'x{k}'], d[f'w{k}'], d[f'b{k}'], act, backend='cpp')\n"
        "    g = fs.dense_backward(d[f'd{k}'], d[f'x{k}'], d[f'w{k}'], o, act, backend='cpp')\n"
        "    res.update({f'o{k}': o, f'dx{k}': g[0], f'dw{k}': g[1], f'db{k}': g[2]})\n"
        "np.savez(sys.argv[2], **res)"
    )
    acts = ",".join(a or "none" for *_, a in cases)
    for isa in ("scalar", "avx2", "avx512"):
        env = dict(os.environ, FASTSCALE_ISA=isa)
        outp = tmp_path / f"{isa}.npz"
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "case.npz"), str(outp), acts], check=True, env=env)
        got = np.load(outp)
        for k, (B, I, O, act) in enumerate(cases):
            x, w, b, dout = (arrays[f"{p}{k}"] for p in "xwbd")
            ref = reference(x, w, b, act)
            np.testing.assert_allclose(got[f"o{k}"], ref, **tol(np.float32, I), err_msg=isa)
            rdx, rdw, rdb = reference_backward(dout, x, w, got[f"o{k}"], act)
            np.testing.assert_allclose(got[f"dx{k}"], rdx, **tol(np.float32, O), err_msg=isa)
            np.testing.assert_allclose(got[f"dw{k}"], rdw, **tol(np.float32, B), err_msg=isa)
            np.testing.assert_allclose(got[f"db{k}"], rdb, **tol(np.float32, B), err_msg=isa)


# ---------------------------------------------------------------------------- bad inputs
X = np.ones((4, 3), np.float32)
Wt = np.ones((3, 2), np.float32)
Bv = np.ones(2, np.float32)

BAD_FORWARD = [
    ("I mismatch", dict(weight=np.ones((5, 2), np.float32)), ValueError),
    ("3-D x", dict(x=np.ones((4, 3, 1), np.float32)), ValueError),
    ("1-D x", dict(x=np.ones(3, np.float32)), ValueError),
    ("1-D weight", dict(weight=np.ones(3, np.float32)), ValueError),
    ("3-D weight", dict(weight=np.ones((3, 2, 1), np.float32)), ValueError),
    ("bias wrong length", dict(bias=np.ones(3, np.float32)), ValueError),
    ("2-D bias", dict(bias=np.ones((1, 2), np.float32)), ValueError),
    ("unknown activation", dict(activation="softmax"), ValueError),
    ("activation not a string", dict(activation=1), ValueError),
    ("mixed x / weight dtypes", dict(weight=Wt.astype(np.float64)), TypeError),
    ("bias dtype differs", dict(bias=Bv.astype(np.float64)), TypeError),
    ("int x", dict(x=X.astype(np.int32)), TypeError),
    ("float16 x", dict(x=X.astype(np.float16)), TypeError),
    ("list x", dict(x=X.tolist()), TypeError),
    ("list weight", dict(weight=Wt.tolist()), TypeError),
    ("scalar bias", dict(bias=1.0), TypeError),
]


@pytest.mark.parametrize("what,change,exc", BAD_FORWARD, ids=[c[0] for c in BAD_FORWARD])
def test_bad_forward_inputs(backend, to_xp, what, change, exc):
    args = dict(x=X, weight=Wt, bias=Bv, activation="relu")
    args.update(change)
    conv = {k: (to_xp(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match="dense_forward"):
        fs.dense_forward(conv["x"], conv["weight"], conv["bias"], conv["activation"], backend=backend)


OUT = np.ones((4, 2), np.float32)
DOUT = np.ones((4, 2), np.float32)

BAD_BACKWARD = [
    ("I mismatch", dict(weight=np.ones((5, 2), np.float32)), ValueError),
    ("dout wrong shape", dict(dout=np.ones((4, 3), np.float32)), ValueError),
    ("dout rows != B", dict(dout=np.ones((5, 2), np.float32)), ValueError),
    ("3-D dout", dict(dout=np.ones((4, 2, 1), np.float32)), ValueError),
    ("out wrong shape", dict(out=np.ones((4, 3), np.float32)), ValueError),
    ("out missing for relu", dict(out=None), ValueError),
    ("3-D x", dict(x=np.ones((4, 3, 1), np.float32)), ValueError),
    ("unknown activation", dict(activation="gelu"), ValueError),
    ("dout dtype differs", dict(dout=DOUT.astype(np.float64)), TypeError),
    ("out dtype differs", dict(out=OUT.astype(np.float64)), TypeError),
    ("mixed x / weight dtypes", dict(weight=Wt.astype(np.float64)), TypeError),
    ("int dout", dict(dout=DOUT.astype(np.int64)), TypeError),
    ("list dout", dict(dout=DOUT.tolist()), TypeError),
    ("need_dx not a bool", dict(need_dx="yes"), TypeError),
]


@pytest.mark.parametrize("what,change,exc", BAD_BACKWARD, ids=[c[0] for c in BAD_BACKWARD])
def test_bad_backward_inputs(backend, to_xp, what, change, exc):
    args = dict(dout=DOUT, x=X, weight=Wt, out=OUT, activation="relu", need_dx=True)
    args.update(change)
    conv = {k: (to_xp(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match="dense_backward"):
        fs.dense_backward(
            conv["dout"], conv["x"], conv["weight"], conv["out"], conv["activation"], need_dx=conv["need_dx"],
            backend=backend,
        )
    # Nothing is updated in place: every input is as it was.
    for a in (X, Wt, OUT, DOUT):
        assert np.all(a == 1.0)


def test_backend_selection_is_strict():
    with pytest.raises(ValueError, match="unknown backend"):
        fs.dense_forward(X, Wt, Bv, backend="fortran")
    with pytest.raises(ValueError, match="takes cupy arrays"):
        fs.dense_backward(DOUT, X, Wt, OUT, "relu", backend="cupy")
