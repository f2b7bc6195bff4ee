"""Regression tests for the bugs the fuzz suite (test_fuzz_ops.py) found, one per bug."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

import fastscale as fs

f32 = np.float32


def _all_ops_with_none():
    """Every op with one required array argument replaced by None."""
    w = np.zeros((4, 3), f32)
    ids = np.array([0, 1], np.int64)
    p = np.zeros(3, f32)
    return [
        ("embedding", lambda b: fs.embedding(None, ids, backend=b)),
        ("embedding_backward", lambda b: fs.embedding_backward(None, ids, 4, backend=b)),
        ("masked_mean_pool", lambda b: fs.masked_mean_pool(np.zeros((1, 2, 3), f32), None, backend=b)),
        ("masked_mean_pool_backward", lambda b: fs.masked_mean_pool_backward(None, np.ones((1, 2), bool), backend=b)),
        ("embedding_bag", lambda b: fs.embedding_bag(w, None, backend=b)),
        ("embedding_bag_backward", lambda b: fs.embedding_bag_backward(None, ids[None], num_embeddings=4, backend=b)),
        ("dense_forward", lambda b: fs.dense_forward(None, w, backend=b)),
        ("dense_backward", lambda b: fs.dense_backward(np.zeros((1, 3), f32), None, w, None, None, backend=b)),
        ("bce_with_logits", lambda b: fs.bce_with_logits(p, None, backend=b)),
        ("adam_step", lambda b: fs.adam_step(p.copy(), None, p.copy(), p.copy(), step=1, backend=b)),
        ("sparse_adam_step", lambda b: fs.sparse_adam_step(w.copy(), None, np.zeros((0, 3), f32), w.copy(), w.copy(), step=1, backend=b)),
    ]


@pytest.mark.parametrize("name,call", _all_ops_with_none(), ids=[n for n, _ in _all_ops_with_none()])
def test_required_array_none_is_type_error(cpu_backend, name, call):
    # Was AttributeError ('NoneType' object has no attribute 'dtype'): array_kind() skips None.
    with pytest.raises(TypeError, match="must be a numpy or cupy array, got NoneType"):
        call(cpu_backend)


def test_adam_non_finite_grad_warns_nowhere(cpu_backend):
    # numpy backend raised "RuntimeWarning: invalid value encountered in divide" for an inf
    # gradient (an error under pytest's filterwarnings); cpp / numba propagate silently.
    p, g, m, v = (np.zeros(5, f32) for _ in range(4))
    g[1], g[2] = np.inf, np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fs.adam_step(p, g, m, v, step=1, backend=cpu_backend)
    assert np.isnan(p[1]) and np.isnan(p[2]) and np.all(p[[0, 3, 4]] == 0)


@pytest.mark.parametrize("op", ["embedding_backward", "embedding_bag_backward"])
def test_dense_backward_zero_width_huge_table(cpu_backend, op):
    # D == 0 and num_embeddings = 2**40: cpp spun through 2**36 empty row blocks (a hang),
    # numba allocated an O(V) index (MemoryError); numpy returned at once.
    V = 2**40
    t = time.perf_counter()
    if op == "embedding_backward":
        g = fs.embedding_backward(np.zeros((3, 0), f32), np.array([0, 1, V - 1]), V, backend=cpu_backend)
    else:
        g = fs.embedding_bag_backward(np.zeros((1, 0), f32), np.array([[0, 1, V - 1]]), num_embeddings=V,
                                      backend=cpu_backend)
    assert g.shape == (V, 0)
    assert time.perf_counter() - t < 5
    with pytest.raises(IndexError):  # the ids are still checked
        fs.embedding_backward(np.zeros((1, 0), f32), np.array([V]), V, backend=cpu_backend)


def test_sparse_backward_huge_table(cpu_backend):
    # sparse=True with num_embeddings = 2**40: cpp and numba allocated an O(V) scratch
    # ("array is too big" / MemoryError) where numpy answered; now all renumber the ids.
    V = 2**40
    ids = np.array([[5, 2**39, 7, 5], [3, 3, 2**39, 9]])
    d = np.arange(8.0).reshape(2, 4)
    r = fs.embedding_backward(np.repeat(d[:, :, None], 3, axis=2), ids, V, sparse=True, backend=cpu_backend)
    np.testing.assert_array_equal(r.rows, [3, 5, 7, 9, 2**39])
    np.testing.assert_array_equal(r.values[:, 0], [9, 3, 2, 7, 7])
    r = fs.embedding_bag_backward(d[:, :3], ids, num_embeddings=V, sparse=True, mode="mean", padding_idx=7,
                                  backend=cpu_backend)
    np.testing.assert_array_equal(r.rows, [3, 5, 9, 2**39])
    np.testing.assert_allclose(r.values[:, 0], [2 * 4 / 4, 2 * 0 / 3, 4 / 4, 0 / 3 + 4 / 4])
    with pytest.raises(IndexError, match=r"ids\[1, 3\] = 1099511627776"):
        fs.embedding_bag_backward(d[:, :3], np.where(ids == 9, V, ids), num_embeddings=V, sparse=True,
                                  backend=cpu_backend)


def _misaligned(a):
    """A copy of a viewed from a byte buffer at offset 1 (C-contiguous, not aligned)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    v = buf[1:].view(a.dtype).reshape(a.shape)
    v[...] = a
    assert not v.flags.aligned and v.flags.c_contiguous
    return v


