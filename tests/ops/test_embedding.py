"""embedding / embedding_backward: every backend against the float64 reference."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import fastscale as fs
from fastscale.ops.embedding import reference, reference_backward

from ..conftest import to_np

D_VALUES = (1, 3, 17, 128, 300)


@st.composite
def cases(draw):
    """A table, ids of some shape (0-D to 3-D, empty allowed, repeats likely) and a dout."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    D = draw(st.sampled_from(D_VALUES))
    # Large tables only with narrow rows, so the test stays cheap.
    V = draw(st.sampled_from((1, 2, 7, 50, 1000) + ((1_000_000,) if D <= 3 else ())))
    dtype = draw(st.sampled_from((np.float32, np.float64)))
    idtype = draw(st.sampled_from((np.int32, np.int64)))
    shape = tuple(draw(st.lists(st.integers(0, 7), min_size=0, max_size=3)))
    # Repeated ids: draw from a small pool half the time.
    pool = V if draw(st.booleans()) else min(V, 3)
    ids = rng.integers(0, pool, shape).astype(idtype)
    weight = rng.standard_normal((V, D)).astype(dtype)
    dout = rng.standard_normal(shape + (D,)).astype(dtype)
    return weight, ids, dout


def close_to_reference(got, ref, ref_abs, dtype):
    """|got - ref| within a few ulps of the summed magnitudes (float32 sums of repeats round)."""
    rel = 2e-6 if dtype == np.float32 else 1e-14
    assert np.all(np.abs(got - ref) <= rel * ref_abs + 1e-300), np.max(np.abs(got - ref))


@given(case=cases())
def test_forward_matches_reference(backend, to_xp, case):
    w, ids, _ = case
    out = to_np(fs.embedding(to_xp(w), to_xp(ids), backend=backend))
    assert out.dtype == w.dtype and out.shape == ids.shape + (w.shape[1],)
    # A lookup is a copy: exact.
    np.testing.assert_array_equal(out, reference(w, ids).astype(w.dtype))


@given(case=cases(), sparse=st.booleans())
def test_backward_matches_reference(backend, to_xp, case, sparse):
    w, ids, dout = case
    V, D = w.shape
    g = fs.embedding_backward(to_xp(dout), to_xp(ids), V, sparse=sparse, backend=backend)
    ref = reference_backward(dout, ids, V)
    ref_abs = reference_backward(np.abs(dout), ids, V)
    if sparse:
        rows, values = to_np(g.rows), to_np(g.values)
        assert g.num_embeddings == V and rows.dtype == np.int64 and values.dtype == w.dtype
        assert values.shape == (rows.shape[0], D)
        np.testing.assert_array_equal(rows, np.unique(ids), err_msg="rows must be the unique sorted ids")
        dense = np.zeros_like(ref)
        dense[rows] = values
    else:
        dense = to_np(g)
        assert dense.shape == (V, D) and dense.dtype == w.dtype
    close_to_reference(dense, ref, ref_abs, w.dtype)


@given(case=cases())
def test_reference_backward_is_the_gradient(case):
    """Central finite differences of reference() in float64 against reference_backward()."""
    w, ids, dout = case
    if w.shape[0] > 50:
        return
    w, dout = w.astype(np.float64)[:, :3], dout.astype(np.float64)[..., :3]
    grad = reference_backward(dout, ids, w.shape[0])
    eps = 1e-6
    num = np.zeros_like(w)
    for idx in np.ndindex(*w.shape):
        wp, wm = w.copy(), w.copy()
        wp[idx] += eps
        wm[idx] -= eps
        num[idx] = (np.sum(dout * reference(wp, ids)) - np.sum(dout * reference(wm, ids))) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


