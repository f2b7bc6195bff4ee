"""No op leaks memory (issue 7, point 4): many calls on small inputs grow RSS by < 5 MB.

RSS is read from /proc/self/statm after a warm-up (caches, numba compilation, the per-thread
scratch buffers the sparse backwards and dense keep) and a gc.collect().  Besides the normal
path of each op, a call that fails (a bad id, a bad hyperparameter) is repeated too: an
exception leaving a binding must not leak its arguments either.

Default run: 10,000 calls per op on cpp (the extension is where a leak would hide: refcounts
in the bindings).  ``-m slow``: 100,000 calls per op on every CPU backend.
"""
from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

import fastscale as fs
from fastscale import _backends

LIMIT = 5 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def _calls(backend):
    rng = np.random.default_rng(0)
    f = np.float32
    w = rng.standard_normal((50, 8)).astype(f)
    ids2 = rng.integers(1, 50, (4, 6))
    ids1 = ids2.reshape(-1)
    offs = np.array([0, 5, 5, 12, 24])
    bad = ids2.copy()
    bad[2, 3] = 50
    dout = rng.standard_normal((4, 8)).astype(f)
    x = rng.standard_normal((4, 6, 8)).astype(f)
    mask = ids2 > 10
    xw = rng.standard_normal((8, 3)).astype(f)
    bias = np.zeros(3, f)
    y = fs.dense_forward(dout, xw, bias, "relu", backend=backend)
    p, g, m, v = (rng.random((50, 8)).astype(f) for _ in range(4))
    rows = np.array([1, 4, 9])
    vals = rng.standard_normal((3, 8)).astype(f)
    logits = rng.standard_normal(16).astype(f)
    targets = (logits > 0).astype(f)
    gbuf = np.empty((50, 8), f)
    b = dict(backend=backend)

    def expect(exc, fn):
        def call():
            try:
                fn()
            except exc:
                return
            raise AssertionError("expected an exception")

        return call

    return {
        "embedding": lambda: fs.embedding(w, ids2, **b),
        "embedding_backward": lambda: fs.embedding_backward(np.ones((4, 6, 8), f), ids2, 50, out=gbuf, **b),
        "embedding_backward_sparse": lambda: fs.embedding_backward(np.ones((4, 6, 8), f), ids2, 50, sparse=True, **b),
        "masked_mean_pool": lambda: fs.masked_mean_pool(x, mask, **b),
        "masked_mean_pool_backward": lambda: fs.masked_mean_pool_backward(dout, mask, **b),
        "embedding_bag": lambda: fs.embedding_bag(w, ids2, padding_idx=0, **b),
        "embedding_bag_csr": lambda: fs.embedding_bag(w, ids1, offs, mode="sum", **b),
        "embedding_bag_bad_id": expect(IndexError, lambda: fs.embedding_bag(w, bad, **b)),
        "embedding_bag_backward": lambda: fs.embedding_bag_backward(dout, ids2, num_embeddings=50, out=gbuf, **b),
        "embedding_bag_backward_sparse": lambda: fs.embedding_bag_backward(dout, ids1, offs, num_embeddings=50,
                                                                           sparse=True, **b),
        "dense_forward": lambda: fs.dense_forward(dout, xw, bias, "relu", **b),
        "dense_backward": lambda: fs.dense_backward(y, dout, xw, y, "relu", **b),
        "bce_with_logits": lambda: fs.bce_with_logits(logits, targets, **b),
        "adam_step": lambda: fs.adam_step(p, g, m, v, step=3, **b),
        "adam_step_bad_lr": expect(ValueError, lambda: fs.adam_step(p, g, m, v, step=3, lr=-1.0, **b)),
        "sparse_adam_step": lambda: fs.sparse_adam_step(p, rows, vals, m, v, step=3, **b),
        "sparse_adam_step_bad_row": expect(IndexError, lambda: fs.sparse_adam_step(p, rows + 47, vals, m, v, step=3, **b)),
    }


NAMES = sorted(_calls("numpy"))


@pytest.fixture(autouse=True)
def _one_thread():
    # A leak does not depend on the thread count, and on a loaded 2-core machine every
    # OpenMP barrier can wait a scheduler slice: one thread keeps 10,000 calls quick.
    n = fs.get_num_threads()
    fs.set_num_threads(1)
    yield
    fs.set_num_threads(n)


def _growth(call, n):
    for _ in range(max(1000, n // 20)):  # warm-up
        call()
    gc.collect()
    before = rss()
    for _ in range(n):
        call()
    gc.collect()
    return rss() - before


def _check(backend, name, n):
    if _backends.status(backend) is not None:
        pytest.skip(f"backend {backend!r} unavailable: {_backends.status(backend)}")
    grew = _growth(_calls(backend)[name], n)
    assert grew < LIMIT, f"{name} on {backend}: RSS grew by {grew / 2**20:.1f} MB over {n} calls"


@pytest.mark.parametrize("name", NAMES)
def test_no_leak_cpp(name):
    _check("cpp", name, 10_000)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("backend", ["cpp", "numba", "numpy"])
def test_no_leak_long(backend, name):
    _check(backend, name, 100_000)


def test_a_leak_is_seen():
    """The measurement can fail: keeping a fresh 4 KB page per call for 10,000 calls is caught.

    Anonymous mmaps are always new pages; heap allocations could reuse memory that earlier
    tests freed but the allocator kept resident, and then RSS would not move.
    """
    import mmap

    kept = []

    def leak():
        page = mmap.mmap(-1, 4096)
        page.write(b"x" * 4096)
        kept.append(page)

    grew = _growth(leak, 10_000)
    assert grew > LIMIT / 5, grew
