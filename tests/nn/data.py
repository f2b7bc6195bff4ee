"""Tiny synthetic text-classification data (token ids), learnable in a few epochs."""
import numpy as np


def sequences(n=400, classes=2, V=200, seed=0, min_len=4, max_len=30):
    """Ragged id sequences (ids >= 1) and labels: class k favours ids in its own band."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    band = 20
    seqs = []
    for k in y:
        L = int(rng.integers(min_len, max_len + 1))
        noise = rng.integers(1 + classes * band, V, size=L)
        signal = rng.integers(1 + k * band, 1 + (k + 1) * band, size=L)
        seqs.append(np.where(rng.random(L) < 0.35, signal, noise))
    return seqs, y


def padded(seqs, T=None):
    T = T or max(len(s) for s in seqs)
    x = np.zeros((len(seqs), T), np.int32)
    for i, s in enumerate(seqs):
        s = s[:T]
        x[i, : len(s)] = s  # post-padding, as pad_sequences(padding="post")
    return x


def binary(n=400, seed=0):
    seqs, y = sequences(n, 2, seed=seed)
    return padded(seqs), y
