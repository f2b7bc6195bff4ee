"""embedding_bag forward / backward: fastscale backends vs PyTorch on the same inputs.

    python -m pytest benchmarks/bench_embedding_bag.py --benchmark-only

extra_info carries the bytes that must move and, for fastscale, the fraction of the
measured copy bandwidth.
"""
import numpy as np
import pytest

import fastscale as fs

from .conftest import imdb_like_batch, torch_or_skip

BACKENDS = ["cpp", "numba", "numpy"]
SIZES = {"V10k": 10_000, "V1M": 1_000_000}
_cache = {}


def batch(V, idtype):
    key = (V, idtype)
    if key not in _cache:
        _cache[key] = imdb_like_batch(V=V, idtype=idtype)
    return _cache[key]


def bytes_forward(weight, ids, B):
    D = weight.shape[1]
    return ids.size * (D * weight.itemsize + ids.itemsize) + B * D * weight.itemsize


def _skip_unavailable(backend):
    if backend in fs.backends() and fs.backends()[backend] is not None:
        pytest.skip(f"{backend} unavailable: {fs.backends()[backend]}")


def _record(benchmark, nbytes, bandwidth):
    benchmark.extra_info["bytes"] = nbytes
    if benchmark.stats:
        med = benchmark.stats.stats.median
        benchmark.extra_info["GB/s"] = round(nbytes / med / 1e9, 2)
        benchmark.extra_info["of_copy_bw"] = round(nbytes / med / bandwidth[0], 3)


@pytest.mark.parametrize("idtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("impl", BACKENDS + ["torch"])
def test_forward_csr(benchmark, bandwidth, impl, size, idtype):
    benchmark.group = f"embedding_bag forward CSR {size} {idtype.__name__}"
    weight, ids, offsets, _ = batch(SIZES[size], idtype)
    if impl == "torch":
        torch = torch_or_skip()
        w, i = torch.from_numpy(weight), torch.from_numpy(ids)
        o = torch.from_numpy(offsets.astype(idtype))
        f = torch.nn.functional.embedding_bag
        with torch.no_grad():
            benchmark(lambda: f(i, w, o, mode="mean", include_last_offset=True))
    else:
        _skip_unavailable(impl)
        fs.embedding_bag(weight, ids, offsets, backend=impl)  # jit / warm
        benchmark(lambda: fs.embedding_bag(weight, ids, offsets, backend=impl))
    _record(benchmark, bytes_forward(weight, ids, 64), bandwidth)


@pytest.mark.parametrize("idtype", [np.int32, np.int64], ids=["i32", "i64"])
@pytest.mark.parametrize("impl", BACKENDS + ["torch_padding_idx", "torch_masked_mean"])
def test_forward_padded(benchmark, bandwidth, impl, idtype):
    """(64, 2500) padded ids (pre-padding, 0 = pad) holding the same tokens as the CSR case of
    the same id dtype: int32 is what Keras's (and fastscale's) pad_sequences returns."""
    benchmark.group = f"embedding_bag forward padded (64, 2500) V10k {np.dtype(idtype).name}"
    weight, ids, offsets, padded = batch(10_000, idtype)
    if impl.startswith("torch"):
        torch = torch_or_skip()
        w, p = torch.from_numpy(weight), torch.from_numpy(padded)
        with torch.no_grad():
            if impl == "torch_padding_idx":
                benchmark(lambda: torch.nn.functional.embedding_bag(p, w, mode="mean", padding_idx=0))
            else:  # what a typical user writes: embed, mask, sum / count
                def masked_mean():
                    e = torch.nn.functional.embedding(p, w)
                    m = (p != 0).unsqueeze(-1).float()
                    return (e * m).sum(1) / m.sum(1).clamp(min=1)

                benchmark(masked_mean)
    else:
        _skip_unavailable(impl)
        fs.embedding_bag(weight, padded, padding_idx=0, backend=impl)
        benchmark(lambda: fs.embedding_bag(weight, padded, padding_idx=0, backend=impl))
    _record(benchmark, bytes_forward(weight, ids, 64) + padded.nbytes, bandwidth)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("impl", BACKENDS + ["torch"])
def test_backward(benchmark, impl, sparse):
    benchmark.group = f"embedding_bag backward CSR V10k {'sparse' if sparse else 'dense'}"
    weight, ids, offsets, _ = batch(10_000, np.int64)
    dout = np.random.default_rng(1).standard_normal((64, weight.shape[1])).astype(np.float32)
    V = weight.shape[0]
    if impl == "torch":
        torch = torch_or_skip()
        bag = torch.nn.EmbeddingBag(V, weight.shape[1], mode="mean", sparse=sparse)
        i, o = torch.from_numpy(ids), torch.from_numpy(offsets[:-1].copy())
        g = torch.from_numpy(dout)

        def step():
            bag.weight.grad = None
            bag(i, o).backward(g)

        benchmark(step)
    else:
        _skip_unavailable(impl)
        out = None if sparse else np.empty_like(weight)
        fn = lambda: fs.embedding_bag_backward(  # noqa: E731
            dout, ids, offsets, num_embeddings=V, sparse=sparse, out=out, backend=impl
        )
        fn()
        benchmark(fn)
