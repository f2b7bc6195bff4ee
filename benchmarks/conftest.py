"""Shared benchmark inputs and peers.

Every benchmark runs fastscale's backends and the peers on the same arrays, 2 threads each,
so the ratios in one run hold even on a noisy machine.  Sizes follow the origin model:
B=64 reviews, D=128, V=10,000, IMDB-like review lengths (mean ~230 tokens, up to ~2,500).
"""
import os

import pytest

# The same inputs and bandwidth measure as `fastscale bench`.
from fastscale.bench import imdb_like_batch, memory_bandwidth  # noqa: F401

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


@pytest.fixture(scope="session")
def bandwidth():
    return memory_bandwidth()
