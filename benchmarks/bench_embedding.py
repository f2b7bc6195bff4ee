"""embedding forward / backward: fastscale backends vs PyTorch and numpy fancy indexing.

    PYTHONPATH=src python -m pytest benchmarks/bench_embedding.py --benchmark-only -q

Inputs follow the origin model: V=10,000, D=128, B=64 IMDB-like reviews, either the bare
tokens ("flat", ~17k ids) or padded to the longest review ((64, 2500), what Keras' Embedding
layer sees).  Every implementation gets the same arrays and 2 threads.
"""
import os

import numpy as np
import pytest

import fastscale as fs

THREADS = int(os.environ.get("FASTSCALE_BENCH_THREADS", "2"))
fs.set_num_threads(THREADS)
BACKENDS = ["cpp", "numba", "numpy"]
V, D, B, T = 10_000, 128, 64, 2500
_cache = {}


def imdb_like_ids(shape_kind, idtype=np.int64, seed=0):
    """Zipf-distributed token ids 1..V-1 with IMDB-like review lengths (lognormal, mean ~230,
    longest 2,470); "padded" puts them after 0-padding in a (B, T) array, as Keras does."""
    key = (shape_kind, idtype)
    if key not in _cache:
        rng = np.random.default_rng(seed)
        lengths = np.clip(rng.lognormal(5.15, 0.75, B).astype(np.int64), 10, 2470)
        lengths[0] = 2470
        flat = (rng.zipf(1.2, int(lengths.sum())) % (V - 1) + 1).astype(idtype)
        if shape_kind == "flat":
            ids = flat
        else:
            ids = np.zeros((B, T), idtype)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            for b in range(B):
                ids[b, T - lengths[b]:] = flat[starts[b]: starts[b + 1]]
        weight = rng.uniform(-0.05, 0.05, (V, D)).astype(np.float32)
        dout = rng.standard_normal(ids.shape + (D,)).astype(np.float32)
        _cache[key] = weight, ids, dout
    return _cache[key]


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


@pytest.mark.parametrize("idtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("kind", ["flat", "padded"])
@pytest.mark.parametrize("impl", BACKENDS + ["torch", "numpy_fancy"])
def test_forward(benchmark, impl, kind, idtype):
    benchmark.group = f"embedding forward {kind} V10k D128 {idtype.__name__}"
    weight, ids, _ = imdb_like_ids(kind, idtype)
    if impl == "torch":
        torch = torch_or_skip()
        w, i = torch.from_numpy(weight), torch.from_numpy(ids)
        with torch.no_grad():
            benchmark(lambda: torch.nn.functional.embedding(i, w))
    elif impl == "numpy_fancy":
        benchmark(lambda: weight[ids])
    else:
        _skip_unavailable(impl)
        fs.embedding(weight, ids, backend=impl)  # jit / warm
        benchmark(lambda: fs.embedding(weight, ids, backend=impl))
    # Rows read + ids read + output written.
    _record(benchmark, ids.size * (2 * D * weight.itemsize + ids.itemsize))


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("kind", ["flat", "padded"])
@pytest.mark.parametrize("impl", BACKENDS + ["torch", "numpy_add_at"])
def test_backward(benchmark, impl, kind, sparse):
    benchmark.group = f"embedding backward {kind} V10k D128 {'sparse' if sparse else 'dense'}"
    weight, ids, dout = imdb_like_ids(kind, np.int64)
    if impl == "torch":
        torch = torch_or_skip()
        g, i = torch.from_numpy(dout), torch.from_numpy(ids)
        # The aten kernels torch's autograd calls for F.embedding(..., sparse=False / True).
        if sparse:
            benchmark(lambda: torch.ops.aten.embedding_sparse_backward(g, i, V, -1, False))
        else:
            benchmark(lambda: torch.ops.aten.embedding_dense_backward(g, i, V, -1, False))
    elif impl == "numpy_add_at":
        if sparse:
            pytest.skip("numpy_add_at is the dense peer")
        out = np.empty((V, D), np.float32)

        def step():
            out[...] = 0
            np.add.at(out, ids.reshape(-1), dout.reshape(-1, D))

        benchmark(step)
    else:
        _skip_unavailable(impl)
        out = None if sparse else np.empty((V, D), np.float32)  # a reused buffer, as in training
        fn = lambda: fs.embedding_backward(dout, ids, V, sparse=sparse, out=out, backend=impl)  # noqa: E731
        fn()
        benchmark(fn)
    _record(benchmark, dout.nbytes + ids.nbytes + (0 if sparse else V * D * 4))