def test_misaligned_inputs_are_copied(cpu_backend):
    # cpp read floats / ids through the misaligned pointers (UBSan: "load of misaligned
    # address"; aligned vector loads would fault).  Inputs are now copied like
    # non-contiguous ones.
    rng = np.random.default_rng(0)
    w = rng.standard_normal((20, 7)).astype(f32)
    ids = rng.integers(0, 20, (3, 5))
    want = fs.embedding_bag(w, ids, backend="numpy")
    got = fs.embedding_bag(_misaligned(w), _misaligned(ids), backend=cpu_backend)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    z = rng.standard_normal(9).astype(f32)
    y = (z > 0).astype(f32)
    loss, d = fs.bce_with_logits(_misaligned(z), _misaligned(y), backend=cpu_backend)
    np.testing.assert_allclose(loss, fs.bce_with_logits(z, y, backend="numpy")[0], rtol=1e-6)


def test_misaligned_in_place_arguments_are_rejected(cpu_backend):
    p, g, m, v = (np.zeros(6, f32) for _ in range(4))
    mp = _misaligned(p)
    with pytest.raises(ValueError, match="'param' is updated in place and must be aligned"):
        fs.adam_step(mp, g, m, v, step=1, backend=cpu_backend)
    with pytest.raises(ValueError, match="'out' is updated in place and must be aligned"):
        fs.embedding_backward(np.ones((2, 3), f32), np.array([0, 1]), 4, out=_misaligned(np.zeros((4, 3), f32)),
                              backend=cpu_backend)


def test_cpp_binding_refuses_misaligned_pointers():
    # Defence in depth: the bindings themselves never hand a kernel a misaligned pointer.
    from fastscale import _backends

    if _backends.status("cpp") is not None:
        pytest.skip("cpp unavailable")
    cpu = _backends.module("cpp")
    z = _misaligned(np.zeros(4, f32))
    with pytest.raises(ValueError, match="must be aligned"):
        cpu.bce_with_logits(z, np.zeros(4, f32), np.empty(4, f32))


