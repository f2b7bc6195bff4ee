"""Shared benchmark inputs and peers.

Every benchmark runs fastscale's backends and the peers on the same arrays, 2 threads each,
so the ratios in one run hold even on a noisy machine.  Sizes follow the origin model:
B=64 reviews, D=128, V=10,000, IMDB-like review lengths (mean ~230 tokens, up to ~2,500).
"""
import os

import numpy as np
import pytest

THREADS = int(os.environ.get("FASTSCALE_BENCH_THREADS", "2"))


def _set_threads():
    import fastscale

    fastscale.set_num_threads(THREADS)
    try:
        import torch

        torch.set_num_threads(THREADS)
    except ImportError:
        pass


_set_threads()


def torch_or_skip():
    try:
        import torch
    except ImportError:
        pytest.skip("torch not installed (pip install 'fastscale[bench]')")
    torch.set_num_threads(THREADS)
    return torch


def imdb_like_lengths(B=64, seed=0, longest=2470):
    """Review lengths shaped like IMDB's (lognormal, mean ~230) with one review of `longest`."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(5.15, 0.75, B).astype(np.int64), 10, longest)
    lengths[0] = longest
    return lengths


def imdb_like_batch(V=10_000, D=128, B=64, seed=0, idtype=np.int32, T=2500):
    """(weight, csr ids, offsets, padded ids (B, T) with 0 = padding) holding the same tokens."""
    rng = np.random.default_rng(seed)
    lengths = imdb_like_lengths(B, seed)
    # Zipf-like word frequencies, ids 1..V-1 (0 is padding).
    ids = (rng.zipf(1.2, int(lengths.sum())) % (V - 1) + 1).astype(idtype)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    padded = np.zeros((B, T), idtype)
    for b in range(B):
        padded[b, T - lengths[b] :] = ids[offsets[b] : offsets[b + 1]]  # Keras pads in front
    weight = rng.uniform(-0.05, 0.05, (V, D)).astype(np.float32)
    return weight, ids, offsets, padded


def memory_bandwidth():
    """STREAM-like copy and read-modify-write bandwidth (bytes/s) over the cpp threads."""
    import time

    from fastscale import _backends

    cpu = _backends.module("cpp")
    n = 1 << 25
    a, b = np.ones(n, np.float32), np.ones(n, np.float32)
    best_copy = best_rmw = 0.0
    for _ in range(5):
        t = time.perf_counter()
        cpu.stream_copy(a, b)
        best_copy = max(best_copy, 8 * n / (time.perf_counter() - t))
        t = time.perf_counter()
        cpu.stream_rmw(a, b)
        best_rmw = max(best_rmw, 12 * n / (time.perf_counter() - t))
    return best_copy, best_rmw


@pytest.fixture(scope="session")
def bandwidth():
    return memory_bandwidth()
