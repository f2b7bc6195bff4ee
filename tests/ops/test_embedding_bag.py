"""embedding_bag / embedding_bag_backward: every backend against the float64 reference."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastscale as fs
from fastscale.ops.embedding_bag import reference, reference_backward

from ..conftest import to_np

D_VALUES = (1, 2, 3, 5, 8, 12, 17, 20, 40, 128, 300)  # every vector-width path of the cpp kernels


@st.composite
def bag_cases(draw):
    """A table, bags in CSR or padded form, and every option the op takes."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    D = draw(st.sampled_from(D_VALUES))
    # Large tables only with narrow rows, so the test stays cheap.
    V = draw(st.sampled_from((1, 2, 7, 50, 1000) + ((1_000_000,) if D <= 3 else ())))
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    idtype = draw(st.sampled_from((np.int32, np.int64)))
    padded = draw(st.booleans())
    B = draw(st.integers(0, 6))
    padding_idx = draw(st.one_of(st.none(), st.integers(0, V - 1)))
    mode = draw(st.sampled_from(("sum", "mean")))
    lengths = [draw(st.integers(0, 9)) for _ in range(B)]
    # Repeated ids within a bag: draw from a small pool half the time.
    pool = V if draw(st.booleans()) else min(V, 3)
    bags = [rng.integers(0, pool, n) for n in lengths]
    if padding_idx is not None and B and draw(st.booleans()):
        bags[0] = np.full(lengths[0], padding_idx)  # an all-padding bag
    if padded:
        T = draw(st.integers(max(lengths, default=0), max(lengths, default=0) + 3))
        fill = padding_idx if padding_idx is not None else 0
        ids = np.full((B, T), fill, dtype=idtype)
        for b, bag in enumerate(bags):
            ids[b, : len(bag)] = bag
        offsets = None
    else:
        ids = np.concatenate(bags).astype(idtype) if B else np.zeros(0, idtype)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(draw(st.sampled_from((np.int32, np.int64))))
    weight = rng.standard_normal((V, D)).astype(dtype)
    psw = None
    if mode == "sum" and draw(st.booleans()):
        psw = rng.standard_normal(ids.shape).astype(dtype)
    dout = rng.standard_normal((ids.shape[0] if padded else B, D)).astype(dtype)
    return dict(weight=weight, ids=ids, offsets=offsets, mode=mode, psw=psw, padding_idx=padding_idx, dout=dout)


def tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)


@given(case=bag_cases())
def test_forward_matches_reference(backend, to_xp, case):
    w, ids, off, psw = case["weight"], case["ids"], case["offsets"], case["psw"]
    out = fs.embedding_bag(
        to_xp(w), to_xp(ids), to_xp(off), mode=case["mode"], per_sample_weights=to_xp(psw),
        padding_idx=case["padding_idx"], backend=backend,
    )
    ref = reference(w, ids, off, mode=case["mode"], per_sample_weights=psw, padding_idx=case["padding_idx"])
    out = to_np(out)
    assert out.dtype == w.dtype and out.shape == ref.shape
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out, ref, **tol(w.dtype))


@given(case=bag_cases(), sparse=st.booleans())
def test_backward_matches_reference(backend, to_xp, case, sparse):
    w, ids, off, psw, dout = case["weight"], case["ids"], case["offsets"], case["psw"], case["dout"]
    V = w.shape[0]
    g = fs.embedding_bag_backward(
        to_xp(dout), to_xp(ids), to_xp(off), num_embeddings=V, mode=case["mode"], per_sample_weights=to_xp(psw),
        padding_idx=case["padding_idx"], sparse=sparse, backend=backend,
    )
    ref = reference_backward(
        dout, ids, off, num_embeddings=V, mode=case["mode"], per_sample_weights=psw, padding_idx=case["padding_idx"]
    )
    if sparse:
        rows, values = to_np(g.rows), to_np(g.values)
        assert g.num_embeddings == V and rows.dtype == np.int64 and values.dtype == w.dtype
        assert np.all(np.diff(rows) > 0), "rows must be unique and sorted"
        flat = ids.reshape(-1)
        expect_rows = np.unique(flat if case["padding_idx"] is None else flat[flat != case["padding_idx"]])
        np.testing.assert_array_equal(rows, expect_rows)
        dense = np.zeros_like(ref)
        dense[rows] = values
    else:
        dense = to_np(g)
        assert dense.shape == (V, w.shape[1]) and dense.dtype == w.dtype
    np.testing.assert_allclose(dense, ref, **tol(w.dtype))
    if case["padding_idx"] is not None:
        assert not np.any(dense[case["padding_idx"]])