def test_numpy_backends_are_silent_on_overflow(cpu_backend):
    # numpy's dense_forward raised "RuntimeWarning: overflow encountered in matmul" for a
    # weight of 3.4e38 (an error under pytest's filterwarnings); cpp / numba give inf quietly.
    x = np.ones((2, 3), f32)
    w = np.full((3, 2), 3.4e38, f32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = fs.dense_forward(x, w, backend=cpu_backend)
        fs.dense_backward(y, x, w, None, None, backend=cpu_backend)
        fs.embedding_bag(w, np.array([[0, 1, 2]]), mode="sum", backend=cpu_backend)
        fs.embedding_backward(np.full((3, 2), 3.4e38, f32), np.array([0, 0, 0]), 3, backend=cpu_backend)
        fs.bce_with_logits(np.array([np.inf, -np.inf, np.nan], f32), np.array([0, 1, 1], f32), backend=cpu_backend)
    assert np.isinf(y).all()


@pytest.mark.parametrize("form", ["dense", "sparse", "rows", "multi"])
def test_adam_float64_hyperparameter_past_float32_range(cpu_backend, form):
    # Was a RuntimeWarning (overflow in cast) on numba only, found by the long fuzz run with
    # eps=1e308 on float32 arrays: the coefficient now rounds to inf on every backend, silently
    # (and without the C++ cast's undefined behaviour), so the update is exactly zero.
    rng = np.random.default_rng(0)
    p, g, m, v = (rng.random((4, 3)).astype(f32) for _ in range(4))
    want = p.copy()
    h = dict(step=1, eps=1e308, backend=cpu_backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if form == "dense":
            fs.adam_step(p, g, m, v, **h)
        elif form == "sparse":
            fs.sparse_adam_step(p, np.array([0, 2]), g[:2], m, v, **h)
        elif form == "rows":
            fs.adam_step(p, fs.SparseRows(np.array([0, 2]), g[:2], 4), m, v, **h)
        else:
            fs.adam_step([p], [g], [m], [v], **h)
    np.testing.assert_array_equal(p, want)
    assert np.isfinite(m).all() and np.isfinite(v).all()


def test_adam_sparse_rows_grad_misaligned_rows_is_copied(cpu_backend):
    # The SparseRows fast path first took a misaligned rows view to the kernel (cpp raised
    # "must be aligned", numba and numpy ran): misaligned arrays must take the copying path.
    buf = np.zeros(3 * 8 + 1, np.uint8)
    buf[1:] = np.frombuffer(np.array([0, 2, 3], np.int64).tobytes(), np.uint8)
    rows = np.frombuffer(buf.data, dtype=np.int64, count=3, offset=1)
    assert not rows.flags.aligned and rows.tolist() == [0, 2, 3]
    p, m, v = (np.ones((4, 3), f32) for _ in range(3))
    want, wm, wv = p.copy(), m.copy(), v.copy()
    fs.adam_step(p, fs.SparseRows(rows, np.ones((3, 3), f32), 4), m, v, step=1, backend=cpu_backend)
    dense = np.ones((4, 3), f32)
    dense[1] = 0
    fs.adam_step(want, dense, wm, wv, step=1, backend=cpu_backend)
    assert p.tobytes() == want.tobytes()


@pytest.mark.parametrize("op", ["forward", "backward"])
def test_embedding_bag_huge_broadcast_ids_fail_fast(cpu_backend, op):
    # Was a > 120 s "hang" on numba (found by the long fuzz run): a (2**32 + 1, 3) broadcast
    # view of ids was validated and walked id by id.  Every backend now copies it first, as
    # the cpp adapter always did, and 103 GB is a MemoryError at once.
    ids = np.broadcast_to(np.array([1, 2, 3], np.int64), (2**32 + 1, 3))
    w = np.zeros((10, 2), f32)
    t = time.perf_counter()
    with pytest.raises(MemoryError):
        if op == "forward":
            fs.embedding_bag(w, ids, padding_idx=0, backend=cpu_backend)
        else:
            dout = np.broadcast_to(np.zeros((1, 2), f32), (2**32 + 1, 2))
            fs.embedding_bag_backward(dout, ids, num_embeddings=10, backend=cpu_backend)
    assert time.perf_counter() - t < 10
