"""``fastscale bench``: a quick table of fastscale's kernels against the peers present here.

Measures the machine's memory bandwidth first (STREAM-like copy and read-modify-write over
the cpp threads), then times each op at the origin model's shapes (B=64, D=128, V=10,000,
IMDB-like review lengths; V=1,000,000; Adam over 1.28 M parameters) for fastscale's cpp
backend, NumPy and PyTorch when installed, all on the same arrays and the same thread count.
The ratio is peer time / fastscale time (higher is better for fastscale).  The full
pytest-benchmark suite lives in ``benchmarks/``.
"""
from __future__ import annotations

import time

import numpy as np

from . import _backends, ops

BATCH, DIM, VOCAB = 64, 128, 10_000


def imdb_like_batch(V=VOCAB, D=DIM, B=BATCH, seed=0, idtype=np.int32, T=2500):
    """(weight, csr ids, offsets, padded (B, T) ids with 0 = padding), the same tokens twice.

    Review lengths are lognormal with mean ~230 tokens plus one review of 2,470 (IMDB's
    shape); word ids are Zipf-distributed over 1..V-1.
    """
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(5.15, 0.75, B).astype(np.int64), 10, 2470)
    lengths[0] = 2470
    ids = (rng.zipf(1.2, int(lengths.sum())) % (V - 1) + 1).astype(idtype)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    padded = np.zeros((B, T), idtype)
    for b in range(B):
        padded[b, T - lengths[b] :] = ids[offsets[b] : offsets[b + 1]]
    weight = rng.uniform(-0.05, 0.05, (V, D)).astype(np.float32)
    return weight, ids, offsets, padded


def timeit(fn, budget=0.25, min_runs=5):
    """Median seconds of fn() over repeated runs within about `budget` seconds."""
    fn()
    times = []
    t_end = time.perf_counter() + budget
    while len(times) < min_runs or time.perf_counter() < t_end:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 2000:
            break
    return float(np.median(times))


def memory_bandwidth():
    """(copy, read-modify-write) bytes/s, best of 5, over the cpp threads."""
    cpu = _backends.module("cpp")
    n = 1 << 25
    a, b = np.ones(n, np.float32), np.ones(n, np.float32)
    copy = rmw = 0.0
    for _ in range(5):
        t = time.perf_counter()
        cpu.stream_copy(a, b)
        copy = max(copy, 8 * n / (time.perf_counter() - t))
        t = time.perf_counter()
        cpu.stream_rmw(a, b)
        rmw = max(rmw, 12 * n / (time.perf_counter() - t))
    return copy, rmw