@given(case=bag_cases())
def test_training_step_sparse_gradient_and_lazy_adam(gpu_backend, case):
    """Inside a training step's deferred checks the sparse gradient (on cuda a PendingRows,
    whose row count stays on the device) and lazy Adam on it give what they give outside one
    (bitwise on cuda), empty batches included."""
    from fastscale.ops import _cuda_util as CU
    from fastscale.ops._common import PendingRows
    from fastscale.ops.adam import sparse_adam_step_pending

    import cupy

    def to_xp(a):
        return None if a is None else cupy.asarray(a)

    w, ids, off, psw, dout = case["weight"], case["ids"], case["offsets"], case["psw"], case["dout"]
    V = w.shape[0]
    kw = dict(num_embeddings=V, mode=case["mode"], per_sample_weights=to_xp(psw), padding_idx=case["padding_idx"],
              sparse=True, backend=gpu_backend)
    args = (to_xp(dout), to_xp(ids), to_xp(off))
    want = fs.embedding_bag_backward(*args, **kw)
    rng = np.random.default_rng(0)
    state = [rng.standard_normal(w.shape).astype(w.dtype) for _ in range(3)]
    state[2] = np.abs(state[2])
    p0, m0, v0 = (to_xp(a.copy()) for a in state)
    fs.sparse_adam_step(p0, want.rows, want.values, m0, v0, step=3, lr=0.1, backend=gpu_backend)
    p1, m1, v1 = (to_xp(a.copy()) for a in state)
    with CU.deferred_checks():
        g = fs.embedding_bag_backward(*args, **kw)
        assert isinstance(g, PendingRows) == (gpu_backend == "cuda")
        if isinstance(g, PendingRows):
            sparse_adam_step_pending(p1, g, m1, v1, step=3, lr=0.1, backend=gpu_backend)
        else:
            fs.sparse_adam_step(p1, g.rows, g.values, m1, v1, step=3, lr=0.1, backend=gpu_backend)
    np.testing.assert_array_equal(to_np(g.rows), to_np(want.rows))
    # cuda is deterministic; cupy's scatter-add is atomics, summed in any order.
    same = np.testing.assert_array_equal if gpu_backend == "cuda" else (
        lambda a, b: np.testing.assert_allclose(a, b, **tol(w.dtype)))
    same(to_np(g.values), to_np(want.values))
    for a, b in ((p1, p0), (m1, m0), (v1, v0)):
        same(to_np(a), to_np(b))


@given(case=bag_cases())
def test_reference_backward_is_the_gradient(case):
    """Central finite differences of reference() in float64 against reference_backward()."""
    w = case["weight"].astype(np.float64)[:, :3]
    if w.size == 0 or w.shape[0] > 1000:
        return
    dout = case["dout"].astype(np.float64)[:, :3]
    kw = dict(mode=case["mode"], per_sample_weights=case["psw"], padding_idx=case["padding_idx"])
    grad = reference_backward(dout, case["ids"], case["offsets"], num_embeddings=w.shape[0], **kw)
    eps = 1e-6
    num = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        wp, wm = w.copy(), w.copy()
        wp[idx] += eps
        wm[idx] -= eps
        fp = np.sum(dout * reference(wp, case["ids"], case["offsets"], **kw))
        fm = np.sum(dout * reference(wm, case["ids"], case["offsets"], **kw))
        num[idx] = (fp - fm) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


def test_padded_equals_csr(backend, to_xp):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((100, 40)).astype(np.float32)
    ids = rng.integers(1, 100, (8, 30)).astype(np.int64)
    ids[:, 20:] = 0
    ids[3] = 0  # an all-padding row
    flat = [r[r != 0] for r in ids]
    csr = np.concatenate(flat)
    off = np.concatenate([[0], np.cumsum([len(r) for r in flat])])
    a = to_np(fs.embedding_bag(to_xp(w), to_xp(ids), padding_idx=0, backend=backend))
    b = to_np(fs.embedding_bag(to_xp(w), to_xp(csr), to_xp(off), backend=backend))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert not np.any(a[3]) and np.all(np.isfinite(a))


