"""masked_mean_pool forward / backward: fastscale backends vs PyTorch and numpy.

    PYTHONPATH=src python -m pytest benchmarks/bench_masked_mean_pool.py --benchmark-only -q

Inputs follow the origin model's GlobalAveragePooling1D: x (64, 2500, 128) float32 (the
embedded batch padded to the longest review), mask True on the IMDB-like review lengths
(mean ~230 tokens, longest 2,470; Keras pads in front).  Peers compute the masked sum over
every position and divide by the count, as a framework user writes it.  Every
implementation gets the same arrays and 2 threads.
"""
import os

import numpy as np
import pytest

import fastscale as fs

THREADS = int(os.environ.get("FASTSCALE_BENCH_THREADS", "2"))
fs.set_num_threads(THREADS)
BACKENDS = ["cpp", "numba", "numpy"]
B, T, D = 64, 2500, 128
_cache = {}


def batch(seed=0):
    if not _cache:
        rng = np.random.default_rng(seed)
        lengths = np.clip(rng.lognormal(5.15, 0.75, B).astype(np.int64), 10, 2470)
        lengths[0] = 2470
        mask = np.arange(T)[None, :] >= (T - lengths)[:, None]
        x = rng.uniform(-0.05, 0.05, (B, T, D)).astype(np.float32)
        dout = rng.standard_normal((B, D)).astype(np.float32)
        _cache["b"] = x, mask, dout
    return _cache["b"]


def torch_or_skip():
    try:
        import torch
    except ImportError:
        pytest.skip("torch not installed (pip install 'fastscale[bench]')")
    torch.set_num_threads(THREADS)
    return torch


def _skip_unavailable(impl):
    reason = fs.backends().get(impl)
    if reason is not None:
        pytest.skip(f"{impl} unavailable: {reason}")


def _record(benchmark, nbytes):
    benchmark.extra_info["bytes"] = nbytes
    if benchmark.stats:
        benchmark.extra_info["GB/s"] = round(nbytes / benchmark.stats.stats.median / 1e9, 2)


@pytest.mark.parametrize("impl", BACKENDS + ["torch", "numpy_masked_sum"])
def test_forward(benchmark, impl):
    benchmark.group = "masked_mean_pool forward (64, 2500, 128)"
    x, mask, _ = batch()
    if impl == "torch":
        torch = torch_or_skip()
        tx, tm = torch.from_numpy(x), torch.from_numpy(mask)

        def f():
            m = tm.unsqueeze(-1).to(tx.dtype)
            return (tx * m).sum(1) / m.sum(1).clamp(min=1)

        with torch.no_grad():
            benchmark(f)
    elif impl == "numpy_masked_sum":
        benchmark(lambda: (x * mask[:, :, None]).sum(1) / np.maximum(mask.sum(1), 1)[:, None])
    else:
        _skip_unavailable(impl)
        fs.masked_mean_pool(x, mask, backend=impl)  # jit / warm
        benchmark(lambda: fs.masked_mean_pool(x, mask, backend=impl))
    # The bytes a masked sum must read: the kept rows of x, and the mask.
    _record(benchmark, int(mask.sum()) * D * 4 + mask.nbytes)


@pytest.mark.parametrize("impl", BACKENDS + ["cpp_out", "torch", "numpy_masked_sum"])
def test_backward(benchmark, impl):
    benchmark.group = "masked_mean_pool backward (64, 2500, 128)"
    x, mask, dout = batch()
    if impl == "torch":
        torch = torch_or_skip()
        tg, tm = torch.from_numpy(dout), torch.from_numpy(mask)

        def f():
            m = tm.to(tg.dtype)
            return (m / m.sum(1, keepdim=True).clamp(min=1)).unsqueeze(-1) * tg.unsqueeze(1)

        benchmark(f)
    elif impl == "numpy_masked_sum":
        benchmark(lambda: (mask / np.maximum(mask.sum(1, keepdims=True), 1))[:, :, None].astype(np.float32)
                  * dout[:, None, :])
    elif impl == "cpp_out":  # a reused gradient buffer, as a training loop would pass
        _skip_unavailable("cpp")
        out = fs.masked_mean_pool_backward(dout, mask, backend="cpp")
        benchmark(lambda: fs.masked_mean_pool_backward(dout, mask, out=out, backend="cpp"))
    else:
        _skip_unavailable(impl)
        fs.masked_mean_pool_backward(dout, mask, backend=impl)
        benchmark(lambda: fs.masked_mean_pool_backward(dout, mask, backend=impl))
    # dx (B, T, D) written in full.
    _record(benchmark, x.nbytes + mask.nbytes)