def test_repeated_ids_accumulate(backend, to_xp):
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    ids = np.array([[3, 3], [3, 0]], np.int32)
    dout = np.ones((2, 2, 3), np.float32)
    np.testing.assert_array_equal(to_np(fs.embedding(to_xp(w), to_xp(ids), backend=backend))[0, 1], [9, 10, 11])
    g = to_np(fs.embedding_backward(to_xp(dout), to_xp(ids), 4, backend=backend))
    np.testing.assert_array_equal(g, [[1] * 3, [0] * 3, [0] * 3, [3] * 3])


def test_scalar_and_empty_ids(backend, to_xp):
    w = np.arange(6, dtype=np.float64).reshape(3, 2)
    out = to_np(fs.embedding(to_xp(w), to_xp(np.array(2, np.int64)), backend=backend))
    assert out.shape == (2,) and list(out) == [4, 5]
    empty = to_np(fs.embedding(to_xp(w), to_xp(np.zeros((0, 5), np.int32)), backend=backend))
    assert empty.shape == (0, 5, 2)
    g = fs.embedding_backward(to_xp(np.zeros((0, 5, 2))), to_xp(np.zeros((0, 5), np.int32)), 3, sparse=True,
                              backend=backend)
    assert to_np(g.rows).shape == (0,) and to_np(g.values).shape == (0, 2)
    assert not np.any(to_np(fs.embedding_backward(to_xp(np.zeros((0, 2))), to_xp(np.zeros(0, np.int64)), 3,
                                                  backend=backend)))


def test_noncontiguous_inputs(backend, to_xp):
    rng = np.random.default_rng(2)
    w = rng.standard_normal((50, 16)).astype(np.float32)
    ids = rng.integers(0, 50, (6, 20)).astype(np.int64)
    ids_t = np.ascontiguousarray(ids.T).T  # a transposed view: not C-contiguous
    w_v = np.asfortranarray(w)
    np.testing.assert_array_equal(to_np(fs.embedding(to_xp(w_v), to_xp(ids_t), backend=backend)), w[ids])
    dout = rng.standard_normal((20, 6, 16)).astype(np.float32).transpose(1, 0, 2)
    g = to_np(fs.embedding_backward(to_xp(dout), to_xp(ids_t), 50, backend=backend))
    close_to_reference(g, reference_backward(dout, ids, 50), reference_backward(np.abs(dout), ids, 50), np.float32)


def test_dense_backward_reuses_out(backend, to_xp):
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 30, (4, 10)).astype(np.int32)
    dout = rng.standard_normal((4, 10, 8)).astype(np.float32)
    buf = to_xp(np.full((30, 8), 7.0, np.float32))  # stale contents must be overwritten
    g = fs.embedding_backward(to_xp(dout), to_xp(ids), 30, out=buf, backend=backend)
    assert g is buf
    close_to_reference(to_np(g), reference_backward(dout, ids, 30), reference_backward(np.abs(dout), ids, 30),
                       np.float32)


def _imdb_like(V=10_000, D=128, seed=0):
    """A (64, 256) batch of Zipf-distributed ids: many repeats, as in text."""
    rng = np.random.default_rng(seed)
    ids = (rng.zipf(1.2, (64, 256)) % V).astype(np.int32)
    w = rng.uniform(-0.05, 0.05, (V, D)).astype(np.float32)
    dout = rng.standard_normal((64, 256, D)).astype(np.float32)
    return w, ids, dout


def test_cpp_bitwise_identical_for_1_and_2_threads():
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    w, ids, dout = _imdb_like()
    results = []
    before = fs.get_num_threads()
    try:
        for n in (1, 2):
            fs.set_num_threads(n)
            f = fs.embedding(w, ids, backend="cpp")
            g = fs.embedding_backward(dout, ids, w.shape[0], backend="cpp")
            s = fs.embedding_backward(dout, ids, w.shape[0], sparse=True, backend="cpp")
            results.append((f, g, s.rows, s.values))
    finally:
        fs.set_num_threads(before)
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()
    # And the sparse values are the touched rows of the dense gradient, bit for bit.
    assert results[0][1][results[0][2]].tobytes() == results[0][3].tobytes()