def test_empty_and_all_padding_bags_are_zero_not_nan(backend, to_xp):
    w = np.ones((5, 4), np.float32)
    ids = np.array([0, 0, 3], np.int32)
    off = np.array([0, 0, 2, 3], np.int32)  # empty bag, all-padding bag, one real id
    out = to_np(fs.embedding_bag(to_xp(w), to_xp(ids), to_xp(off), padding_idx=0, backend=backend))
    np.testing.assert_array_equal(out, [[0] * 4, [0] * 4, [1] * 4])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_cpp_columns_do_not_depend_on_the_width(dtype, weighted):
    """Every column is the same sum in the same order whatever the table's width, so the
    kernel's vector chunks (64, 32, 16 bytes, a last one overlapping the one before, or
    scalars for 1-3 columns) give a narrow table exactly the leading columns of a wide one."""
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    rng = np.random.default_rng(4)
    wide = rng.standard_normal((40, 140)).astype(dtype)
    ids = rng.integers(0, 40, (9, 23)).astype(np.int64)
    ids[2, 5:] = 0  # padding inside and at the end of a bag
    psw = rng.standard_normal(ids.shape).astype(dtype) if weighted else None
    kw = dict(mode="sum", per_sample_weights=psw) if weighted else dict(padding_idx=0)
    full = fs.embedding_bag(wide, ids, backend="cpp", **kw)
    for D in range(1, 140):
        narrow = np.ascontiguousarray(wide[:, :D])
        np.testing.assert_array_equal(fs.embedding_bag(narrow, ids, backend="cpp", **kw), full[:, :D], err_msg=f"D={D}")


def test_noncontiguous_inputs(backend, to_xp):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((50, 16)).astype(np.float32)
    ids = rng.integers(0, 50, (6, 20)).astype(np.int64)
    w_f = np.asfortranarray(w)
    ids_t = np.ascontiguousarray(ids.T).T  # a transposed view: not C-contiguous
    out = to_np(fs.embedding_bag(to_xp(w_f), to_xp(ids_t), backend=backend))
    np.testing.assert_allclose(out, reference(w, ids), rtol=1e-5, atol=1e-6)


def test_dense_backward_reuses_out(backend, to_xp):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 30, 40).astype(np.int32)
    off = np.array([0, 10, 40], np.int64)
    dout = rng.standard_normal((2, 8)).astype(np.float32)
    buf = to_xp(np.full((30, 8), 7.0, np.float32))  # stale contents must be overwritten
    g = fs.embedding_bag_backward(to_xp(dout), to_xp(ids), to_xp(off), num_embeddings=30, out=buf, backend=backend)
    assert g is buf
    np.testing.assert_allclose(to_np(g), reference_backward(dout, ids, off, num_embeddings=30), rtol=1e-5, atol=1e-6)


def _imdb_like(V=10_000, B=64, D=128, seed=0, idtype=np.int32):
    rng = np.random.default_rng(seed)
    lengths = np.minimum(rng.lognormal(5.2, 0.7, B).astype(int) + 4, 2500)
    ids = (rng.zipf(1.3, lengths.sum()) % (V - 1) + 1).astype(idtype)
    off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    w = rng.uniform(-0.05, 0.05, (V, D)).astype(np.float32)
    return w, ids, off


