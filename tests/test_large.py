"""Addressing beyond 2**31 (and 2**32) elements (issue 7, point 3).

A float32 table of V = 2**24 + 17 rows and D = 259 columns has V * D ~ 4.35e9 elements
(> 2**32): it lives in a sparse file (``truncate``), memory-mapped, so only the pages of the
few rows written here exist on disk.  The ops must compute ``id * D`` in 64 bits: a 32-bit
product would wrap and read some low row instead.  D = 259 is not a multiple of any SIMD
width, so the vector chunks and the scalar tail both run.
"""
from __future__ import annotations

import numpy as np
import pytest

import fastscale as fs
from fastscale import _backends

V = 2**24 + 17
D = 259
# Rows whose first element lies past 2**31 / 2**32 elements, the rows around each boundary
# (one of them straddles it), row 0 and the last row.
ROWS = sorted({0, 1, 2**31 // D, 2**31 // D + 1, 2**32 // D, 2**32 // D + 1, 2**24, V - 2, V - 1})


def _row(r):
    """A pattern unique to row r (float32-exact)."""
    return (np.float32(r % 65521) + np.arange(D, dtype=np.float32) / 512).astype(np.float32)


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("large") / "table.f32"
    with open(path, "wb") as f:
        f.truncate(V * D * 4)  # sparse: no block is written until a row is
    try:
        w = np.memmap(path, dtype=np.float32, mode="r+", shape=(V, D))
        for r in ROWS:
            w[r] = _row(r)
        w.flush()
        del w
        yield np.memmap(path, dtype=np.float32, mode="r", shape=(V, D))
    finally:
        path.unlink(missing_ok=True)


def _backends_here():
    return [b for b in ("cpp", "numba", "numpy") if _backends.status(b) is None]


@pytest.mark.parametrize("itype", [np.int32, np.int64])
@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_embedding_bag_reads_rows_beyond_2_32_elements(table, backend, itype):
    if _backends.status(backend) is not None:
        pytest.skip(f"backend {backend!r} unavailable: {_backends.status(backend)}")
    assert table.shape[0] * table.shape[1] > 2**32
    far = [r for r in ROWS if r * D >= 2**31]
    bags = [[r] for r in ROWS] + [far, [ROWS[0], V - 1], [2**32 // D, 2**31 // D, 2**32 // D]]
    ids = np.concatenate([np.array(b) for b in bags]).astype(itype)
    offsets = np.cumsum([0] + [len(b) for b in bags]).astype(itype)
    for mode in ("sum", "mean"):
        out = fs.embedding_bag(table, ids, offsets, mode=mode, backend=backend)
        for b, bag in enumerate(bags):
            want = np.sum([_row(r).astype(np.float64) for r in bag], axis=0)
            if mode == "mean":
                want /= len(bag)
            np.testing.assert_allclose(out[b], want, rtol=1e-6, err_msg=f"{mode} bag {bag}")
    # Padded (B, T) ids with padding_idx: the pad row is skipped, the far rows are read.
    padded = np.array([[V - 1, 0, 2**32 // D + 1], [0, 0, 0]], dtype=itype)
    out = fs.embedding_bag(table, padded, mode="mean", padding_idx=0, backend=backend)
    np.testing.assert_allclose(out[0], (_row(V - 1).astype(np.float64) + _row(2**32 // D + 1)) / 2, rtol=1e-6)
    np.testing.assert_array_equal(out[1], 0)


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_embedding_reads_rows_beyond_2_32_elements(table, backend):
    if _backends.status(backend) is not None:
        pytest.skip(f"backend {backend!r} unavailable: {_backends.status(backend)}")
    ids = np.array(ROWS[::-1], dtype=np.int64)
    out = fs.embedding(table, ids, backend=backend)
    np.testing.assert_array_equal(out, np.stack([_row(r) for r in ROWS[::-1]]))


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_sparse_adam_writes_rows_beyond_2_32_elements(tmp_path, backend):
    """Lazy Adam on (V, D) memory-mapped param / m / v updates exactly the far rows."""
    if _backends.status(backend) is not None:
        pytest.skip(f"backend {backend!r} unavailable: {_backends.status(backend)}")
    maps = []
    try:
        for name in ("param", "m", "v"):
            path = tmp_path / f"{name}.f32"
            with open(path, "wb") as f:
                f.truncate(V * D * 4)
            maps.append(np.memmap(path, dtype=np.float32, mode="r+", shape=(V, D)))
        param, m, v = maps
        rows = np.array([2**31 // D + 1, 2**32 // D + 1, V - 1], dtype=np.int64)
        for r in rows:
            param[r] = _row(r)
        # Where an unsigned 32-bit element index would wrap to for the rows past 2**32 elements.
        low = [int(r * D % 2**32) // D for r in rows if r * D >= 2**32]
        assert low and not set(low) & set(rows.tolist())
        values = np.ones((rows.shape[0], D), np.float32)
        fs.sparse_adam_step(param, rows, values, m, v, step=1, lr=0.5, eps_placement="torch", backend=backend)
        for r in rows:
            # Step 1, torch eps: m_hat = g, v_hat = g*g, so param -= lr * g / (|g| + eps) ~ 0.5.
            np.testing.assert_allclose(param[r], _row(r) - 0.5, rtol=1e-6)
            np.testing.assert_allclose(m[r], 0.1, rtol=1e-6)
            np.testing.assert_allclose(v[r], 0.001, rtol=1e-5)
        for r in low:
            assert not param[r].any() and not m[r].any() and not v[r].any(), f"row {r} was written"
    finally:
        del maps[:]


@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_padding_idx_beyond_int32_with_int32_ids(tmp_path, backend):
    """A table of 2**32 + 2 rows (D = 1, sparse file): padding_idx = 2**32 + 1 with int32 ids.

    cpp narrowed padding_idx to the ids' type, so 2**32 + 1 became 1 and row 1 was dropped
    from every bag as if it were padding.
    """
    if _backends.status(backend) is not None:
        pytest.skip(f"backend {backend!r} unavailable: {_backends.status(backend)}")
    n = 2**32 + 2
    path = tmp_path / "tall.f32"
    with open(path, "wb") as f:
        f.truncate(n * 4)
    try:
        w = np.memmap(path, dtype=np.float32, mode="r+", shape=(n, 1))
        w[1], w[5], w[n - 1] = 10.0, 20.0, 1000.0
        for itype in (np.int32, np.int64):
            out = fs.embedding_bag(w, np.array([[1, 5]], itype), mode="mean", padding_idx=n - 1, backend=backend)
            np.testing.assert_array_equal(out, [[15.0]])
        out = fs.embedding_bag(w, np.array([[1, n - 1, 5]]), mode="mean", padding_idx=n - 1, backend=backend)
        np.testing.assert_array_equal(out, [[15.0]])
        out = fs.embedding_bag(w, np.array([[1, n - 1, 5]]), mode="sum", backend=backend)
        np.testing.assert_array_equal(out, [[1030.0]])
        del w
    finally:
        path.unlink(missing_ok=True)