# ---------------------------------------------------------------------------- bad inputs
W = np.zeros((10, 4), np.float32)
IDS = np.array([[1, 2], [3, 4]], np.int64)

BAD_FORWARD = [
    ("float ids", dict(ids=IDS.astype(np.float32)), TypeError),
    ("bool ids", dict(ids=IDS > 0), TypeError),
    ("uint32 ids", dict(ids=IDS.astype(np.uint32)), TypeError),
    ("list ids", dict(ids=IDS.tolist()), TypeError),
    ("list weight", dict(weight=W.tolist()), TypeError),
    ("int weight", dict(weight=W.astype(np.int32)), TypeError),
    ("float16 weight", dict(weight=W.astype(np.float16)), TypeError),
    ("negative id", dict(ids=np.array([[1, -1], [3, 4]])), IndexError),
    ("id equal to V", dict(ids=np.array([[1, 2], [10, 4]], np.int32)), IndexError),
    ("huge id", dict(ids=np.array([1, 2, 3, 2**40])), IndexError),
    ("scalar id out of range", dict(ids=np.array(11)), IndexError),
    ("3-D weight", dict(weight=np.zeros((10, 4, 1), np.float32)), ValueError),
    ("1-D weight", dict(weight=np.zeros(10, np.float32)), ValueError),
]