def test_cpp_bitwise_identical_for_1_and_2_threads():
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    w, ids, off = _imdb_like()
    dout = np.random.default_rng(1).standard_normal((64, 128)).astype(np.float32)
    results = []
    before = fs.get_num_threads()
    try:
        for n in (1, 2):
            fs.set_num_threads(n)
            f = fs.embedding_bag(w, ids, off, backend="cpp")
            g = fs.embedding_bag_backward(dout, ids, off, num_embeddings=w.shape[0], backend="cpp")
            s = fs.embedding_bag_backward(dout, ids, off, num_embeddings=w.shape[0], sparse=True, backend="cpp")
            results.append((f, g, s.rows, s.values))
    finally:
        fs.set_num_threads(before)
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("layout", ["csr", "padded", "psw"])
@pytest.mark.parametrize("V, unique", [(50, True), (10_000, False), (1_000_000, False), (1_000_000, True)])
@pytest.mark.parametrize("D", [3, 12, 37])  # narrow, one 32-byte vector and overlapping ones
def test_sparse_backward_is_the_dense_one_bitwise(cpu_backend, layout, V, unique, D):
    """Same backend: the SparseRows values are exactly the dense gradient's rows (so a training
    step may take either), including every id distinct (U = N) and a huge, barely used table."""
    rng = np.random.default_rng(V + unique)
    B, N = 9, 40
    ids = (rng.permutation(V - 1)[:N] + 1) if unique else rng.integers(1, min(V, 60), N)
    lengths = np.diff(np.sort(np.concatenate([[0, N], rng.integers(0, N, B - 1)])))
    off = np.concatenate([[0], np.cumsum(lengths)])
    dout = rng.standard_normal((B, D)).astype(np.float32)
    kw = dict(num_embeddings=V, backend=cpu_backend)
    if layout == "padded":  # the same bags, pre-padded with 0 (the padding row)
        T = int(lengths.max()) + 3
        x = np.zeros((B, T), np.int64)
        for b in range(B):
            if lengths[b]:
                x[b, T - lengths[b]:] = ids[off[b]:off[b + 1]]
        args, kw = (x,), dict(kw, padding_idx=0)
    elif layout == "psw":
        args, kw = (ids, off), dict(kw, mode="sum", per_sample_weights=rng.standard_normal(N).astype(np.float32))
    else:
        args = (ids, off)
    dense = fs.embedding_bag_backward(dout, *args, **kw)
    sp = fs.embedding_bag_backward(dout, *args, sparse=True, **kw)
    assert np.all(np.diff(sp.rows) > 0)
    np.testing.assert_array_equal(sp.rows, np.unique(ids))
    assert dense[sp.rows].tobytes() == sp.values.tobytes()
    rest = np.ones(V, bool)
    rest[sp.rows] = False
    assert not dense[rest].any()


def test_isa_variants_agree(tmp_path):
    """The scalar, AVX2 and AVX-512 builds of the kernel give the same sums (to rounding)."""
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    import subprocess
    import sys

    w, ids, off = _imdb_like(V=500, B=8, D=67)
    np.savez(tmp_path / "case.npz", w=w, ids=ids, off=off)
    code = (
        "import numpy as np, fastscale as fs, sys; d = np.load(sys.argv[1]);"
        "np.save(sys.argv[2], fs.embedding_bag(d['w'], d['ids'], d['off'], backend='cpp'))"
    )
    outs = {}
    for isa in ("scalar", "avx2", "avx512"):
        env = dict(__import__("os").environ, FASTSCALE_ISA=isa)
        subprocess.run([sys.executable, "-c", code, str(tmp_path / "case.npz"), str(tmp_path / f"{isa}.npy")],
                       check=True, env=env)
        outs[isa] = np.load(tmp_path / f"{isa}.npy")
    ref = reference(w, ids, off)
    for isa, out in outs.items():
        np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-7, err_msg=isa)


# ---------------------------------------------------------------------------- bad inputs
W = np.zeros((10, 4), np.float32)
IDS = np.array([1, 2, 3, 4], np.int64)
OFF = np.array([0, 2, 4], np.int64)

