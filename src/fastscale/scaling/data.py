"""Sweep data: read and tokenize once per sweep, cache as flat id arrays, share with workers.

The pool of training examples is shuffled once (``data_seed``); every ``n_train`` is a prefix
of it, so the training sets are nested.  A fixed validation split (``n_val`` examples after
the pool) and the test split are the same for every run.  Texts are tokenized once with the
full word index; a run with ``vocab_size = V`` maps ids >= V to the OOV id 1, which is
exactly what a Keras/fastscale ``Tokenizer(num_words=V, oov_token=...)`` fitted on the same
texts would produce.  Arrays are stored CSR (ids + offsets) so that the pool is ~6M int32
ids, not a 25,000 x 2,500 padded block, and padded per run.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
from dataclasses import dataclass

import numpy as np

from .spec import SweepSpec, default_data_dir

SPLITS = ("pool", "val", "test")
# Part of the data fingerprint: change it when the tokenization of a sweep changes.
TOKENIZER_ID = "fastscale.text.Tokenizer(oov_token='<OOV>') v1"
OOV_ID = 1  # ids: 0 padding, 1 OOV, 2.. words by frequency (Keras Tokenizer with oov_token)


@dataclass
class SweepData:
    """CSR splits (ids, offsets, labels) plus metadata; cheap to pickle when mmapped."""

    arrays: dict[str, np.ndarray]
    meta: dict

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    def split(self, name: str, n: int | None = None):
        ids, off, y = self.arrays[f"{name}_ids"], self.arrays[f"{name}_offsets"], self.arrays[f"{name}_y"]
        if n is not None:
            if n > len(y):
                raise ValueError(f"n_train={n} exceeds the pool of {len(y)} training examples")
            off = off[: n + 1]
            ids = ids[: off[-1]]
            y = y[:n]
        return ids, off, y

    def csr(self, name: str, n: int | None, vocab_size: int, maxlen: int | None):
        """((ids int32, offsets int64), y float32, token count): CSR bags, ids >= vocab_size
        mapped to OOV, each row cut to maxlen; no padding at all."""
        ids, off, y = self.split(name, n)
        lens = np.diff(off)
        if maxlen is not None and lens.size and lens.max() > maxlen:
            keep = np.minimum(lens, maxlen)
            start = np.repeat(off[:-1], keep)
            col = np.arange(int(keep.sum())) - np.repeat(np.cumsum(keep) - keep, keep)
            vals = np.asarray(ids[start + col], dtype=np.int32)
            new_off = np.zeros(len(keep) + 1, np.int64)
            np.cumsum(keep, out=new_off[1:])
            off = new_off
        else:
            vals = np.array(ids, dtype=np.int32)
            off = np.asarray(off, np.int64) - int(off[0])
        vals[vals >= vocab_size] = OOV_ID
        return (vals, np.ascontiguousarray(off)), np.asarray(y, np.float32), int(off[-1])

    def padded(self, name: str, n: int | None, vocab_size: int, maxlen: int | None):
        """(x (n, T) int32 padded with 0 at the end, y float32, non-padding token count)."""
        ids, off, y = self.split(name, n)
        lens = np.diff(off)
        if maxlen is not None:
            lens = np.minimum(lens, maxlen)
        T = int(max(1, lens.max(initial=1)))
        x = np.zeros((len(y), T), dtype=np.int32)
        # Scatter the CSR rows into the padded block in one vectorised pass (truncating
        # each row to maxlen, as pad_sequences(truncating="post") would).
        row = np.repeat(np.arange(len(y)), lens)
        start = np.repeat(off[:-1], lens)
        col = np.arange(int(lens.sum())) - np.repeat(np.cumsum(lens) - lens, lens)
        vals = np.asarray(ids[start + col], dtype=np.int32)
        vals[vals >= vocab_size] = OOV_ID
        x[row, col] = vals
        return x, np.asarray(y, np.float32), int(lens.sum())

    def save(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        for k, a in self.arrays.items():
            np.save(os.path.join(folder, k + ".npy"), a)
        tmp = os.path.join(folder, "meta.json.tmp")
        with open(tmp, "w") as f:
            json.dump(self.meta, f, indent=1)
        os.replace(tmp, os.path.join(folder, "meta.json"))

    @classmethod
    def load(cls, folder: str, mmap: bool = True) -> "SweepData":
        with open(os.path.join(folder, "meta.json")) as f:
            meta = json.load(f)
        arrays = {}
        for s in SPLITS:
            for part in ("ids", "offsets", "y"):
                k = f"{s}_{part}"
                arrays[k] = np.load(os.path.join(folder, k + ".npy"), mmap_mode="r" if mmap else None)
        return cls(arrays, meta)


# ----------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------
def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_tsv(path: str) -> tuple[list[str], np.ndarray]:
    """``label<TAB>text`` lines (gzip when the name ends in .gz) -> texts, labels."""
    opener = gzip.open if path.endswith(".gz") else open
    texts, labels = [], []
    with opener(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            line = line.rstrip("\n")
            if not line:
                continue
            lab, sep, text = line.partition("\t")
            if not sep:
                raise ValueError(f"{path}:{i + 1}: expected 'label<TAB>text'")
            labels.append(float(lab))
            texts.append(text)
    return texts, np.asarray(labels, np.float32)


def _tokenize(train_texts, other: dict[str, list[str]]):
    """Fit a fastscale Tokenizer (Keras rules, OOV token) on the training pool and encode
    every split straight to CSR bags."""
    from fastscale import text

    tok = text.Tokenizer(oov_token="<OOV>")
    tok.fit_on_texts(train_texts)
    out = {"pool": tok.texts_to_bags(train_texts)}
    for k, v in other.items():
        out[k] = tok.texts_to_bags(v)
    return out, len(tok.word_index) + 1


def _text_source(spec: SweepSpec, train_path: str, test_path: str | None, fp_parts: list[str]) -> SweepData:
    d = spec.data
    texts, y = read_tsv(train_path)
    rng = np.random.default_rng(d["data_seed"])
    order = rng.permutation(len(texts))
    n_val = int(d["n_val"])
    if test_path is None:  # one file: carve the test split off the end too
        n_test = int(d["n_test"] or max(1, len(texts) // 5))
        test_idx, order = order[-n_test:], order[:-n_test]
        test_texts, test_y = [texts[i] for i in test_idx], y[test_idx]
    else:
        test_texts, test_y = read_tsv(test_path)
        if d["n_test"] is not None and d["n_test"] < len(test_texts):
            sel = np.random.default_rng(d["data_seed"] + 1).permutation(len(test_texts))[: d["n_test"]]
            test_texts, test_y = [test_texts[i] for i in sel], test_y[sel]
    if n_val >= len(order):
        raise ValueError(f"data.n_val={n_val} leaves no training pool out of {len(order)} examples")
    val_idx, pool_idx = order[len(order) - n_val:], order[: len(order) - n_val]
    seqs, n_words = _tokenize([texts[i] for i in pool_idx], {"val": [texts[i] for i in val_idx], "test": test_texts})
    arrays = {}
    for name, labels in (("pool", y[pool_idx]), ("val", y[val_idx]), ("test", np.asarray(test_y))):
        ids, off = seqs[name]
        ids, off = np.asarray(ids, np.int32), np.asarray(off, np.int64)
        arrays.update({f"{name}_ids": ids, f"{name}_offsets": off, f"{name}_y": np.asarray(labels, np.float32)})
    meta = {"source": d["source"], "n_pool": len(pool_idx), "n_val": n_val, "n_test": len(test_y),
            "n_words": n_words, "tokenizer": "fastscale.text.Tokenizer(oov_token='<OOV>', strip_html=True) fitted on the pool"}
    return SweepData(arrays, _finish_meta(meta, spec, fp_parts))


def _finish_meta(meta, spec, parts):
    d = spec.data
    settings = {k: d[k] for k in ("n_val", "n_test", "data_seed")}
    if d["source"] == "synthetic":
        settings.update({k: d[k] for k in d if k.startswith("synthetic_")})
    blob = json.dumps({"parts": parts, "settings": settings, "format": 1}, sort_keys=True)
    meta["fingerprint"] = hashlib.sha256(blob.encode()).hexdigest()[:16]
    meta["settings"] = settings
    return meta


def synthetic_teacher(spec: SweepSpec) -> SweepData:
    """Documents from a known teacher with known label noise.

    Tokens follow a Zipf-like law; a third of the vocabulary carries a sentiment weight.  The
    label of a document is Bernoulli(sigmoid(scale * standardized mean weight)), so the
    Bayes-optimal test loss (the entropy of the teacher's labels) is known and recorded
    as ``bayes_test_loss``: the floor E a scaling law on this data should find.
    """
    d = spec.data
    V, n_docs, mean_len, scale = (int(d["synthetic_vocab"]), int(d["synthetic_docs"]), float(d["synthetic_length"]),
                                  float(d["synthetic_scale"]))
    rng = np.random.default_rng(d["data_seed"])
    n_val = int(d["n_val"])
    n_test = int(d["n_test"] or 5000)
    total = n_docs + n_val + n_test
    p = 1.0 / (np.arange(2, V) + 10.0)
    p /= p.sum()
    w = rng.normal(size=V) * (rng.random(V) < 1 / 3)
    lens = np.maximum(3, rng.poisson(mean_len, size=total))
    ids = (rng.choice(V - 2, size=int(lens.sum()), p=p) + 2).astype(np.int32)
    off = np.zeros(total + 1, np.int64)
    np.cumsum(lens, out=off[1:])
    mean_w = np.add.reduceat(w[ids], off[:-1]) / lens
    logit = scale * (mean_w - mean_w.mean()) / mean_w.std()
    prob = 1 / (1 + np.exp(-logit))
    y = (rng.random(total) < prob).astype(np.float32)
    ent = -(prob * np.log(prob) + (1 - prob) * np.log1p(-prob))
    arrays, start = {}, 0
    for name, n in (("pool", n_docs), ("val", n_val), ("test", n_test)):
        o = off[start: start + n + 1]
        arrays[f"{name}_ids"] = ids[o[0]: o[-1]].copy()
        arrays[f"{name}_offsets"] = (o - o[0]).astype(np.int64)
        arrays[f"{name}_y"] = y[start: start + n]
        if name == "test":
            bayes = float(ent[start: start + n].mean())
        start += n
    meta = {"source": "synthetic", "n_pool": n_docs, "n_val": n_val, "n_test": n_test, "n_words": V,
            "bayes_test_loss": bayes, "tokenizer": "none (synthetic ids)"}
    return SweepData(arrays, _finish_meta(meta, spec, ["synthetic"]))


def prepare(spec: SweepSpec, cache_dir: str | None = None) -> SweepData:
    """Load and tokenize the sweep's data once; reuse ``cache_dir`` when it holds the same data."""
    src = spec.data["source"]
    if src == "synthetic":
        parts, make = ["synthetic"], lambda: synthetic_teacher(spec)
    else:
        if src == "imdb":
            folder = spec.data.get("path") or default_data_dir()
            if not folder or not os.path.exists(os.path.join(folder, "train.tsv.gz")):
                raise FileNotFoundError("IMDB data not found: set data.path (a folder with train.tsv.gz and "
                                        "test.tsv.gz) or FASTSCALE_IMDB_DIR")
            train, test = os.path.join(folder, "train.tsv.gz"), os.path.join(folder, "test.tsv.gz")
        else:
            train = src[4:]
            test = spec.data.get("test_path")
            if not os.path.exists(train):
                raise FileNotFoundError(f"data.source {src!r}: no such file")
        # The content, not the path, identifies the data.
        parts = [_sha256_file(train)] + ([_sha256_file(test)] if test else []) + [TOKENIZER_ID]
        make = lambda: _text_source(spec, train, test, parts)  # noqa: E731
    if cache_dir is not None and os.path.exists(os.path.join(cache_dir, "meta.json")):
        cached = SweepData.load(cache_dir)
        expect = _finish_meta({}, spec, parts)["fingerprint"]
        if cached.fingerprint == expect:
            return cached
    data = make()
    if cache_dir is not None:
        data.save(cache_dir)
        data = SweepData.load(cache_dir)
    return data


_LOADED: dict[str, SweepData] = {}


def load_cached(folder: str) -> SweepData:
    """A worker's view of the data: mmapped once per process."""
    if folder not in _LOADED:
        _LOADED[folder] = SweepData.load(folder)
    return _LOADED[folder]


def bce_per_example(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of probabilities, clipped like Keras (eps 1e-7)."""
    p = np.clip(np.asarray(p, np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    y = np.asarray(y, np.float64).reshape(-1)
    return -(y * np.log(p) + (1 - y) * np.log1p(-p))


def mean_and_se(v: np.ndarray) -> tuple[float, float]:
    v = np.asarray(v, np.float64)
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else float("nan")
