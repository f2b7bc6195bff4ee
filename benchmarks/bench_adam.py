"""adam_step / sparse_adam_step: fastscale backends vs PyTorch's optimizers on the same arrays.

    python -m pytest benchmarks/bench_adam.py --benchmark-only

Adam is bandwidth bound: a float32 step reads param, grad, m, v and writes param, m, v,
28 bytes per parameter.  extra_info carries those bytes, GB/s at the median and the fraction
of the measured STREAM read-modify-write bandwidth (conftest.memory_bandwidth).  At 1.28 M
parameters the 20 MB of state fits in this machine's L3, so that size can beat DRAM; 128 M
parameters (3.6 GB moved per step) measure DRAM.

test_adam_step_sparse_rows: Keras's dense Adam on the origin's 10,000 x 128 table when the
gradient comes as SparseRows (the ~3,700 rows one batch touches), as fastscale's training
step runs it, against the same step from the densified gradient and torch's fused Adam.
"""
import numpy as np
import pytest

import fastscale as fs

from .conftest import torch_or_skip

BACKENDS = ["cpp", "numba", "numpy"]
SIZES = {"1.28M": 1_280_000, "32M": 32_000_000, "128M": 128_000_000}
BYTES_PER_PARAM = 7 * 4  # float32: read p, g, m, v; write p, m, v
V, D = 10_000, 128  # the origin's embedding table
_cache = {}


def dense_state(n):
    """(param, grad, m, v) float32, shared by every benchmark of that size (state drifts, harmlessly)."""
    if n not in _cache:
        _cache.clear()  # at most one 512 MB set alive
        rng = np.random.default_rng(0)
        p = rng.standard_normal(n, dtype=np.float32)
        g = rng.standard_normal(n, dtype=np.float32)
        _cache[n] = (p, g, np.zeros(n, np.float32), np.zeros(n, np.float32))
    return _cache[n]


def sparse_state():
    """The rows one IMDB-like batch of 64 reviews touches (~3,700 of 10,000) and their gradient."""
    from fastscale.bench import imdb_like_batch

    rng = np.random.default_rng(1)
    p = rng.uniform(-0.05, 0.05, (V, D)).astype(np.float32)
    _, ids, off, _ = imdb_like_batch(seed=2)
    rows = np.unique(ids).astype(np.int64)
    values = rng.standard_normal((rows.shape[0], D)).astype(np.float32)
    return p, rows, values, np.zeros((V, D), np.float32), np.zeros((V, D), np.float32)


def _skip_unavailable(backend):
    if fs.backends()[backend] is not None:
        pytest.skip(f"{backend} unavailable: {fs.backends()[backend]}")


def _record(benchmark, nbytes, bandwidth):
    benchmark.extra_info["bytes"] = nbytes
    if benchmark.stats:
        med = benchmark.stats.stats.median
        benchmark.extra_info["GB/s"] = round(nbytes / med / 1e9, 2)
        benchmark.extra_info["of_rmw_bw"] = round(nbytes / med / bandwidth[1], 3)


def _counter():
    step = [0]

    def nxt():
        step[0] += 1
        return step[0]

    return nxt


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("impl", BACKENDS + ["torch_fused", "torch_foreach"])
def test_adam_step(benchmark, bandwidth, impl, size):
    n = SIZES[size]
    benchmark.group = f"adam_step float32 {size} params"
    p, g, m, v = dense_state(n)
    if impl.startswith("torch"):
        torch = torch_or_skip()
        tp = torch.from_numpy(p.copy()).requires_grad_()
        tp.grad = torch.from_numpy(g)
        kind = {"fused": True} if impl == "torch_fused" else {"foreach": True}
        opt = torch.optim.Adam([tp], lr=1e-3, eps=1e-7, **kind)
        opt.step()  # creates the state
        benchmark(opt.step)
        del opt, tp
    else:
        _skip_unavailable(impl)
        nxt = _counter()
        fs.adam_step(p, g, m, v, step=nxt(), backend=impl)  # jit / warm
        benchmark(lambda: fs.adam_step(p, g, m, v, step=nxt(), backend=impl))
    _record(benchmark, BYTES_PER_PARAM * n, bandwidth)


@pytest.mark.parametrize("impl", BACKENDS + ["torch_sparse_adam"])
def test_sparse_adam_step(benchmark, bandwidth, impl):
    p, rows, values, m, v = sparse_state()
    R = rows.shape[0]
    benchmark.group = f"sparse_adam_step float32 {R} of {V}x{D} rows (one batch's)"
    if impl.startswith("torch"):
        torch = torch_or_skip()
        tp = torch.from_numpy(p).requires_grad_()
        opt = torch.optim.SparseAdam([tp], lr=1e-3, eps=1e-7)
        # What an nn.Embedding(sparse=True) backward hands the optimizer (coalesced rows).
        grad = torch.sparse_coo_tensor(torch.from_numpy(rows)[None], torch.from_numpy(values), (V, D)).coalesce()

        def step():
            tp.grad = grad
            opt.step()

        step()
        benchmark(step)
    else:
        _skip_unavailable(impl)
        nxt = _counter()
        fs.sparse_adam_step(p, rows, values, m, v, step=nxt(), backend=impl)
        benchmark(lambda: fs.sparse_adam_step(p, rows, values, m, v, step=nxt(), backend=impl))
    _record(benchmark, BYTES_PER_PARAM * R * D, bandwidth)


@pytest.mark.parametrize("impl", ["cpp_sparse_rows", "cpp_dense_grad", "torch_fused"])
def test_adam_step_sparse_rows(benchmark, bandwidth, impl):
    from fastscale.bench import imdb_like_batch

    benchmark.group = "adam_step (every row) on the 10,000 x 128 table, one batch's gradient"
    w, ids, off, _ = imdb_like_batch(seed=2)
    dout = np.random.default_rng(3).standard_normal((64, D)).astype(np.float32)
    g = fs.embedding_bag_backward(dout, ids, off, num_embeddings=V, sparse=True)
    m, v = np.zeros_like(w), np.zeros_like(w)
    if impl == "torch_fused":
        torch = torch_or_skip()
        tp = torch.from_numpy(w.copy()).requires_grad_()
        tp.grad = torch.from_numpy(g.to_dense())
        opt = torch.optim.Adam([tp], lr=1e-3, eps=1e-7, fused=True)
        opt.step()
        benchmark(opt.step)
        return
    _skip_unavailable("cpp")
    grad = g if impl == "cpp_sparse_rows" else g.to_dense()
    nxt = _counter()
    fs.adam_step(w, grad, m, v, step=nxt(), backend="cpp")
    benchmark(lambda: fs.adam_step(w, grad, m, v, step=nxt(), backend="cpp"))