BAD_FORWARD = [
    ("float ids", dict(ids=IDS.astype(np.float32)), TypeError),
    ("bool ids", dict(ids=IDS > 0), TypeError),
    ("list weight", dict(weight=W.tolist()), TypeError),
    ("int weight", dict(weight=W.astype(np.int32)), TypeError),
    ("float16 weight", dict(weight=W.astype(np.float16)), TypeError),
    ("float offsets", dict(offsets=OFF.astype(np.float64)), TypeError),
    ("psw dtype differs", dict(mode="sum", per_sample_weights=np.ones(4, np.float64)), TypeError),
    ("negative id", dict(ids=np.array([1, -1, 3, 4])), IndexError),
    ("id equal to V", dict(ids=np.array([1, 2, 10, 4])), IndexError),
    ("huge id", dict(ids=np.array([1, 2, 3, 2**40])), IndexError),
    ("padded id out of range", dict(ids=np.array([[1, 2], [3, 11]]), offsets=None), IndexError),
    ("3-D weight", dict(weight=np.zeros((10, 4, 1), np.float32)), ValueError),
    ("1-D weight", dict(weight=np.zeros(10, np.float32)), ValueError),
    ("3-D ids", dict(ids=IDS.reshape(1, 2, 2), offsets=None), ValueError),
    ("1-D ids without offsets", dict(offsets=None), ValueError),
    ("2-D ids with offsets", dict(ids=IDS.reshape(2, 2)), ValueError),
    ("offsets not starting at 0", dict(offsets=np.array([1, 2, 4])), ValueError),
    ("offsets decreasing", dict(offsets=np.array([0, 3, 2, 4])), ValueError),
    ("offsets not ending at N", dict(offsets=np.array([0, 2, 3])), ValueError),
    ("offsets beyond N", dict(offsets=np.array([0, 5, 4])), ValueError),
    ("offsets empty", dict(offsets=np.zeros(0, np.int64)), ValueError),
    ("2-D offsets", dict(offsets=OFF.reshape(1, 3)), ValueError),
    ("unknown mode", dict(mode="max"), ValueError),
    ("psw with mean", dict(per_sample_weights=np.ones(4, np.float32)), ValueError),
    ("psw wrong shape", dict(mode="sum", per_sample_weights=np.ones(3, np.float32)), ValueError),
    ("padding_idx out of range", dict(padding_idx=10), ValueError),
    ("negative padding_idx", dict(padding_idx=-1), ValueError),
    ("float padding_idx", dict(padding_idx=1.5), TypeError),
]


