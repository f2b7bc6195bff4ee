"""One whole training step of the origin model (forward, loss, backward, Adam), fastscale vs
the PyTorch step a careful user writes, on the same IMDB-like batch, 2 threads each.

    python -m pytest benchmarks/bench_train_step.py --benchmark-only

Model: Embedding(10000, 128) -> masked mean -> Dense(64, relu) -> Dense(1, sigmoid), binary
cross-entropy from the logit, Adam(1e-3) over every parameter (Keras's dense Adam: all 10,000
embedding rows move each step).  One batch of 64 IMDB-like reviews (~16,900 tokens).

* fastscale: ``Sequential.train_on_batch`` on CSR bags (what ``fit`` feeds it) and on the
  padded ``(64, 2500)`` ids (what a Keras user passes).
* torch "tuned": ``nn.EmbeddingBag(mode="mean")`` on CSR bags (FBGEMM's fast path) -> Linear
  -> ReLU -> Linear, ``BCEWithLogitsLoss``, ``torch.optim.Adam(fused=True)``,
  ``zero_grad(set_to_none=True)``.  "padded": the same with ``padding_idx=0`` on the padded
  ids, the form a PyTorch user porting Keras code writes.

The ratio to report is torch's median over fastscale's (bench_train_step in benchmarks/README.md).
"""
import numpy as np
import pytest

import fastscale as fs
from fastscale import nn, optim

from .conftest import imdb_like_batch, torch_or_skip

V, D, H, B = 10_000, 128, 64, 64


def _batch():
    _, ids, off, padded = imdb_like_batch(V=V, D=D, B=B, seed=5)
    y = (np.random.default_rng(1).random(B) > 0.5).astype(np.float32)
    return ids, off, padded, y


def fastscale_model():
    m = nn.Sequential([nn.Embedding(V, D, mask_zero=True), nn.GlobalAveragePooling1D(),
                       nn.Dense(H, activation="relu"), nn.Dense(1, activation="sigmoid")])
    m.compile(optimizer=optim.Adam(learning_rate=1e-3), loss="binary_crossentropy", metrics=["accuracy"], seed=0)
    return m


@pytest.mark.parametrize("inputs", ["bags", "padded"])
def test_fastscale_step(benchmark, inputs):
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    ids, off, padded, y = _batch()
    x = (ids, off) if inputs == "bags" else padded
    m = fastscale_model()
    m.train_on_batch(x, y)
    benchmark(m.train_on_batch, x, y)


@pytest.mark.parametrize("inputs", ["bags", "padded"])
def test_torch_step(benchmark, inputs):
    torch = torch_or_skip()
    ids, off, padded, y = _batch()
    torch.manual_seed(0)
    emb = torch.nn.EmbeddingBag(V, D, mode="mean", padding_idx=0 if inputs == "padded" else None)
    head = torch.nn.Sequential(torch.nn.Linear(D, H), torch.nn.ReLU(), torch.nn.Linear(H, 1))
    params = list(emb.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, eps=1e-7, fused=True)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    yt = torch.from_numpy(y)[:, None]
    if inputs == "bags":
        args = (torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(off[:-1].astype(np.int64)))
    else:
        args = (torch.from_numpy(padded.astype(np.int64)),)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(head(emb(*args)), yt)
        loss.backward()
        opt.step()
        return loss

    step()
    benchmark(step)
