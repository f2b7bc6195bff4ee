"""adam_step / sparse_adam_step: every backend against the float64 reference, PyTorch's
optimizers as an outside check of the formulas, bad inputs, thread-count reproducibility."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastscale
from fastscale.ops import adam as A


from ..conftest import to_np

DIMS = (0, 1, 3, 17, 128, 300)
BETA1 = (0.0, 0.5, 0.9)
BETA2 = (0.0, 0.9, 0.999)


def _state(rng, shape, dtype):
    """param ~ N(0, 1), grad ~ N(0, 1) with some exact zeros, m ~ 0.1 N(0,1), v >= 0 (some 0)."""
    p = rng.standard_normal(shape)
    g = rng.standard_normal(shape) * (rng.random(shape) > 0.1)
    m = 0.1 * rng.standard_normal(shape)
    v = rng.random(shape) ** 2 * (rng.random(shape) > 0.1)
    return [a.astype(dtype) for a in (p, g, m, v)]


def _tol(dtype):
    # float32 math: ~1e-7 per operation, a few operations per step, a few steps; with beta2 = 0
    # and |g| close to eps the ratio m / (sqrt(v) + eps) loses a few more bits (seen: 1.6e-4
    # relative on one update of lr = 0.05, identically on every backend).
    return dict(rtol=5e-5, atol=5e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)


def _close(got, want, dtype, what, skip=None):
    got = to_np(got).astype(np.float64)
    if skip is not None and dtype == np.float32:
        got, want = got[~skip], np.asarray(want)[~skip]
    np.testing.assert_allclose(got, want, **_tol(dtype), err_msg=what)


def _ill_conditioned(p, grad, h, v=None):
    """Elements whose float32 update no float32 kernel can match to 5e-5: when v is this
    step's g * g alone (beta2 = 0, or v was 0: then v = (1 - beta2) g * g) and L2 decay makes
    g = grad + wd * p cancel to a few ulps, the step alpha * m / (sqrt(v) + eps) carries that
    cancellation's relative error (hypothesis found V=1000, d=300, beta2=0, eps=1e-8,
    wd=0.01: 9e-4 relative on one element of 300,000; and beta2=0.9 with v=0 at step 1:
    5.5e-5, on every backend alike)."""
    p = np.asarray(p, np.float64)
    grad = np.asarray(grad, np.float64)
    shape = np.broadcast_shapes(p.shape, grad.shape)
    wd = h.get("weight_decay", 0.0)
    if not wd or h.get("decoupled", False):
        return np.zeros(shape, bool)
    fresh = np.full(shape, h.get("beta2", 0.999) == 0.0) if v is None else (h.get("beta2", 0.999) == 0.0) | (np.asarray(v) == 0)
    return fresh & (np.abs(grad + wd * p) < 1e-2 * (np.abs(grad) + wd * np.abs(p)))


hyper = st.fixed_dictionaries(
    {
        "lr": st.sampled_from([0.0, 1e-3, 0.05]),
        "beta1": st.sampled_from(BETA1),
        "beta2": st.sampled_from(BETA2),
        "eps": st.sampled_from([1e-8, 1e-7, 1e-3]),
        "eps_placement": st.sampled_from(["keras", "torch"]),
        "weight_decay": st.sampled_from([0.0, 0.01, 0.5]),
        "decoupled": st.booleans(),
    }
)


# ---------------------------------------------------------------------------- dense
@given(
    lead=st.lists(st.sampled_from([1, 2, 3]), max_size=2),
    d=st.sampled_from(DIMS),
    dtype=st.sampled_from([np.float32, np.float64]),
    h=hyper,
    t0=st.sampled_from([1, 2, 10, 1000]),
    steps=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_adam_step_matches_reference(backend, to_xp, lead, d, dtype, h, t0, steps, seed):
    shape = tuple(lead) + (d,)
    p, g, m, v = _state(np.random.default_rng(seed), shape, dtype)
    rp, rm, rv = (a.astype(np.float64) for a in (p, m, v))
    xp_p, xp_m, xp_v = to_xp(p.copy()), to_xp(m.copy()), to_xp(v.copy())
    skip = np.zeros(shape, bool)
    for t in range(t0, t0 + steps):
        gt = g * np.asarray(t - t0 + 1, dtype)  # a different gradient each step
        skip |= _ill_conditioned(rp, gt, h, rv)
        assert fastscale.adam_step(xp_p, to_xp(gt), xp_m, xp_v, step=t, backend=backend, **h) is None
        rp, rm, rv = A.reference(rp, gt, rm, rv, step=t, **h)
    for got, want, what in ((xp_p, rp, "param"), (xp_m, rm, "m"), (xp_v, rv, "v")):
        assert got.dtype == dtype and got.shape == shape
        _close(got, want, dtype, what, skip if what == "param" else None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("placement", ["keras", "torch"])
def test_adam_step_large_matches_reference(backend, to_xp, dtype, placement):
    # Large enough for the cpp parallel path, and not a multiple of its 64-element blocks.
    p, g, m, v = _state(np.random.default_rng(1), (70_001,), dtype)
    h = dict(step=7, lr=0.01, weight_decay=0.1, decoupled=placement == "torch", eps_placement=placement)
    rp, rm, rv = A.reference(p, g, m, v, **h)
    xs = [to_xp(a.copy()) for a in (p, g, m, v)]
    fastscale.adam_step(*xs, backend=backend, **h)
    for got, want, what in ((xs[0], rp, "param"), (xs[2], rm, "m"), (xs[3], rv, "v")):
        _close(got, want, dtype, what)


def test_eps_placements_differ_as_documented():
    # Step 1 from zero moments: m = (1-b1) g, v = (1-b2) g^2, so the torch form moves
    # lr * |g| / (|g| + eps) and the Keras form lr * |g| / (|g| + eps / sqrt(1 - b2)).
    g = np.array([1e-6], np.float64)
    out = {}
    for pl in ("keras", "torch"):
        p, m, v = np.zeros(1), np.zeros(1), np.zeros(1)
        fastscale.adam_step(p, g, m, v, step=1, lr=1.0, eps=1e-6, eps_placement=pl, backend="numpy")
        out[pl] = -p[0]
    np.testing.assert_allclose(out["torch"], 1e-6 / (1e-6 + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(out["keras"], 1e-6 / (1e-6 + 1e-6 / np.sqrt(0.001)), rtol=1e-12)


@pytest.mark.parametrize("wd, decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_torch_placement_matches_torch_optim(cpu_backend, wd, decoupled):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal((5, 7))
    grads = [rng.standard_normal(p0.shape) for _ in range(4)]
    tp = torch.tensor(p0.copy(), requires_grad=True)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt = cls([tp], lr=0.01, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
    p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
    for t, g in enumerate(grads, start=1):
        tp.grad = torch.tensor(g)
        opt.step()
        fastscale.adam_step(p, g, m, v, step=t, lr=0.01, eps=1e-8, weight_decay=wd, decoupled=decoupled,
                            eps_placement="torch", backend=cpu_backend)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m, opt.state[tp]["exp_avg"].numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(v, opt.state[tp]["exp_avg_sq"].numpy(), rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------------------- sparse
@given(
    V=st.sampled_from([1, 5, 64, 1000]),
    d=st.sampled_from(DIMS[1:]),
    frac=st.sampled_from([0.0, 0.3, 1.0]),
    idt=st.sampled_from([np.int32, np.int64]),
    dtype=st.sampled_from([np.float32, np.float64]),
    h=hyper,
    t=st.sampled_from([1, 3, 1000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sparse_adam_step_matches_reference(backend, to_xp, V, d, frac, idt, dtype, h, t, seed):
    rng = np.random.default_rng(seed)
    p, _, m, v = _state(rng, (V, d), dtype)
    rows = np.flatnonzero(rng.random(V) < frac).astype(idt)
    values = rng.standard_normal((rows.shape[0], d)).astype(dtype)
    rp, rm, rv = A.reference_sparse(p, rows, values, m, v, step=t, **h)
    xs = [to_xp(a.copy()) for a in (p, m, v)]
    assert fastscale.sparse_adam_step(xs[0], to_xp(rows), to_xp(values), xs[1], xs[2], step=t, backend=backend,
                                      **h) is None
    untouched = np.setdiff1d(np.arange(V), rows)
    skip = np.zeros((V, d), bool)
    skip[rows] = _ill_conditioned(p[rows], values, h, v[rows])
    for got, want, start, what in zip(xs, (rp, rm, rv), (p, m, v), ("param", "m", "v")):
        _close(got, want, dtype, what, skip if what == "param" else None)
        np.testing.assert_array_equal(to_np(got)[untouched], start[untouched], err_msg=f"{what}: untouched rows")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd, decoupled", [(0.0, False), (0.1, False), (0.1, True)])
def test_sparse_equals_dense_on_touched_rows(backend, to_xp, dtype, wd, decoupled):
    """With zero gradient outside `rows`, the dense step gives the same touched rows; the
    untouched rows differ (dense decays their moments), and sparse leaves them as they were."""
    rng = np.random.default_rng(3)
    V, D = 200, 19
    p, _, m, v = _state(rng, (V, D), dtype)
    rows = np.sort(rng.choice(V, 60, replace=False)).astype(np.int64)
    values = rng.standard_normal((60, D)).astype(dtype)
    grad = np.zeros((V, D), dtype)
    grad[rows] = values
    h = dict(step=5, lr=0.01, weight_decay=wd, decoupled=decoupled, eps_placement="keras", backend=backend)
    dense = [to_xp(a.copy()) for a in (p, m, v)]
    sparse = [to_xp(a.copy()) for a in (p, m, v)]
    fastscale.adam_step(dense[0], to_xp(grad), dense[1], dense[2], **h)
    fastscale.sparse_adam_step(sparse[0], to_xp(rows), to_xp(values), sparse[1], sparse[2], **h)
    other = np.setdiff1d(np.arange(V), rows)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-15)
    for d_, s_, start in zip(dense, sparse, (p, m, v)):
        d_, s_ = to_np(d_), to_np(s_)
        np.testing.assert_allclose(s_[rows], d_[rows], **tol)
        np.testing.assert_array_equal(s_[other], start[other])
    assert not np.array_equal(to_np(dense[1])[other], m[other])  # dense did decay them


# ---------------------------------------------------------------------------- SparseRows gradient
@given(
    V=st.sampled_from([1, 5, 64, 1000]),
    d=st.sampled_from(DIMS),
    frac=st.sampled_from([0.0, 0.3, 1.0]),
    idt=st.sampled_from([np.int32, np.int64]),
    dtype=st.sampled_from([np.float32, np.float64]),
    h=hyper,
    t=st.sampled_from([1, 3, 1000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_adam_step_sparse_rows_grad_matches_reference(backend, to_xp, V, d, frac, idt, dtype, h, t, seed):
    """A SparseRows gradient is the dense step with zeros outside its rows (every row moves)."""
    rng = np.random.default_rng(seed)
    p, _, m, v = _state(rng, (V, d), dtype)
    rows = np.flatnonzero(rng.random(V) < frac).astype(idt)
    values = rng.standard_normal((rows.shape[0], d)).astype(dtype)
    grad = np.zeros((V, d), dtype)
    grad[rows] = values
    want = A.reference(p, grad, m, v, step=t, **h)
    xs = [to_xp(a.copy()) for a in (p, m, v)]
    g = fastscale.SparseRows(to_xp(rows), to_xp(values), V)
    assert fastscale.adam_step(xs[0], g, xs[1], xs[2], step=t, backend=backend, **h) is None
    skip = _ill_conditioned(p, grad, h, v)
    for got, w, what in zip(xs, want, ("param", "m", "v")):
        _close(got, w, dtype, what, skip if what == "param" else None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd, decoupled, placement", [(0.0, False, "keras"), (0.1, False, "torch"), (0.1, True, "keras")])
@pytest.mark.parametrize("shape", [(300, 128), (1000, 3), (7000, 17)])
def test_sparse_rows_grad_bitwise_equals_dense_grad(backend, to_xp, dtype, wd, decoupled, placement, shape):
    """Same backend, same numbers: the SparseRows path is bitwise the densified one (so a
    training step may take either)."""
    rng = np.random.default_rng(11)
    V, D = shape
    p, _, m, v = _state(rng, shape, dtype)
    rows = np.sort(rng.choice(V, V // 3, replace=False)).astype(np.int64)
    values = rng.standard_normal((rows.shape[0], D)).astype(dtype)
    grad = np.zeros(shape, dtype)
    grad[rows] = values
    h = dict(step=4, lr=0.01, weight_decay=wd, decoupled=decoupled, eps_placement=placement, backend=backend)
    dense = [to_xp(a.copy()) for a in (p, m, v)]
    rowsd = [to_xp(a.copy()) for a in (p, m, v)]
    fastscale.adam_step(dense[0], to_xp(grad), dense[1], dense[2], **h)
    fastscale.adam_step(rowsd[0], fastscale.SparseRows(to_xp(rows), to_xp(values), V), rowsd[1], rowsd[2], **h)
    for a, b, what in zip(dense, rowsd, ("param", "m", "v")):
        assert to_np(a).tobytes() == to_np(b).tobytes(), what


# ---------------------------------------------------------------------------- bad inputs
def _dense_args(dtype=np.float32, shape=(4, 5)):
    return dict(zip(("param", "grad", "m", "v"), _state(np.random.default_rng(4), shape, dtype)))


def _sparse_args(rows=(0, 2, 5), dtype=np.float32, idt=np.int64):
    p, _, m, v = _state(np.random.default_rng(5), (8, 3), dtype)
    rows = np.asarray(rows, idt)
    return dict(param=p, rows=rows, values=np.ones((len(rows), 3), dtype), m=m, v=v)


def _readonly(a):
    a.flags.writeable = False
    return a


def _set(**kw):
    return lambda a: a.update(kw)


DENSE_BAD = [
    ("lr nan", _set(), dict(lr=float("nan")), ValueError, "lr"),
    ("lr inf", _set(), dict(lr=float("inf")), ValueError, "lr"),
    ("lr negative", _set(), dict(lr=-1e-3), ValueError, "lr"),
    ("step 0", _set(), dict(step=0), ValueError, "step"),
    ("step float", _set(), dict(step=1.0), TypeError, "step"),
    ("beta1 1.0", _set(), dict(beta1=1.0), ValueError, "beta1"),
    ("beta2 1.0", _set(), dict(beta2=1.0), ValueError, "beta2"),
    ("beta1 negative", _set(), dict(beta1=-0.1), ValueError, "beta1"),
    ("eps 0", _set(), dict(eps=0.0), ValueError, "eps"),
    ("eps nan", _set(), dict(eps=float("nan")), ValueError, "eps"),
    ("weight_decay negative", _set(), dict(weight_decay=-0.1), ValueError, "weight_decay"),
    ("weight_decay inf", _set(), dict(weight_decay=float("inf")), ValueError, "weight_decay"),
    ("eps_placement", _set(), dict(eps_placement="tf"), ValueError, "eps_placement"),
    ("decoupled not bool", _set(), dict(decoupled="yes"), TypeError, "decoupled"),
    ("grad shape", lambda a: a.update(grad=np.ones((4, 6), np.float32)), {}, ValueError, "grad"),
    ("m shape", lambda a: a.update(m=np.zeros((5, 4), np.float32)), {}, ValueError, r"\(4, 5\)"),
    ("grad float64", lambda a: a.update(grad=a["grad"].astype(np.float64)), {}, TypeError, "grad"),
    ("v float64", lambda a: a.update(v=a["v"].astype(np.float64)), {}, TypeError, "'v'"),
    ("param int", lambda a: a.update(param=np.ones((4, 5), np.int32)), {}, TypeError, "param"),
    ("grad list", lambda a: a.update(grad=a["grad"].tolist()), {}, TypeError, "grad"),
    ("param read-only", lambda a: _readonly(a["param"]), {}, ValueError, "writeable"),
    ("m read-only", lambda a: _readonly(a["m"]), {}, ValueError, "writeable"),
    ("v not contiguous", lambda a: a.update(v=np.zeros((5, 4), np.float32).T), {}, ValueError, "contiguous"),
    ("m is v", lambda a: a.update(m=a["v"]), {}, ValueError, "share memory"),
]


@pytest.mark.parametrize("name, edit, hyper_, exc, match", DENSE_BAD, ids=[c[0] for c in DENSE_BAD])
def test_adam_step_bad_inputs(cpu_backend, name, edit, hyper_, exc, match):
    args = _dense_args()
    edit(args)
    before = {k: np.array(a, copy=True) for k, a in args.items()}
    with pytest.raises(exc, match=match):
        fastscale.adam_step(**args, **{"step": 1, **hyper_}, backend=cpu_backend)
    for k, a in args.items():
        np.testing.assert_array_equal(np.asarray(a), before[k], err_msg=f"{k} was written")


SPARSE_BAD = [
    ("row == V", dict(rows=(0, 2, 8)), {}, IndexError, r"rows\[2\] = 8 is out of range \[0, 8\)"),
    ("row negative", dict(rows=(-1, 2, 5)), {}, IndexError, r"rows\[0\] = -1"),
    ("row negative int32", dict(rows=(0, 1, -3), idt=np.int32), {}, IndexError, r"rows\[2\] = -3"),
    ("rows unsorted", dict(rows=(0, 5, 2)), {}, ValueError, r"rows\[1\] = 5 and rows\[2\] = 2"),
    ("rows duplicated", dict(rows=(0, 2, 2)), {}, ValueError, "strictly increasing"),
    ("unsorted before out of range", dict(rows=(3, 1, 99)), {}, ValueError, "strictly increasing"),
    ("out of range before unsorted", dict(rows=(3, 99, 1)), {}, IndexError, r"rows\[1\] = 99"),
    ("rows float", dict(rows=(0.0, 1.0, 2.0), idt=np.float64), {}, TypeError, "rows"),
    ("lr nan", {}, dict(lr=float("nan")), ValueError, "lr"),
    ("step 0", {}, dict(step=0), ValueError, "step"),
    ("beta2 1.0", {}, dict(beta2=1.0), ValueError, "beta2"),
]


@pytest.mark.parametrize("name, make, hyper_, exc, match", SPARSE_BAD, ids=[c[0] for c in SPARSE_BAD])
def test_sparse_adam_step_bad_rows(cpu_backend, name, make, hyper_, exc, match):
    args = _sparse_args(**make)
    before = {k: a.copy() for k, a in args.items()}
    with pytest.raises(exc, match=match):
        fastscale.sparse_adam_step(**args, **{"step": 1, **hyper_}, backend=cpu_backend)
    for k, a in args.items():
        np.testing.assert_array_equal(a, before[k], err_msg=f"{k} was written")


SPARSE_BAD_ARRAYS = [
    ("values rows", lambda a: a.update(values=np.ones((2, 3), np.float32)), ValueError, r"\(3, 3\)"),
    ("values D", lambda a: a.update(values=np.ones((3, 4), np.float32)), ValueError, "values"),
    ("param 1-D", lambda a: a.update(param=np.zeros(8, np.float32)), ValueError, "2-D"),
    ("rows 2-D", lambda a: a.update(rows=a["rows"].reshape(3, 1)), ValueError, "rows"),
    ("m shape", lambda a: a.update(m=np.zeros((9, 3), np.float32)), ValueError, "'m'"),
    ("values float64", lambda a: a.update(values=a["values"].astype(np.float64)), TypeError, "values"),
    ("v read-only", lambda a: _readonly(a["v"]), ValueError, "writeable"),
    ("values is param", lambda a: a.update(values=a["param"][:3]), ValueError, "share memory"),
]


@pytest.mark.parametrize("name, edit, exc, match", SPARSE_BAD_ARRAYS, ids=[c[0] for c in SPARSE_BAD_ARRAYS])
def test_sparse_adam_step_bad_arrays(cpu_backend, name, edit, exc, match):
    args = _sparse_args()
    edit(args)
    before = {k: a.copy() for k, a in args.items()}
    with pytest.raises(exc, match=match):
        fastscale.sparse_adam_step(**args, step=1, backend=cpu_backend)
    for k, a in args.items():
        np.testing.assert_array_equal(a, before[k], err_msg=f"{k} was written")


# ---------------------------------------------------------------------------- multi-tensor
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd, decoupled, placement", [(0.0, False, "keras"), (0.1, True, "torch")])
def test_multi_tensor_form_is_each_tensor_bitwise(backend, to_xp, dtype, wd, decoupled, placement):
    rng = np.random.default_rng(12)
    shapes = [(128, 64), (64,), (64, 1), (1,), (0,), (70_001,)]
    states = [_state(rng, sh, dtype) for sh in shapes]
    h = dict(step=7, lr=0.01, weight_decay=wd, decoupled=decoupled, eps_placement=placement, backend=backend)
    one = [[to_xp(a.copy()) for a in st] for st in states]
    for p, g, m, v in one:
        fastscale.adam_step(p, g, m, v, **h)
    many = [[to_xp(a.copy()) for a in st] for st in states]
    cols = [[t[j] for t in many] for j in range(4)]
    assert fastscale.adam_step(*cols, **h) is None
    for a, b in zip(one, many):
        for x, y in zip(a, b):
            assert to_np(x).tobytes() == to_np(y).tobytes()
    np.testing.assert_allclose(to_np(many[0][0]).astype(np.float64),
                               A.reference(*states[0], step=7, lr=0.01, weight_decay=wd, decoupled=decoupled,
                                           eps_placement=placement)[0], **_tol(dtype))


def _multi_args():
    sts = [_state(np.random.default_rng(13 + i), sh, np.float32) for i, sh in enumerate([(4, 5), (5,)])]
    return [[st[j] for st in sts] for j in range(4)]


MULTI_BAD = [
    ("lengths differ", lambda a: a[1].pop(), ValueError, "same length"),
    ("grad not a list", lambda a: a.__setitem__(1, a[1][0]), TypeError, "'grad' must be a list"),
    ("mixed dtypes", lambda a: [a[j].__setitem__(1, a[j][1].astype(np.float64)) for j in range(4)], TypeError,
     r"param\[1\]"),
    ("m shape", lambda a: a[2].__setitem__(1, np.zeros(6, np.float32)), ValueError, r"m\[1\]"),
    ("v read-only", lambda a: _readonly(a[3][1]), ValueError, r"v\[1\].*writeable"),
    ("m of one is v of another", lambda a: a[2].__setitem__(1, a[3][1]), ValueError, "share memory"),
    ("param inside another m", lambda a: a[0].__setitem__(1, a[2][0].reshape(-1)[:5]), ValueError, "share memory"),
    ("sparse grad", lambda a: a[1].__setitem__(0, fastscale.SparseRows(np.array([1]), np.ones((1, 5), np.float32), 4)),
     TypeError, "SparseRows"),
    ("not an array", lambda a: a[0].__setitem__(1, [1.0] * 5), TypeError, r"param\[1\]"),
]


@pytest.mark.parametrize("name, edit, exc, match", MULTI_BAD, ids=[c[0] for c in MULTI_BAD])
def test_multi_tensor_bad_inputs_write_nothing(cpu_backend, name, edit, exc, match):
    args = _multi_args()
    edit(args)
    before = [[np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in col] for col in args]
    with pytest.raises(exc, match=match):
        fastscale.adam_step(*args, step=1, backend=cpu_backend)
    for col, bcol in zip(args, before):
        for a, b in zip(col, bcol):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)


ROWS_BAD = [
    ("row == V", dict(rows=(0, 2, 8)), IndexError, r"grad.rows\[2\] = 8 is out of range \[0, 8\)"),
    ("row negative", dict(rows=(-1, 2, 5)), IndexError, r"grad.rows\[0\] = -1"),
    ("rows unsorted", dict(rows=(0, 5, 2)), ValueError, r"grad.rows\[1\] = 5 and grad.rows\[2\] = 2"),
    ("rows duplicated", dict(rows=(0, 2, 2)), ValueError, "strictly increasing"),
    ("rows float", dict(rows=(0.0, 1.0, 2.0), idt=np.float64), TypeError, "grad.rows"),
    ("values D", dict(values=np.ones((3, 4), np.float32)), ValueError, "grad.values"),
    ("values float64", dict(values=np.ones((3, 3))), TypeError, "grad.values"),
    ("num_embeddings", dict(num_embeddings=9), ValueError, "table of 9 rows"),
    ("param 1-D", dict(param=np.zeros(8, np.float32)), ValueError, "2-D"),
    ("values is param", dict(values="param"), ValueError, "share memory"),
]


@pytest.mark.parametrize("name, make, exc, match", ROWS_BAD, ids=[c[0] for c in ROWS_BAD])
def test_adam_step_sparse_rows_grad_bad_inputs(cpu_backend, name, make, exc, match):
    make = dict(make)
    extra = {k: make.pop(k) for k in ("values", "num_embeddings", "param") if k in make}
    a = _sparse_args(**make)
    if "param" in extra:
        a["param"] = extra["param"]
    values = a["values"] if "values" not in extra else (a["param"][:3] if isinstance(extra["values"], str) else extra["values"])
    g = fastscale.SparseRows(a["rows"], values, extra.get("num_embeddings", 8))
    before = {k: np.array(x, copy=True) for k, x in a.items()}
    with pytest.raises(exc, match=match):
        fastscale.adam_step(a["param"], g, a["m"], a["v"], step=1, backend=cpu_backend)
    for k, x in a.items():
        np.testing.assert_array_equal(x, before[k], err_msg=f"{k} was written")


# ---------------------------------------------------------------------------- threads
@pytest.fixture
def cpp():
    reason = fastscale.backends()["cpp"]
    if reason is not None:
        pytest.skip(f"backend 'cpp' unavailable: {reason}")
    yield
    fastscale.set_num_threads(2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd, decoupled, placement", [(0.0, False, "keras"), (0.1, False, "torch"), (0.1, True, "keras")])
def test_cpp_threads_bitwise(cpp, dtype, wd, decoupled, placement):
    rng = np.random.default_rng(6)
    h = dict(step=3, lr=0.01, weight_decay=wd, decoupled=decoupled, eps_placement=placement, backend="cpp")
    p, g, m, v = _state(rng, (100_003,), dtype)
    P, _, M, Vv = _state(rng, (5000, 37), dtype)
    rows = np.sort(rng.choice(5000, 3001, replace=False))
    values = rng.standard_normal((3001, 37)).astype(dtype)
    results = []
    for n in (1, 2):
        fastscale.set_num_threads(n)
        dense = [a.copy() for a in (p, m, v)]
        fastscale.adam_step(dense[0], g, dense[1], dense[2], **h)
        sparse = [a.copy() for a in (P, M, Vv)]
        fastscale.sparse_adam_step(sparse[0], rows, values, sparse[1], sparse[2], **h)
        rowsd = [a.copy() for a in (P, M, Vv)]
        fastscale.adam_step(rowsd[0], fastscale.SparseRows(rows, values, 5000), rowsd[1], rowsd[2], **h)
        results.append(dense + sparse + rowsd)
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()
    assert not np.array_equal(results[0][0], p)


def test_isa_variants_agree(cpp, tmp_path):
    """The scalar, AVX2 and AVX-512 builds agree with the reference (FMA contraction differs)."""
    import os
    import subprocess
    import sys

    p, g, m, v = _state(np.random.default_rng(8), (3, 1001), np.float32)
    np.savez(tmp_path / "case.npz", p=p, g=g, m=m, v=v)
    code = (
        "import numpy as np, fastscale as fs, sys; d = dict(np.load(sys.argv[1]));"
        "fs.adam_step(d['p'], d['g'], d['m'], d['v'], step=4, lr=0.01, weight_decay=0.1, backend='cpp');"
        "np.save(sys.argv[2], np.stack([d['p'], d['m'], d['v']]))"
    )
    want = np.stack(A.reference(p, g, m, v, step=4, lr=0.01, weight_decay=0.1))
    for isa in ("scalar", "avx2", "avx512"):
        out = tmp_path / f"{isa}.npy"
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "case.npz"), str(out)], check=True,
                       env=dict(os.environ, FASTSCALE_ISA=isa))
        _close(np.load(out), want, np.float32, isa)


def test_noncontiguous_grad_is_accepted(cpu_backend):
    p, g, m, v = _state(np.random.default_rng(7), (6, 4), np.float64)
    gT = np.ascontiguousarray(g.T).T  # same values, Fortran order
    want = A.reference(p, g, m, v, step=2)
    fastscale.adam_step(p, gT, m, v, step=2, backend=cpu_backend)
    for got, w in zip((p, m, v), want):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-14)