@pytest.mark.parametrize("what,change,exc", BAD_FORWARD, ids=[c[0] for c in BAD_FORWARD])
def test_bad_forward_inputs(backend, to_xp, what, change, exc):
    args = dict(weight=W, ids=IDS)
    args.update(change)
    conv = {k: (to_xp(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match="embedding"):
        fs.embedding(conv["weight"], conv["ids"], backend=backend)


def test_bad_id_message_names_value_and_position(backend, to_xp):
    with pytest.raises(IndexError, match=r"ids\[1, 0\] = 10 is out of range \[0, 10\)"):
        fs.embedding(to_xp(W), to_xp(np.array([[1, 2], [10, -1]])), backend=backend)


DOUT = np.ones((2, 2, 4), np.float32)
BAD_BACKWARD = [
    ("negative id", dict(ids=np.array([[1, -1], [3, 4]])), IndexError),
    ("id equal to V", dict(ids=np.array([[1, 2], [10, 4]], np.int32)), IndexError),
    ("negative id sparse", dict(ids=np.array([[1, -1], [3, 4]]), sparse=True), IndexError),
    ("id equal to V sparse", dict(ids=np.array([[1, 2], [10, 4]]), sparse=True), IndexError),
    ("float ids", dict(ids=IDS.astype(np.float64)), TypeError),
    ("list dout", dict(dout=DOUT.tolist()), TypeError),
    ("int dout", dict(dout=DOUT.astype(np.int64)), TypeError),
    ("dout shape != ids.shape + (D,)", dict(dout=np.ones((2, 3, 4), np.float32)), ValueError),
    ("dout ndim != ids.ndim + 1", dict(dout=np.ones((2, 4), np.float32)), ValueError),
    ("out wrong shape", dict(out=np.zeros((9, 4), np.float32)), ValueError),
    ("out wrong D", dict(out=np.zeros((10, 5), np.float32)), ValueError),
    ("out float64 with float32 dout", dict(out=np.zeros((10, 4), np.float64)), TypeError),
    ("out read-only", dict(out=np.zeros((10, 4), np.float32)), ValueError),
    ("out not C-contiguous", dict(out=np.zeros((4, 10), np.float32).T), ValueError),
    ("out with sparse", dict(out=np.zeros((10, 4), np.float32), sparse=True), ValueError),
    ("sparse not a bool", dict(sparse=1), TypeError),
    ("num_embeddings negative", dict(num_embeddings=-1), ValueError),
    ("num_embeddings float", dict(num_embeddings=10.0), TypeError),
    ("num_embeddings bool", dict(num_embeddings=True), TypeError),
]


@pytest.mark.parametrize("what,change,exc", BAD_BACKWARD, ids=[c[0] for c in BAD_BACKWARD])
def test_bad_backward_inputs_write_nothing(backend, to_xp, what, change, exc):
    args = dict(dout=DOUT, ids=IDS, num_embeddings=10, out=None, sparse=False)
    args.update(change)
    if what == "out read-only" and backend in ("cuda", "cupy"):
        pytest.skip("cupy arrays cannot be made read-only (to_xp copies a read-only numpy array to a writeable one)")
    if what == "out read-only":
        args["out"].flags.writeable = False
    if args["out"] is None and not args["sparse"]:
        args["out"] = np.full((10, 4), 3.0, np.float32)  # must come back untouched
    sentinel = None if args["out"] is None else args["out"].copy()
    conv = {k: (to_xp(v) if isinstance(v, np.ndarray) else v) for k, v in args.items()}
    with pytest.raises(exc, match="embedding_backward"):
        fs.embedding_backward(conv.pop("dout"), conv.pop("ids"), conv.pop("num_embeddings"), backend=backend, **conv)
    if sentinel is not None:
        np.testing.assert_array_equal(to_np(conv["out"]), sentinel, err_msg="nothing may be written before the error")


def test_sparse_backward_bad_id_leaves_no_state(backend, to_xp):
    """A failed sparse backward must not poison the next call (cpp keeps a mark scratch)."""
    with pytest.raises(IndexError):
        fs.embedding_backward(to_xp(DOUT), to_xp(np.array([[1, 1], [10, 4]])), 10, sparse=True, backend=backend)
    g = fs.embedding_backward(to_xp(DOUT), to_xp(np.array([[4, 1], [1, 4]])), 10, sparse=True, backend=backend)
    np.testing.assert_array_equal(to_np(g.rows), [1, 4])
    np.testing.assert_array_equal(to_np(g.values), np.full((2, 4), 2.0))


def test_backend_selection_is_strict():
    with pytest.raises(ValueError, match="unknown backend"):
        fs.embedding(W, IDS, backend="fortran")
    with pytest.raises(ValueError, match="takes cupy arrays"):
        fs.embedding_backward(DOUT, IDS, 10, backend="cupy")


def test_a_table_beyond_int64(backend, to_xp):
    """A sparse gradient has no (V, D) array, so num_embeddings may exceed int64, the cuda
    launchers' size type; a dense one is a ValueError on every backend.  (tests/fuzz/test_fuzz_gpu.py
    found cuda raising a pybind TypeError for the first, CuPy an OverflowError for the second.)"""
    V = 2**70
    dout, ids = np.arange(6, dtype=np.float32).reshape(3, 2), np.array([5, 1, 5], np.int64)
    with pytest.raises(ValueError, match=r"'num_embeddings' must be below 2\*\*63 for a dense gradient"):
        fs.embedding_backward(to_xp(dout), to_xp(ids), V, backend=backend)  # (CuPy: OverflowError, unchecked)
    if backend == "cuda":  # its sort keys are 32-bit: a documented ValueError (csrc/cuda/segment.cuh)
        with pytest.raises(ValueError, match=r"the cuda backend takes tables of at most 2\*\*32 - 2 rows"):
            fs.embedding_backward(to_xp(dout), to_xp(ids), V, sparse=True, backend=backend)
        return
    g = fs.embedding_backward(to_xp(dout), to_xp(ids), V, sparse=True, backend=backend)
    assert g.num_embeddings == V
    np.testing.assert_array_equal(to_np(g.rows), [1, 5])
    np.testing.assert_array_equal(to_np(g.values), [[2, 3], [4, 6]])
    with pytest.raises(IndexError, match=r"ids\[1\] = -1 is out of range \[0, 1180591620717411303424\)"):
        fs.embedding_backward(to_xp(dout), to_xp(np.array([5, -1, 5], np.int64)), V, sparse=True, backend=backend)
