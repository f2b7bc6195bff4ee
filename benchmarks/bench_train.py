"""End to end: the origin's IMDB classifier trained by fastscale and by PyTorch, same token ids.

    PYTHONPATH=src python benchmarks/bench_train.py [--epochs 10] [--ngrams 1] [--limit N]
    PYTHONPATH=src python -m pytest benchmarks/bench_train.py --benchmark-only -q   # one epoch each

Both sides get the same tokenizer output (Keras rules, num_words 10000, OOV), the same
padded ids (padded to the longest training review, as the origin), the same initial weights
(copied from the fastscale model: Dense layers Keras's glorot-uniform, the embedding N(0, 1)
as `fastscale train` starts it, or Keras's uniform(-0.05, 0.05) with ``--init keras``), the
same validation split (last 20%),
the same per-epoch shuffles and batch size 64:

* fastscale: ``Embedding(mask_zero=True) -> GlobalAveragePooling1D`` (fused embedding_bag)
  ``-> Dense(64, relu) -> Dense(1, sigmoid)``, binary cross-entropy, ``optim.Adam(1e-3)``.
* torch: ``nn.EmbeddingBag(mode="mean", padding_idx=0)`` on the padded ids ``-> Linear ->
  ReLU -> Linear``, ``BCEWithLogitsLoss``, ``torch.optim.Adam(1e-3, eps=1e-7)``,
  ``torch.set_num_threads(2)``.  ``torch-bags`` feeds the same ids as CSR bags (1-D ids +
  offsets, no padding, so no padding_idx): PyTorch's fast path.

* fasttext: fastText's defaults (``train_supervised``, 5 epochs, 2 threads) on the raw texts
  of the same 80%; its seconds per epoch are the difference between a 5-epoch and a 1-epoch
  run over 4, so its reading and dictionary building do not count.

Reported: training seconds per epoch (validation excluded) and test accuracy, side by side.
The data is read from ``shared/data/imdb`` next to (or above) the checkout, or
``fastscale.datasets.find_imdb()``; without it the script says so and exits.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def find_imdb():
    for p in HERE.parents:
        d = p / "shared" / "data" / "imdb"
        if (d / "train.tsv.gz").is_file() and (d / "test.tsv.gz").is_file():
            return d
    try:
        from fastscale import datasets

        return datasets.find_imdb()
    except ImportError:
        return None


def prepare(limit=None, ngrams=1, num_words=10000, buckets=None):
    from fastscale import datasets, text

    d = find_imdb()
    if d is None:
        return None
    (tr_x, tr_y), (te_x, te_y) = datasets.load_imdb(d, download=False)
    if limit:
        rng = np.random.default_rng(0)
        a, b = rng.permutation(len(tr_x))[:limit], rng.permutation(len(te_x))[:limit]
        tr_x, tr_y = [tr_x[i] for i in a], tr_y[a]
        te_x, te_y = [te_x[i] for i in b], te_y[b]
    t0 = time.perf_counter()
    kw = {} if buckets is None else {"buckets": buckets}
    tok = text.Tokenizer(num_words=num_words, oov_token="<OOV>", ngrams=ngrams, **kw)
    tok.fit_on_texts(tr_x)
    x = text.pad_sequences(tok.texts_to_sequences(tr_x))
    x_te = text.pad_sequences(tok.texts_to_sequences(te_x), maxlen=x.shape[1])
    t_tok = time.perf_counter() - t0
    return dict(x=x, y=np.asarray(tr_y), x_te=x_te, y_te=np.asarray(te_y), V=tok.num_ids, t_tok=t_tok, dir=d,
                texts=(tr_x, te_x))


def fastscale_model(V, seed=0, lazy=False, init="keras"):
    from fastscale import nn, optim
    from fastscale._textmodel import INITS

    m = nn.Sequential([nn.Embedding(V, 128, mask_zero=True, embeddings_initializer=INITS[init]),
                       nn.GlobalAveragePooling1D(),
                       nn.Dense(64, activation="relu"), nn.Dense(1, activation="sigmoid")])
    m.compile(optimizer=optim.Adam(learning_rate=1e-3, lazy=lazy), loss="binary_crossentropy", metrics=["accuracy"],
              seed=seed)
    m.build()
    return m


def run_fastscale(data, epochs, seed=0, lazy=False, init="keras"):
    m = fastscale_model(data["V"], seed, lazy, init)
    h = m.fit(data["x"], data["y"], epochs=epochs, batch_size=64, validation_split=0.2, seed=seed, verbose=0)
    _, acc = m.evaluate(data["x_te"], data["y_te"], batch_size=256, verbose=0)
    secs = [s["seconds"] for s in h.epoch_stats]
    return {"s_per_epoch": float(np.mean(secs)), "test_acc": float(acc), "val_acc": h.history["val_accuracy"][-1]}


def run_fasttext(data, epochs=5):
    """fastText's defaults (2 threads) on the raw texts of the same 80% that the others train on.

    Its seconds per epoch: (time of ``epoch=epochs`` - time of ``epoch=1``) / (epochs - 1), so
    reading the file and building its dictionary cancel out; test accuracy of the
    ``epoch=epochs`` model (5 is fastText's default)."""
    import os
    import re
    import tempfile

    import fasttext

    tr_x, te_x = data["texts"]
    n_fit = int(np.floor(len(tr_x) * 0.8))  # validation_split=0.2 takes the last 20%
    clean = lambda t: re.sub(r"\s+", " ", t)  # noqa: E731  one review per line
    with tempfile.TemporaryDirectory() as tmp:
        tr, te = os.path.join(tmp, "train.txt"), os.path.join(tmp, "test.txt")
        with open(tr, "w", encoding="utf-8") as f:
            f.writelines(f"__label__{int(y)} {clean(t)}\n" for t, y in zip(tr_x[:n_fit], data["y"][:n_fit]))
        with open(te, "w", encoding="utf-8") as f:
            f.writelines(f"__label__{int(y)} {clean(t)}\n" for t, y in zip(te_x, data["y_te"]))
        times = {}
        for e in (1, epochs):
            t0 = time.perf_counter()
            m = fasttext.train_supervised(input=tr, thread=2, epoch=e, verbose=0)
            times[e] = time.perf_counter() - t0
        _, p, _ = m.test(te)
    return {"s_per_epoch": (times[epochs] - times[1]) / (epochs - 1), "test_acc": float(p),
            "train_s": times[epochs]}


def _torch_model(weights, copy_init=True):
    import torch

    emb_w, k1, b1, k2, b2 = weights

    class Net(torch.nn.Module):
        def __init__(self, padding_idx):
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(emb_w.shape[0], emb_w.shape[1], mode="mean", padding_idx=padding_idx)
            self.fc1 = torch.nn.Linear(k1.shape[0], k1.shape[1])
            self.fc2 = torch.nn.Linear(k2.shape[0], k2.shape[1])
            if not copy_init:  # PyTorch's own initialisers (embedding N(0, 1), Linear kaiming-uniform)
                return
            with torch.no_grad():  # the fastscale model's initial weights (Keras layout -> torch's transposed one)
                self.emb.weight.copy_(torch.from_numpy(emb_w))
                self.fc1.weight.copy_(torch.from_numpy(k1.T.copy()))
                self.fc1.bias.copy_(torch.from_numpy(b1))
                self.fc2.weight.copy_(torch.from_numpy(k2.T.copy()))
                self.fc2.bias.copy_(torch.from_numpy(b2))

        def forward(self, ids, offsets=None):
            return self.fc2(torch.relu(self.fc1(self.emb(ids, offsets)))).squeeze(1)

    return Net


def _bags(x):
    """Padded ids -> CSR (ids, offsets) without the zeros."""
    keep = x != 0
    offsets = np.zeros(x.shape[0] + 1, np.int64)
    np.cumsum(keep.sum(1), out=offsets[1:])
    return x[keep].astype(np.int64), offsets


def run_torch(data, epochs, seed=0, bags=False, torch_init=False, init="keras"):
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(seed)
    weights = fastscale_model(data["V"], seed, init=init).get_weights()
    net = _torch_model(weights, copy_init=not torch_init)(None if bags else 0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, eps=1e-7)
    lossf = torch.nn.BCEWithLogitsLoss()
    x, y = data["x"], data["y"].astype(np.float32)
    split = int(np.floor(len(x) * 0.8))
    x_tr, y_tr = x[:split], y[:split]

    def batches(xs, idx):
        xb = xs[idx]
        if bags:
            ids, off = _bags(xb)
            return torch.from_numpy(ids), torch.from_numpy(off[:-1])
        return torch.from_numpy(xb.astype(np.int64)), None

    secs = []
    for e in range(epochs):
        order = np.random.default_rng((seed, e, 0x5F)).permutation(split)  # fastscale's shuffles
        net.train()
        t0 = time.perf_counter()
        for s in range(0, split, 64):
            ids, off = batches(x_tr, order[s : s + 64])
            opt.zero_grad(set_to_none=True)
            loss = lossf(net(ids, off), torch.from_numpy(y_tr[order[s : s + 64]]))
            loss.backward()
            opt.step()
        secs.append(time.perf_counter() - t0)
    net.eval()
    correct = 0
    with torch.no_grad():
        for s in range(0, len(data["x_te"]), 256):
            ids, off = batches(data["x_te"], np.arange(s, min(s + 256, len(data["x_te"]))))
            correct += int(((net(ids, off) > 0).numpy() == (data["y_te"][s : s + 256] > 0.5)).sum())
    return {"s_per_epoch": float(np.mean(secs)), "test_acc": correct / len(data["x_te"])}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--limit", type=int, default=None, help="use only this many train / test reviews")
    ap.add_argument("--ngrams", type=int, default=1)
    ap.add_argument("--buckets", type=int, default=None)
    ap.add_argument("--only", choices=("fastscale", "torch", "torch-bags", "fasttext"), action="append")
    ap.add_argument("--lazy", action="store_true", help="fastscale: lazy Adam on the embedding")
    ap.add_argument("--init", choices=("keras", "torch"), default="torch",
                    help="the embedding's initialiser both sides start from: keras = uniform(-0.05, 0.05), torch = "
                         "N(0, 1) (default, as `fastscale train`)")
    ap.add_argument("--torch-init", action="store_true",
                    help="torch runs keep PyTorch's own initialisers instead of the fastscale model's Keras ones")
    args = ap.parse_args(argv)
    data = prepare(args.limit, args.ngrams, buckets=args.buckets)
    if data is None:
        print("IMDB not found (looked for shared/data/imdb above this checkout and fastscale.datasets.find_imdb()); "
              "see fastscale.datasets.load_imdb to get it")
        return 1
    print(f"IMDB from {data['dir']}: train {data['x'].shape} ids, test {data['x_te'].shape}, V={data['V']:,}, "
          f"tokenize {data['t_tok']:.2f}s, {args.epochs} epochs")
    runs = args.only or ["fastscale", "fasttext", "torch", "torch-bags"]
    results = {}
    for name in runs:
        t0 = time.perf_counter()
        if name == "fastscale":
            results[name] = run_fastscale(data, args.epochs, lazy=args.lazy, init=args.init)
        elif name == "fasttext":
            try:
                results[name] = run_fasttext(data)
            except ImportError:
                print("fasttext: not importable (pip install fasttext-numpy2), skipped")
                continue
        else:
            try:
                import torch  # noqa: F401
            except ImportError:
                print(f"{name}: torch not importable, skipped")
                continue
            results[name] = run_torch(data, args.epochs, bags=name == "torch-bags", torch_init=args.torch_init,
                                      init=args.init)
        print(f"  {name}: {results[name]} ({time.perf_counter() - t0:.1f}s)", flush=True)
    ref = results.get("torch", {}).get("s_per_epoch")
    print(f"\n| run | seconds/epoch | test accuracy | speed-up vs torch (padded) |\n|---|---|---|---|")
    for name, r in results.items():
        sp = f"{ref / r['s_per_epoch']:.2f}x" if ref else "-"
        print(f"| {name} | {r['s_per_epoch']:.3f} | {r['test_acc']:.4f} | {sp} |")
    return 0


# ---------------------------------------------------------------------------- pytest-benchmark
try:
    import pytest
except ImportError:  # running as a script without pytest
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="module")
    def imdb_small():
        data = prepare(limit=5000)
        if data is None:
            pytest.skip("IMDB not found under shared/data/imdb")
        return data

    @pytest.mark.parametrize("impl", ["fastscale", "torch", "torch-bags"])
    def test_train_one_epoch(benchmark, imdb_small, impl):
        if impl != "fastscale":
            pytest.importorskip("torch")
            fn = lambda: run_torch(imdb_small, 1, bags=impl == "torch-bags")  # noqa: E731
        else:
            fn = lambda: run_fastscale(imdb_small, 1)  # noqa: E731
        result = benchmark.pedantic(fn, rounds=1, iterations=1)
        benchmark.extra_info.update(result)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parents[1] / "src"))
    sys.exit(main())