def _torch(threads):
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def cases(torch):
    """Yield (name, bytes moved or None, bandwidth kind, fastscale fn, {peer: fn})."""
    w, ids, off, padded = imdb_like_batch()
    V = w.shape[0]
    peers = {}
    if torch is not None:
        tw, ti, to = torch.from_numpy(w), torch.from_numpy(ids), torch.from_numpy(off.astype(np.int32))
        peers["torch"] = lambda: torch.nn.functional.embedding_bag(ti, tw, to, mode="mean", include_last_offset=True)
    nbytes = ids.size * (DIM * 4 + 4) + BATCH * DIM * 4
    yield "embedding_bag fwd CSR V=10k", nbytes, "copy", lambda: ops.embedding_bag(w, ids, off, backend="cpp"), peers

    w1m, ids1m, off1m, _ = imdb_like_batch(V=1_000_000, seed=1)
    peers = {}
    if torch is not None:
        tw1, ti1, to1 = torch.from_numpy(w1m), torch.from_numpy(ids1m), torch.from_numpy(off1m.astype(np.int32))
        peers["torch"] = lambda: torch.nn.functional.embedding_bag(ti1, tw1, to1, mode="mean", include_last_offset=True)
    yield "embedding_bag fwd CSR V=1M", nbytes, "copy", lambda: ops.embedding_bag(w1m, ids1m, off1m, backend="cpp"), peers

    peers = {}
    if torch is not None:
        tp = torch.from_numpy(padded.astype(np.int64))
        peers["torch"] = lambda: torch.nn.functional.embedding_bag(tp, tw, mode="mean", padding_idx=0)
    yield (
        "embedding_bag fwd padded (64,2500)", nbytes + padded.nbytes, "copy",
        lambda: ops.embedding_bag(w, padded, padding_idx=0, backend="cpp"), peers,
    )

    dout = np.random.default_rng(2).standard_normal((BATCH, DIM)).astype(np.float32)
    grad = np.empty_like(w)
    for sparse in (False, True):
        peers = {}
        if torch is not None:
            bag = torch.nn.EmbeddingBag(V, DIM, mode="mean", sparse=sparse)
            ti64, to64, tg = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(off[:-1].copy()), torch.from_numpy(dout)

            def torch_backward(bag=bag, ti64=ti64, to64=to64, tg=tg):
                bag.weight.grad = None
                bag(ti64, to64).backward(tg)

            peers["torch"] = torch_backward
        kind = "sparse" if sparse else "dense"
        yield (
            f"embedding_bag bwd {kind} V=10k", None, None,
            lambda sparse=sparse: ops.embedding_bag_backward(
                dout, ids, off, num_embeddings=V, sparse=sparse, out=None if sparse else grad, backend="cpp"
            ),
            peers,
        )

    n = 1_280_000
    rng = np.random.default_rng(3)
    p, g = rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)
    m, v = np.zeros(n, np.float32), np.zeros(n, np.float32)
    peers = {}
    if torch is not None:
        tp_ = torch.nn.Parameter(torch.from_numpy(p.copy()))
        tp_.grad = torch.from_numpy(g.copy())
        opt = torch.optim.Adam([tp_], lr=1e-3, fused=True)
        peers["torch fused"] = opt.step
    step = [0]

    def adam():
        step[0] += 1
        ops.adam_step(p, g, m, v, step=step[0], lr=1e-3, backend="cpp")

    yield "adam_step 1.28M params", 28 * n, "rmw", adam, peers

    x = rng.standard_normal((BATCH, DIM)).astype(np.float32)
    W1 = rng.standard_normal((DIM, 64)).astype(np.float32) * 0.1
    b1 = np.zeros(64, np.float32)
    dz = rng.standard_normal((BATCH, 64)).astype(np.float32)

    def dense_fs():
        out = ops.dense_forward(x, W1, b1, "relu", backend="cpp")
        ops.dense_backward(dz, x, W1, out, "relu", backend="cpp")

    def dense_np():
        out = np.maximum(x @ W1 + b1, 0)
        d = dz * (out > 0)
        return d @ W1.T, x.T @ d, d.sum(0)

    yield "dense fwd+bwd 64x128x64 relu", None, None, dense_fs, {"numpy": dense_np}

    logits = rng.standard_normal((BATCH, 1)).astype(np.float32)
    targets = (rng.random((BATCH, 1)) > 0.5).astype(np.float32)

    def bce_np():
        z = logits
        loss = np.mean(np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z))))
        return loss, (1 / (1 + np.exp(-z)) - targets) / z.size

    yield "bce_with_logits (64,1)", None, None, lambda: ops.bce_with_logits(logits, targets, backend="cpp"), {"numpy": bce_np}

    # The whole training step of the origin model (forward, loss, backward, Adam over every
    # parameter) on one batch of CSR bags, against PyTorch's tuned step (EmbeddingBag on CSR
    # bags, fused Adam); benchmarks/bench_train_step.py is the pytest-benchmark version.
    from . import nn, optim

    y = (rng.random(BATCH) > 0.5).astype(np.float32)
    model = nn.Sequential([nn.Embedding(V, DIM, mask_zero=True), nn.GlobalAveragePooling1D(),
                           nn.Dense(64, activation="relu"), nn.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optim.Adam(1e-3), loss="binary_crossentropy", metrics=["accuracy"], seed=0,
                  backend="cpp")
    peers = {}
    if torch is not None:
        emb = torch.nn.EmbeddingBag(V, DIM, mode="mean")
        head = torch.nn.Sequential(torch.nn.Linear(DIM, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
        topt = torch.optim.Adam(list(emb.parameters()) + list(head.parameters()), lr=1e-3, eps=1e-7, fused=True)
        lossf = torch.nn.BCEWithLogitsLoss()
        ti64, to64, ty = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(off[:-1].copy()), torch.from_numpy(y)[:, None]

        def torch_step():
            topt.zero_grad(set_to_none=True)
            lossf(head(emb(ti64, to64)), ty).backward()
            topt.step()

        peers["torch tuned"] = torch_step
    yield "training step (origin model, B=64)", None, None, lambda: model.train_on_batch((ids, off), y), peers


def run(threads: int = 2, budget: float = 0.25, out=print) -> list[dict]:
    """Print the table; return its rows."""
    err = _backends.status("cpp")
    if err is not None:
        raise _backends.BackendUnavailableError(f"fastscale bench needs the cpp backend: {err}")
    _backends.set_num_threads(threads)
    torch = _torch(threads)
    copy, rmw = memory_bandwidth()
    out(f"memory bandwidth ({threads} threads): copy {copy / 1e9:.1f} GB/s, read-modify-write {rmw / 1e9:.1f} GB/s")
    out(f"peers: numpy {np.__version__}" + (f", torch {torch.__version__}" if torch is not None else ", torch not installed"))
    header = f"{'op':38s} {'fastscale':>10s} {'peer':>12s} {'peer time':>10s} {'ratio':>7s} {'GB/s':>6s} {'% bw':>5s}"
    out(header)
    out("-" * len(header))
    rows = []
    for name, nbytes, kind, fn, peers in cases(torch):
        t = timeit(fn, budget)
        gbs = pct = ""
        if nbytes:
            bw = copy if kind == "copy" else rmw
            gbs, pct = f"{nbytes / t / 1e9:.1f}", f"{100 * nbytes / t / bw:.0f}"
        if not peers:
            peers = {"-": None}
        for i, (peer, pfn) in enumerate(peers.items()):
            pt = timeit(pfn, budget) if pfn is not None else None
            row = dict(op=name, fastscale_s=t, peer=peer, peer_s=pt, gbs=gbs, pct=pct)
            rows.append(row)
            ratio = f"{pt / t:.2f}x" if pt else ""
            ptxt = f"{pt * 1e3:.3f} ms" if pt else ""
            first = f"{t * 1e3:.3f} ms" if i == 0 else ""
            out(f"{name if i == 0 else '':38s} {first:>10s} {peer:>12s} {ptxt:>10s} {ratio:>7s} {gbs:>6s} {pct:>5s}")
    return rows
