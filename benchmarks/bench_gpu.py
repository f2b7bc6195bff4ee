"""GPU benchmarks: every op on the ``cuda`` backend against CuPy (the ``cupy`` backend, fastscale's
own xp code) and PyTorch CUDA when present, plus one IMDB training epoch with the data on the
device.  Run by ``benchmarks/gpu_check.sh`` on a GPU machine; a plain script (no pytest) so the
whole run fits a few minutes:

    python benchmarks/bench_gpu.py [--imdb DIR] [--quick]

For each op it prints the median time per call (CUDA events, after warm-up), the bytes the op
must move at least, the achieved GB/s and that as a fraction of the device's copy bandwidth,
measured first with a CuPy device-to-device copy (read + write).  Ops that can raise on bad
ids run under ``deferred_checks()`` (no per-call synchronisation), as a training loop would.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time

import numpy as np


def _cupy():
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
        return cp
    except Exception as e:  # noqa: BLE001
        print(f"bench_gpu: no usable CuPy / GPU ({e}); nothing to do")
        sys.exit(0)


cp = _cupy()
import fastscale as fs  # noqa: E402
from fastscale.ops import _cuda_util as CU  # noqa: E402
from fastscale.ops._common import PendingRows  # noqa: E402
from fastscale.ops.adam import sparse_adam_step_pending  # noqa: E402

try:
    import torch

    TORCH = torch if torch.cuda.is_available() else None
except Exception:  # noqa: BLE001
    TORCH = None


def timeit(fn, reps=20, warm=3):
    """Median milliseconds per call of fn() on the current stream."""
    for _ in range(warm):
        fn()
    cp.cuda.get_current_stream().synchronize()
    if TORCH is not None:
        TORCH.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = cp.cuda.Event(), cp.cuda.Event()
        s.record()
        fn()
        e.record()
        if TORCH is not None:  # torch runs on its own current stream: wait for it too
            TORCH.cuda.synchronize()
        e.synchronize()
        times.append(cp.cuda.get_elapsed_time(s, e))
    return float(np.median(times))


def copy_bandwidth():
    n = 1 << 28  # 1 GiB of float32 each way
    a = cp.ones(n, cp.float32)
    b = cp.empty_like(a)
    ms = timeit(lambda: cp.copyto(b, a), reps=10)
    return 2 * a.nbytes / (ms * 1e-3) / 1e9


ROWS = []


def report(op, shape, nbytes, ms_fs, peers, bw):
    gbs = nbytes / (ms_fs * 1e-3) / 1e9 if nbytes else float("nan")
    ROWS.append((op, shape, ms_fs, gbs, gbs / bw if nbytes else float("nan"), peers))
    peer_s = "  ".join(f"{k} {v:8.3f} ms ({v / ms_fs:5.2f}x)" for k, v in peers.items() if v is not None)
    frac = f"{gbs:7.0f} GB/s {100 * gbs / bw:5.1f}% of copy" if nbytes else " " * 28
    print(f"{op:28s} {shape:34s} cuda {ms_fs:8.3f} ms  {frac}  {peer_s}", flush=True)


def peer(fn):
    try:
        return timeit(fn)
    except Exception as e:  # noqa: BLE001
        print(f"    (peer failed: {type(e).__name__}: {e})")
        return None


def bench_ops(bw, quick):
    rng = cp.random.default_rng(0)
    f32 = cp.float32
    deferred = CU.deferred_checks

    # ---- embedding_bag, large CSR batch of distinct random rows (bandwidth bound)
    V, D, B, L = (200_000 if quick else 1_000_000), 128, 16_384, 64
    W = rng.standard_normal((V, D), dtype=f32)
    ids = rng.integers(0, V, B * L, dtype=cp.int64).astype(cp.int32)
    off = cp.arange(0, B * L + 1, L, dtype=cp.int64)
    N = ids.size
    row_bytes = N * D * 4 + N * 4 + B * D * 4
    with deferred():
        ms = timeit(lambda: fs.embedding_bag(W, ids, off, mode="sum", backend="cuda"))
    peers = {"cupy": peer(lambda: fs.embedding_bag(W, ids, off, mode="sum", backend="cupy"))}
    if TORCH is not None:
        tW, tids, toff = (TORCH.as_tensor(a, device="cuda") for a in (W, ids.astype(cp.int64), off[:-1]))
        peers["torch"] = peer(lambda: TORCH.nn.functional.embedding_bag(tids, tW, toff, mode="sum"))
    report("embedding_bag fwd CSR sum", f"V={V} D={D} B={B} L={L}", row_bytes, ms, peers, bw)

    dout = rng.standard_normal((B, D), dtype=f32)
    # Sparse backward: gathers N dout rows, writes U unique rows (U <= N).
    with deferred():
        ms = timeit(lambda: fs.embedding_bag_backward(dout, ids, off, num_embeddings=V, mode="sum", sparse=True,
                                                      backend="cuda"))
    peers = {"cupy": peer(lambda: fs.embedding_bag_backward(dout, ids, off, num_embeddings=V, mode="sum", sparse=True,
                                                             backend="cupy"))}
    report("embedding_bag bwd sparse", f"V={V} D={D} B={B} L={L}", N * D * 4 * 2 + N * 16, ms, peers, bw)
    grad = cp.empty((V, D), f32)
    for det in (True, False):
        os.environ[CU.ATOMIC_ENV] = "0" if det else "1"
        with deferred():
            ms = timeit(lambda: fs.embedding_bag_backward(dout, ids, off, num_embeddings=V, mode="sum", out=grad,
                                                          backend="cuda"))
        peers = {}
        if TORCH is not None and det:
            tW.requires_grad_(True)
            tdout = TORCH.as_tensor(dout, device="cuda")

            def tb():
                tW.grad = None
                TORCH.nn.functional.embedding_bag(tids, tW, toff, mode="sum").backward(tdout)

            peers["torch fwd+bwd"] = peer(tb)
        report(f"embedding_bag bwd dense {'det' if det else 'atomic'}", f"V={V} D={D} B={B} L={L}",
               N * D * 4 + V * D * 4, ms, peers, bw)
    os.environ.pop(CU.ATOMIC_ENV, None)
    if TORCH is not None:
        del tW, tids, toff
    del grad

    # ---- embedding_bag, origin shapes: padded IMDB-like batch (latency bound)
    Vs, T = 10_000, 2470
    lengths = np.minimum(np.random.default_rng(0).lognormal(5.1, 0.75, 64).astype(int) + 1, T)
    host = np.zeros((64, T), np.int32)
    for b, n in enumerate(lengths):
        host[b, T - n:] = np.random.default_rng(b).integers(1, Vs, n)
    pids = cp.asarray(host)
    Ws = rng.standard_normal((Vs, D), dtype=f32)
    with deferred():
        ms = timeit(lambda: fs.embedding_bag(Ws, pids, padding_idx=0, backend="cuda"))
    peers = {"cupy": peer(lambda: fs.embedding_bag(Ws, pids, padding_idx=0, backend="cupy"))}
    if TORCH is not None:
        tWs, tp = TORCH.as_tensor(Ws, device="cuda"), TORCH.as_tensor(host.astype(np.int64), device="cuda")
        peers["torch"] = peer(lambda: TORCH.nn.functional.embedding_bag(tp, tWs, mode="mean", padding_idx=0))
    report("embedding_bag fwd padded", f"B=64 T={T} D={D} (origin)", int(lengths.sum()) * D * 4 + host.nbytes, ms,
           peers, bw)

    # ---- embedding
    Ne = 1 << 20
    eids = rng.integers(0, V, Ne, dtype=cp.int64)
    with deferred():
        ms = timeit(lambda: fs.embedding(W, eids, backend="cuda"))
    peers = {"cupy": peer(lambda: fs.embedding(W, eids, backend="cupy"))}
    report("embedding fwd", f"V={V} D={D} N={Ne}", Ne * D * 8 + Ne * 8, ms, peers, bw)
    edout = rng.standard_normal((Ne, D), dtype=f32)
    with deferred():
        ms = timeit(lambda: fs.embedding_backward(edout, eids, V, sparse=True, backend="cuda"))
    peers = {"cupy": peer(lambda: fs.embedding_backward(edout, eids, V, sparse=True, backend="cupy"))}
    report("embedding bwd sparse", f"V={V} D={D} N={Ne}", Ne * D * 8, ms, peers, bw)
    del edout, eids

    # ---- masked_mean_pool
    x = rng.standard_normal((256, 512, D), dtype=f32)
    mask = rng.random((256, 512)) < 0.5
    ms = timeit(lambda: fs.masked_mean_pool(x, mask, backend="cuda"))
    peers = {"cupy": peer(lambda: fs.masked_mean_pool(x, mask, backend="cupy"))}
    report("masked_mean_pool fwd", "B=256 T=512 D=128 (half kept)", x.nbytes // 2 + mask.nbytes, ms, peers, bw)
    dmp = rng.standard_normal((256, D), dtype=f32)
    ms = timeit(lambda: fs.masked_mean_pool_backward(dmp, mask, backend="cuda"))
    peers = {"cupy": peer(lambda: fs.masked_mean_pool_backward(dmp, mask, backend="cupy"))}
    report("masked_mean_pool bwd", "B=256 T=512 D=128", x.nbytes + mask.nbytes, ms, peers, bw)
    del x

    # ---- dense (origin shapes: launch bound; a large one for throughput)
    for (Bd, I, O) in ((64, 128, 64), (8192, 1024, 1024)):
        xd = rng.standard_normal((Bd, I), dtype=f32)
        wd = rng.standard_normal((I, O), dtype=f32) * 0.05
        bd = rng.standard_normal(O, dtype=f32)
        ms = timeit(lambda: fs.dense_forward(xd, wd, bd, "relu", backend="cuda"))
        peers = {"cupy": peer(lambda: fs.dense_forward(xd, wd, bd, "relu", backend="cupy"))}
        if TORCH is not None:
            tx, tw, tb_ = (TORCH.as_tensor(a, device="cuda") for a in (xd, wd, bd))
            peers["torch"] = peer(lambda: TORCH.relu(TORCH.addmm(tb_, tx, tw)))
        flops = 2 * Bd * I * O
        report("dense fwd relu", f"{Bd}x{I} @ {I}x{O}", 0, ms, peers, bw)
        print(f"    {flops / (ms * 1e-3) / 1e12:.2f} TFLOP/s")
        yd = fs.dense_forward(xd, wd, bd, "relu", backend="cuda")
        gd = rng.standard_normal((Bd, O), dtype=f32)
        ms = timeit(lambda: fs.dense_backward(gd, xd, wd, yd, "relu", backend="cuda"))
        peers = {"cupy": peer(lambda: fs.dense_backward(gd, xd, wd, yd, "relu", backend="cupy"))}
        report("dense bwd relu", f"{Bd}x{I} @ {I}x{O}", 0, ms, peers, bw)
        print(f"    {2 * flops / (ms * 1e-3) / 1e12:.2f} TFLOP/s")

    # ---- bce_with_logits
    Nb = 1 << 24
    z = rng.standard_normal(Nb, dtype=f32)
    y = (rng.random(Nb) < 0.5).astype(f32)
    ms = timeit(lambda: fs.bce_with_logits(z, y, backend="cuda"))
    peers = {"cupy": peer(lambda: fs.bce_with_logits(z, y, backend="cupy"))}
    if TORCH is not None:
        tz, ty = TORCH.as_tensor(z, device="cuda"), TORCH.as_tensor(y, device="cuda")
        peers["torch (loss only)"] = peer(lambda: TORCH.nn.functional.binary_cross_entropy_with_logits(tz, ty).item())
    report("bce_with_logits", f"N={Nb}", Nb * 12, ms, peers, bw)
    del z, y

    # ---- adam (dense, 32M params: 28 bytes per float32 parameter) and sparse
    n = 1 << 25
    p, g, m, v = (rng.standard_normal(n, dtype=f32) for _ in range(4))
    v = cp.abs(v)
    ms = timeit(lambda: fs.adam_step(p, g, m, v, step=10, backend="cuda"))
    peers = {"cupy": peer(lambda: fs.adam_step(p, g, m, v, step=10, backend="cupy"))}
    if TORCH is not None:
        tp_ = TORCH.nn.Parameter(TORCH.as_tensor(p, device="cuda").clone())
        tp_.grad = TORCH.as_tensor(g, device="cuda").clone()
        opt = TORCH.optim.Adam([tp_], lr=1e-3, fused=True)
        peers["torch fused"] = peer(opt.step)
        del opt, tp_
    report("adam_step", f"n={n}", n * 28, ms, peers, bw)
    del p, g, m, v
    R = 100_000
    P, M, Vv = (rng.standard_normal((V, D), dtype=f32) for _ in range(3))
    Vv = cp.abs(Vv)
    rows = cp.sort(cp.unique(rng.integers(0, V, R, dtype=cp.int64)))
    vals = rng.standard_normal((rows.size, D), dtype=f32)
    with deferred():
        ms = timeit(lambda: fs.sparse_adam_step(P, rows, vals, M, Vv, step=10, backend="cuda"))
    peers = {"cupy": peer(lambda: fs.sparse_adam_step(P, rows, vals, M, Vv, step=10, backend="cupy"))}
    report("sparse_adam_step", f"V={V} D={D} R={rows.size}", rows.size * D * 28, ms, peers, bw)


# ---------------------------------------------------------------------------- IMDB epoch
def imdb_data(data_dir):
    """The tokenized, padded IMDB training reviews (host arrays), shuffled once with seed 0."""
    from fastscale import datasets, text

    texts, labels = datasets.load_tsv(os.path.join(data_dir, "train.tsv.gz"))
    tok = text.Tokenizer(num_words=10000, oov_token="<OOV>")
    tok.fit_on_texts(texts)
    x = text.pad_sequences(tok.texts_to_sequences(texts), maxlen=None)
    order = np.random.default_rng(0).permutation(len(texts))
    return x[order], labels[order].astype(np.float32)


def imdb_epoch(data, backend):
    """One epoch of the origin model (Embedding(10000,128, mask_zero) -> mean -> Dense(64, relu)
    -> Dense(1) -> BCE, Adam 1e-3, batch 64, the first 80% of the training set) with the padded
    ids, labels and parameters resident on the device, built from the public ops.  Returns
    (seconds for the epoch, validation accuracy after it)."""
    x, yl = data
    ntr = int(0.8 * len(x))
    xd, yd = cp.asarray(x), cp.asarray(yl)
    rng = np.random.default_rng(1)
    W = cp.asarray(rng.uniform(-0.05, 0.05, (10000, 128)).astype(np.float32))
    W1 = cp.asarray((rng.standard_normal((128, 64)) * np.sqrt(2 / 128)).astype(np.float32))
    b1 = cp.zeros(64, cp.float32)
    W2 = cp.asarray((rng.standard_normal((64, 1)) * np.sqrt(1 / 64)).astype(np.float32))
    b2 = cp.zeros(1, cp.float32)
    params = [W, W1, b1, W2, b2]
    ms_, vs_ = [cp.zeros_like(a) for a in params], [cp.zeros_like(a) for a in params]
    cp.cuda.get_current_stream().synchronize()
    t0 = time.perf_counter()
    step = 0
    with CU.deferred_checks():
        for s in range(0, ntr, 64):
            ids, yb = xd[s:min(s + 64, ntr)], yd[s:min(s + 64, ntr)]
            h = fs.embedding_bag(W, ids, padding_idx=0, backend=backend)
            a1 = fs.dense_forward(h, W1, b1, "relu", backend=backend)
            logit = fs.dense_forward(a1, W2, b2, None, backend=backend)
            _loss, dlogit = fs.bce_with_logits(logit[:, 0], yb, backend=backend)
            da1, dW2, db2 = fs.dense_backward(dlogit[:, None], a1, W2, None, None, backend=backend)
            dh, dW1, db1 = fs.dense_backward(da1, h, W1, a1, "relu", backend=backend)
            gW = fs.embedding_bag_backward(dh, ids, num_embeddings=10000, padding_idx=0, sparse=True, backend=backend)
            step += 1
            if isinstance(gW, PendingRows):  # cuda: the row count stays on the device (no read-back)
                sparse_adam_step_pending(W, gW, ms_[0], vs_[0], step=step, backend=backend)
            else:
                fs.sparse_adam_step(W, gW.rows, gW.values, ms_[0], vs_[0], step=step, backend=backend)
            for i, gr in ((1, dW1), (2, db1), (3, dW2), (4, db2)):
                fs.adam_step(params[i], gr, ms_[i], vs_[i], step=step, backend=backend)
    cp.cuda.get_current_stream().synchronize()
    seconds = time.perf_counter() - t0
    correct = 0
    for s in range(ntr, len(x), 1024):
        h = fs.embedding_bag(W, xd[s:s + 1024], padding_idx=0, backend=backend)
        lg = fs.dense_forward(fs.dense_forward(h, W1, b1, "relu", backend=backend), W2, b2, None, backend=backend)
        correct += int(((lg[:, 0] > 0) == (yd[s:s + 1024] > 0.5)).sum())
    return seconds, correct / (len(x) - ntr), x.shape


def sequential_epoch(data, backend):
    """The same epoch through ``nn.Sequential.fit`` on the device: the origin code with
    ``compile(backend=...)`` (which implies ``device="gpu"``) on CuPy arrays; fit turns the
    masked padded ids into CSR bags on the device once, shuffles with one gather per epoch and
    reads the loss back once per epoch.  Returns (seconds of fit's epoch as it measures it
    (the device work included: the epoch ends with the loss read-back), validation accuracy
    after it, wall seconds of the whole fit call, the bags' conversion included)."""
    from fastscale import nn, optim

    x, yl = data
    ntr = int(0.8 * len(x))
    model = nn.Sequential([nn.Embedding(10000, 128, mask_zero=True), nn.GlobalAveragePooling1D(),
                           nn.Dense(64, activation="relu"), nn.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optim.Adam(learning_rate=1e-3), loss="binary_crossentropy", metrics=["accuracy"],
                  seed=1, backend=backend)
    xd, yd = cp.asarray(x), cp.asarray(yl)
    # A warm-up on a few batches: CuPy compiles its elementwise kernels on first use.
    model.fit(xd[:256], yd[:256], epochs=1, batch_size=64, verbose=0, shuffle=False)
    model = nn.Sequential([nn.Embedding(10000, 128, mask_zero=True), nn.GlobalAveragePooling1D(),
                           nn.Dense(64, activation="relu"), nn.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optim.Adam(learning_rate=1e-3), loss="binary_crossentropy", metrics=["accuracy"],
                  seed=1, backend=backend)
    cp.cuda.get_current_stream().synchronize()
    t0 = time.perf_counter()
    hist = model.fit(xd[:ntr], yd[:ntr], epochs=1, batch_size=64, verbose=0)
    wall = time.perf_counter() - t0
    assert all(isinstance(w, cp.ndarray) for w in model.get_weights()), "the weights left the device"
    _loss, acc = model.evaluate(xd[ntr:], yd[ntr:], batch_size=1024, verbose=0)
    return hist.epoch_stats[0]["seconds"], acc, wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imdb", default="shared/data/imdb", help="folder with train.tsv.gz (inside the checkout)")
    ap.add_argument("--quick", action="store_true", help="smaller tables")
    ap.add_argument("--skip-ops", action="store_true")
    args = ap.parse_args()
    dev = cp.cuda.Device()
    props = cp.cuda.runtime.getDeviceProperties(dev.id)
    print(f"device: {props['name'].decode()} (sm_{props['major']}{props['minor']}), "
          f"{props['totalGlobalMem'] / 2**30:.0f} GiB; fastscale backends: {fs.backends()}")
    print(f"torch CUDA: {'yes ' + TORCH.__version__ if TORCH is not None else 'no'}")
    bw = copy_bandwidth()
    print(f"copy bandwidth (CuPy device copy, read + write): {bw:.0f} GB/s\n")
    if not args.skip_ops:
        bench_ops(bw, args.quick)
    print()
    if not os.path.isfile(os.path.join(args.imdb, "train.tsv.gz")):
        print(f"IMDB epoch: skipped (no {args.imdb}/train.tsv.gz; copy shared/data/imdb into the checkout)")
        return
    data = imdb_data(args.imdb)
    for backend in ("cuda", "cupy"):
        try:
            secs, acc, shape = imdb_epoch(data, backend)
            print(f"IMDB epoch ({backend}), hand-written: {secs:.3f} s for {int(0.8 * shape[0])} reviews padded to "
                  f"{shape[1]}, val accuracy after 1 epoch {acc:.3f}")
        except Exception as e:  # noqa: BLE001
            print(f"IMDB epoch ({backend}), hand-written: failed: {type(e).__name__}: {e}")
            secs = None
        try:
            s_secs, s_acc, wall = sequential_epoch(data, backend)
            ratio = f" ({s_secs / secs:.2f}x the hand-written epoch)" if secs else ""
            print(f"IMDB epoch ({backend}), nn.Sequential.fit: {s_secs:.3f} s{ratio}, whole fit call {wall:.3f} s, "
                  f"val accuracy after 1 epoch {s_acc:.3f}")
        except Exception as e:  # noqa: BLE001
            print(f"IMDB epoch ({backend}), nn.Sequential.fit: failed: {type(e).__name__}: {e}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
