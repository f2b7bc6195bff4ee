"""Tokenizer speed on the 25,000 IMDB training reviews: fit_on_texts + texts_to_sequences.

    PYTHONPATH=src python -m pytest benchmarks/bench_tokenizer.py --benchmark-only -q

Peers: a plain pure-Python loop doing the same work the obvious way (Keras' own per-word code
path: translate, split(" "), count word by word, look up word by word), and fastscale with
hashed bigrams.  Reading the file is not timed.
"""
import os
from pathlib import Path

import pytest

from fastscale.text import DEFAULT_FILTERS, Tokenizer


def imdb_dir():
    env = os.environ.get("FASTSCALE_DATA")
    cands = [Path(env), Path(env) / "imdb"] if env else []
    cands += [p / "shared" / "data" / "imdb" for p in Path(__file__).resolve().parents]
    for c in cands:
        if (c / "train.tsv.gz").is_file():
            return c
    return None


@pytest.fixture(scope="module")
def texts():
    d = imdb_dir()
    if d is None:
        pytest.skip("IMDB data not found (set FASTSCALE_DATA or provide ../shared/data/imdb)")
    from fastscale.datasets import load_tsv

    return load_tsv(d / "train.tsv.gz")[0]


def reference_tokenize(texts, num_words=10000):
    """Keras' algorithm as a straightforward loop (table built once, OOV at index 1)."""
    table = str.maketrans({c: " " for c in DEFAULT_FILTERS})
    counts, docs = {}, {}
    for t in texts:
        seq = [w for w in t.lower().translate(table).split(" ") if w]
        for w in seq:
            counts[w] = counts.get(w, 0) + 1
        for w in set(seq):
            docs[w] = docs.get(w, 0) + 1
    ranked = sorted(counts.items(), key=lambda x: x[1], reverse=True)
    index = {w: i for i, (w, _) in enumerate(ranked, 2)}
    out = []
    for t in texts:
        vect = []
        for w in t.lower().translate(table).split(" "):
            if w:
                i = index.get(w, 1)
                vect.append(i if i < num_words else 1)
        out.append(vect)
    return out


def _fastscale(texts, **kw):
    tok = Tokenizer(num_words=10000, oov_token="<OOV>", **kw)
    tok.fit_on_texts(texts)
    return tok.texts_to_sequences(texts)


@pytest.fixture(scope="module")
def reference_ids(texts):
    return reference_tokenize(texts)


@pytest.mark.benchmark(group="tokenize-imdb-train")
def test_reference_loop(benchmark, texts, reference_ids):
    out = benchmark.pedantic(reference_tokenize, args=(texts,), rounds=3, iterations=1)
    assert out == reference_ids


@pytest.mark.benchmark(group="tokenize-imdb-train")
def test_fastscale(benchmark, texts, reference_ids):
    out = benchmark.pedantic(_fastscale, args=(texts,), kwargs={"strip_html": False}, rounds=3, iterations=1)
    assert out == reference_ids  # same rules as the reference (no HTML stripping): same ids


@pytest.mark.benchmark(group="tokenize-imdb-train")
def test_fastscale_strip_html(benchmark, texts):
    out = benchmark.pedantic(_fastscale, args=(texts,), rounds=3, iterations=1)
    assert len(out) == 25000


@pytest.mark.benchmark(group="tokenize-imdb-train")
def test_fastscale_bigrams(benchmark, texts):
    out = benchmark.pedantic(_fastscale, args=(texts,), kwargs={"ngrams": 2}, rounds=3, iterations=1)
    assert len(out) == 25000


@pytest.mark.benchmark(group="tokenize-imdb-train")
def test_fastscale_bags(benchmark, texts):
    def run():
        tok = Tokenizer(num_words=10000, oov_token="<OOV>")
        tok.fit_on_texts(texts)
        return tok.texts_to_bags(texts)

    ids, offsets = benchmark.pedantic(run, rounds=3, iterations=1)
    assert len(offsets) == 25001