@pytest.mark.parametrize("what,change,exc", BAD_FORWARD, ids=[c[0] for c in BAD_FORWARD])
def test_bad_forward_inputs(backend, to_xp, what, change, exc):
    args = dict(weight=W, ids=IDS, offsets=OFF, mode="mean", per_sample_weights=None, padding_idx=None)
    args.update(change)
    conv = {k: (to_xp(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match="embedding_bag"):
        fs.embedding_bag(conv.pop("weight"), conv.pop("ids"), conv.pop("offsets"), backend=backend, **conv)


BAD_BACKWARD = [
    ("negative id", dict(ids=np.array([1, -1, 3, 4])), IndexError),
    ("id equal to V", dict(ids=np.array([1, 2, 10, 4])), IndexError),
    ("offsets decreasing", dict(offsets=np.array([0, 3, 2, 4])), ValueError),
    ("offsets not ending at N", dict(offsets=np.array([0, 2, 3])), ValueError),
    ("dout rows != bags", dict(dout=np.zeros((3, 4), np.float32)), ValueError),
    ("dout int", dict(dout=np.zeros((2, 4), np.int64)), TypeError),
    ("out wrong shape", dict(out=np.zeros((9, 4), np.float32)), ValueError),
    ("out wrong dtype", dict(out=np.zeros((10, 4), np.float64)), TypeError),
    ("out read-only", dict(out=np.zeros((10, 4), np.float32)), ValueError),
    ("num_embeddings 0", dict(num_embeddings=0), ValueError),
    ("num_embeddings float", dict(num_embeddings=10.0), TypeError),
]


@pytest.mark.parametrize("what,change,exc", BAD_BACKWARD, ids=[c[0] for c in BAD_BACKWARD])
def test_bad_backward_inputs_write_nothing(backend, to_xp, what, change, exc):
    args = dict(dout=np.ones((2, 4), np.float32), ids=IDS, offsets=OFF, num_embeddings=10, out=None)
    args.update(change)
    sentinel = np.full((10, 4), 3.0, np.float32)
    if what == "out read-only" and backend in ("cuda", "cupy"):
        pytest.skip("cupy arrays cannot be made read-only")
    if what == "out read-only":
        args["out"].flags.writeable = False
    elif args["out"] is None and what not in ("num_embeddings 0", "num_embeddings float"):
        args["out"] = sentinel
    conv = {k: (to_xp(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match="embedding_bag_backward"):
        fs.embedding_bag_backward(conv.pop("dout"), conv.pop("ids"), conv.pop("offsets"), backend=backend, **conv)
    if conv.get("out") is not None and what != "out read-only" and args["out"] is sentinel:
        assert np.all(to_np(conv["out"]) == 3.0), "nothing may be written before the error"


def test_sparse_backward_bad_id_leaves_no_state(backend, to_xp):
    """A failed sparse backward must not poison the next call (cpp keeps a mark scratch)."""
    dout = np.ones((2, 4), np.float32)
    with pytest.raises(IndexError):
        fs.embedding_bag_backward(to_xp(dout), to_xp(np.array([1, 2, 10, 4])), to_xp(OFF), num_embeddings=10,
                                  sparse=True, backend=backend)
    g = fs.embedding_bag_backward(to_xp(dout), to_xp(IDS), to_xp(OFF), num_embeddings=10, sparse=True, backend=backend)
    np.testing.assert_array_equal(to_np(g.rows), [1, 2, 3, 4])
    np.testing.assert_allclose(to_np(g.values), np.full((4, 4), 0.5))


def test_mixed_numpy_and_other_arrays_is_typeerror(backend):
    with pytest.raises(TypeError, match="embedding_bag"):
        fs.embedding_bag(W, IDS.tolist(), OFF, backend=backend)


def test_backend_selection_is_strict(monkeypatch):
    with pytest.raises(ValueError, match="unknown backend"):
        fs.embedding_bag(W, IDS, OFF, backend="fortran")
    with pytest.raises(ValueError, match="takes cupy arrays"):
        fs.embedding_bag(W, IDS, OFF, backend="cupy")
    monkeypatch.setenv("FASTSCALE_BACKEND", "nope")
    with pytest.raises(ValueError, match="unknown backend"):
        fs.embedding_bag(W, IDS, OFF)
    monkeypatch.setenv("FASTSCALE_BACKEND", "numpy")
    fs.embedding_bag(W, IDS, OFF)  # explicit env choice works
    fs.embedding_bag(W, IDS, OFF, backend="numba" if fs.backends()["numba"] is None else "numpy")


def test_a_table_beyond_int64(backend, to_xp):
    """num_embeddings beyond int64: dense a ValueError, sparse fine (see test_embedding.py's twin)."""
    dout = np.ones((2, 3), np.float32)
    ids, off = np.array([1, 5, 2], np.int64), np.array([0, 1, 3], np.int64)
    with pytest.raises(ValueError, match=r"'num_embeddings' must be below 2\*\*63 for a dense gradient"):
        fs.embedding_bag_backward(to_xp(dout), to_xp(ids), to_xp(off), num_embeddings=2**70, backend=backend)
    if backend == "cuda":  # its sort keys are 32-bit: a documented ValueError (csrc/cuda/segment.cuh)
        with pytest.raises(ValueError, match=r"the cuda backend takes tables of at most 2\*\*32 - 2 rows"):
            fs.embedding_bag_backward(to_xp(dout), to_xp(ids), to_xp(off), num_embeddings=2**70, mode="sum",
                                      sparse=True, backend=backend)
        return
    g = fs.embedding_bag_backward(to_xp(dout), to_xp(ids), to_xp(off), num_embeddings=2**70, mode="sum", sparse=True,
                                  backend=backend)
    assert g.num_embeddings == 2**70
    np.testing.assert_array_equal(to_np(g.rows), [1, 2, 5])
    np.testing.assert_array_equal(to_np(g.values), np.ones((3, 3)))


@pytest.mark.parametrize("offsets, message", [
    ([0, 5, 2, 4], r"offsets\[1\] = 5 is beyond len\(ids\) = 4"),  # passes N before the decrease
    ([0, 3, 2, 4], r"offsets must not decrease, got offsets\[1:3\] = \[3, 2\]"),
    ([0, 2, 3], r"offsets\[-1\] must equal len\(ids\) = 4, got 3"),
])
def test_bad_offsets_name_the_same_entry_on_every_backend(backend, to_xp, offsets, message):
    """The first entry that breaks a rule, as the C++ / CUDA checks find it (one scan)."""
    with pytest.raises(ValueError, match=message):
        fs.embedding_bag(to_xp(W), to_xp(IDS), to_xp(np.array(offsets)), backend=backend)
