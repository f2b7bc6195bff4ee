"""Tokenizer speed on the 25,000 IMDB training reviews: fit_on_texts + texts_to_sequences.

    PYTHONPATH=src python -m pytest benchmarks/bench_tokenizer.py --benchmark-only -q

Peers: a plain pure-Python loop doing the same work the obvious way (Keras' own per-word code
path: translate, split(" "), count word by word, look up word by word), and fastscale's
Tokenizer with each engine side by side: ``python`` (the pure-Python reference) and ``cpp``
(csrc/cpu/tokenizer.cpp; both threads), plain, with hashed bigrams, and to bags.  Reading the
file is timed on its own (``test_load_tsv``: gunzip + UTF-8 decode + split, what `fastscale
train` does before tokenizing).  After the tokenizing tests, one line per configuration gives
the python / cpp ratio of their medians in this run.
"""
import os
from pathlib import Path

import pytest

from fastscale import text
from fastscale.text import DEFAULT_FILTERS, Tokenizer

ENGINES = ["python", "cpp"]


@pytest.fixture(params=ENGINES)
def engine(request):
    if request.param == "cpp" and text._cpp_module()[0] is None:
        pytest.skip("the C++ tokenizer is unavailable (build fastscale._cpu)")
    return request.param


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


@pytest.fixture(scope="module")
def medians(request):
    """Median seconds per (configuration, engine); at the module's end, python / cpp per
    configuration is written to the terminal (the same run, so the ratio holds on a busy machine)."""
    m = {}
    yield m
    lines = []
    for key in dict.fromkeys(k for k, _ in m):
        if (key, "python") in m and (key, "cpp") in m:
            py, cc = m[key, "python"], m[key, "cpp"]
            lines.append(f"tokenizer {key}: python {py * 1e3:.0f} ms / cpp {cc * 1e3:.0f} ms = {py / cc:.1f}x (medians)")
    # Past pytest's output capture, which would swallow a fixture's teardown output.
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    if capman is not None and tr is not None:
        with capman.global_and_fixture_disabled():
            tr.write_line("")
            for line in lines:
                tr.write_line(line)
    else:
        print("\n".join(lines))


def _record(medians, benchmark, key, engine):
    if benchmark.stats is not None:  # None under --benchmark-disable
        medians[key, engine] = benchmark.stats.stats.median


@pytest.fixture(scope="module")
def expected():
    """Each configuration's output from the first engine that ran it: the engines must agree."""
    return {}


def _check(expected, key, out):
    if key in expected:
        assert out == expected[key]
    else:
        expected[key] = out


@pytest.mark.benchmark(group="tokenize-imdb-train")
def test_fastscale(benchmark, texts, reference_ids, engine, medians):
    kw = {"strip_html": False, "engine": engine}
    out = benchmark.pedantic(_fastscale, args=(texts,), kwargs=kw, rounds=5, iterations=1)
    _record(medians, benchmark, "fit+texts_to_sequences", engine)
    assert out == reference_ids  # same rules as the reference (no HTML stripping): same ids


@pytest.mark.benchmark(group="tokenize-imdb-train")
def test_fastscale_strip_html(benchmark, texts, engine, expected, medians):
    out = benchmark.pedantic(_fastscale, args=(texts,), kwargs={"engine": engine}, rounds=5, iterations=1)
    _record(medians, benchmark, "strip_html", engine)
    assert len(out) == 25000
    _check(expected, "strip_html", out)


@pytest.mark.benchmark(group="tokenize-imdb-train")
def test_fastscale_bigrams(benchmark, texts, engine, expected, medians):
    out = benchmark.pedantic(_fastscale, args=(texts,), kwargs={"ngrams": 2, "engine": engine}, rounds=3, iterations=1)
    _record(medians, benchmark, "bigrams", engine)
    assert len(out) == 25000
    _check(expected, "bigrams", out)


@pytest.mark.benchmark(group="tokenize-imdb-train")
def test_fastscale_bags(benchmark, texts, engine, expected, medians):
    def run():
        tok = Tokenizer(num_words=10000, oov_token="<OOV>", engine=engine)
        tok.fit_on_texts(texts)
        return tok.texts_to_bags(texts)

    ids, offsets = benchmark.pedantic(run, rounds=5, iterations=1)
    _record(medians, benchmark, "bags", engine)
    assert len(offsets) == 25001
    _check(expected, "bags", (ids.tolist(), offsets.tolist()))


@pytest.mark.benchmark(group="read-imdb-train")
def test_load_tsv(benchmark):
    d = imdb_dir()
    if d is None:
        pytest.skip("IMDB data not found (set FASTSCALE_DATA or provide ../shared/data/imdb)")
    from fastscale.datasets import load_tsv

    texts, y = benchmark.pedantic(load_tsv, args=(d / "train.tsv.gz",), rounds=5, iterations=1)
    assert len(texts) == len(y) == 25000
