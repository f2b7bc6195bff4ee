"""The C++ tokenizer (csrc/cpu/tokenizer.cpp) against the Python Tokenizer, its reference:
every attribute and every output must be identical, on random Unicode text and on IMDB."""
import json
import os
import sys
from collections import OrderedDict
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastscale
from fastscale import _backends, text
from fastscale.text import DEFAULT_FILTERS, Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_text import imdb_dir  # noqa: E402

if text._cpp_module()[0] is None:
    pytest.skip(f"the C++ tokenizer is unavailable: {_backends.status('cpp') or 'no tokenizer in _cpu'}", allow_module_level=True)


@pytest.fixture(autouse=True)
def _restore():
    """Tests lower the parallel threshold and change threads / Unicode mode: restore them."""
    saved = (text._CPP, text._CPP_PARALLEL_MIN_CHARS, text._FIT_BATCH, fastscale.get_num_threads())
    yield
    text._CPP, text._CPP_PARALLEL_MIN_CHARS, text._FIT_BATCH = saved[:3]
    fastscale.set_num_threads(saved[3])


# Characters chosen for what they do to the rules: every default filter, <br> pieces,
# whitespace that str.split() would split on but split(" ") does not, letters whose lower
# case is longer ("İ"), contextual ("Σ" final sigma, with case-ignorable neighbours "'", ".",
# U+00AD, U+02B0 and combining marks), non-letters with case (Kelvin sign -> ASCII "k"),
# titlecase digraphs, 4-byte code points with case (Deseret), and CJK.
PIECES = (
    list("abcxyzABCXYZ019 ")
    + list(DEFAULT_FILTERS)
    + ["<br />", "<br/>", "<BR>", "<Br  />", "<br", "<b", "br>", "<", ">", "/>", "br"]
    + ["\t", "\n", "\r", "\x0b", "\x0c", "\x85", "\xa0", "\u2028", "\u3000", "  "]
    + ["İ", "I", "ı", "i̇", "Σ", "σ", "ς", "ΑΣ", "ΟΔΟΣ", "'", "\u00ad", "\u02b0", "\u0301", "\u0307"]
    + ["\u212a", "\u212b", "\u2126", "ǅ", "Ǆ", "ǆ", "ß", "ẞ", "ﬁ", "ᾈ", "É", "é", "Ünï", "Ж", "ж"]
    + ["\U00010400", "\U00010428", "😀", "中文", "\u00ff", "\u0178", "\u0100"]
)
TEXT = st.one_of(
    st.lists(st.sampled_from(PIECES), max_size=30).map("".join),
    st.text(max_size=40),  # any code point but surrogates
)
TEXTS = st.lists(TEXT, max_size=10)
FILTERS = st.sampled_from([DEFAULT_FILTERS, "", "!.", "aé\u3000Σ<", DEFAULT_FILTERS + "\xa0\u3000İ", " "])
SPLITS = st.sampled_from([" ", " ", "\t", "é", "a", "\u3000"])


def both(**kw):
    return Tokenizer(engine="python", **kw), Tokenizer(engine="cpp", **kw)


def assert_same_vocabulary(py, cc):
    assert list(cc.word_counts.items()) == list(py.word_counts.items())
    assert list(cc.word_docs.items()) == list(py.word_docs.items())
    assert cc.document_count == py.document_count
    assert list(cc.word_index.items()) == list(py.word_index.items())
    assert list(cc.index_word.items()) == list(py.index_word.items())
    assert list(cc.index_docs.items()) == list(py.index_docs.items())
    assert type(cc.word_counts) is type(py.word_counts) and type(cc.word_docs) is type(py.word_docs)


def assert_same_outputs(py, cc, texts):
    seqs = py.texts_to_sequences(texts)
    assert cc.texts_to_sequences(texts) == seqs
    assert all(type(i) is int for s in cc.texts_to_sequences(texts) for i in s)
    a, b = py.texts_to_bags(texts), cc.texts_to_bags(texts)
    assert a[0].dtype == b[0].dtype == np.int32 and a[1].dtype == b[1].dtype == np.int64
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    return seqs


@given(
    texts=TEXTS,
    queries=TEXTS,
    num_words=st.sampled_from([None, 0, 1, 5]),
    oov=st.sampled_from([None, "<OOV>", "a"]),
    lower=st.booleans(),
    strip=st.booleans(),
    filters=FILTERS,
    split=SPLITS,
    ngrams=st.sampled_from([1, 2, 3]),
    buckets=st.sampled_from([1, 7, 2**20]),
    threads=st.sampled_from([1, 2, 3]),
)
def test_same_as_python(texts, queries, num_words, oov, lower, strip, filters, split, ngrams, buckets, threads):
    text._CPP_PARALLEL_MIN_CHARS = 0  # every input split between the threads, then merged
    fastscale.set_num_threads(threads)
    kw = dict(num_words=num_words, oov_token=oov, lower=lower, strip_html=strip, filters=filters, split=split,
              ngrams=ngrams, buckets=buckets)  # fmt: skip
    py, cc = both(**kw)
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    assert_same_vocabulary(py, cc)
    assert cc._fit_cache is not None
    assert_same_outputs(py, cc, texts)  # the fitted texts: from the fit's cached ids
    assert_same_outputs(py, cc, queries)  # new texts: tokenized again
    py.fit_on_texts(queries)  # a second fit accumulates
    cc.fit_on_texts(queries)
    assert_same_vocabulary(py, cc)
    assert_same_outputs(py, cc, texts + queries)
    assert cc.texts_to_sequences(iter(queries)) == py.texts_to_sequences(iter(queries))
    assert cc.sequences_to_texts(cc.texts_to_sequences(queries)) == py.sequences_to_texts(py.texts_to_sequences(queries))


@given(texts=st.lists(TEXT, max_size=12), lower=st.booleans(), batch=st.sampled_from([1, 2, 5]))
def test_fit_on_an_iterator_in_batches(texts, lower, batch):
    text._FIT_BATCH = batch
    py, cc = both(lower=lower, oov_token="<OOV>")
    py.fit_on_texts(iter(texts))
    cc.fit_on_texts(iter(texts))
    assert_same_vocabulary(py, cc)
    assert cc._fit_cache is None
    assert_same_outputs(py, cc, texts)


@given(texts=TEXTS, lower=st.booleans(), strip=st.booleans())
def test_python_lowercasing_when_unicode_versions_differ(texts, lower, strip):
    # A _cpu built by a Python with another Unicode version: non-ASCII texts are lower-cased by
    # str.lower() before the C++ code, which then strips <br> after lowering (the same result).
    text._CPP = (text._CPP[0], False)
    py, cc = both(lower=lower, strip_html=strip, ngrams=2, buckets=1000)
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    assert_same_vocabulary(py, cc)
    assert_same_outputs(py, cc, texts)


def test_every_code_point_lowercases_as_python():
    # Each code point once, between spaces, no filters: the vocabulary is str.lower of each.
    cps = [chr(c) for c in range(0x110000) if chr(c) != " "]
    texts = [" ".join(cps[i : i + 5000]) for i in range(0, len(cps), 5000)]
    for lower in (True, False):
        py, cc = both(filters="", lower=lower, strip_html=False)
        py.fit_on_texts(texts)
        cc.fit_on_texts(texts)
        assert list(cc.word_index.items()) == list(py.word_index.items())
    assert text._cpp_module()[0].tokenizer_unidata_version() == unicodedata.unidata_version


@pytest.mark.parametrize(
    "s",
    ["ΑΣ", "ΑΣ Β", "ΑΣΒ", "Σ", "ΑΣ'", "Α'Σ", "Α.Σ.Β", "1Σ", "ΑΣ\u00ad", "ΑΣ\u0301Β", "ΑΣ<br />Β", "Α<br />Σ",
     "ΑΣ<br/>", "ΑΣ\U00010400", "\u02b0Σ", "ΑΣ\u02b0", "İΣ", "\u212aΣ x"],
)  # fmt: skip
def test_final_sigma(s):
    for strip in (True, False):
        py, cc = both(filters="", strip_html=strip)
        py.fit_on_texts([s, s.upper() + " " + s])
        cc.fit_on_texts([s, s.upper() + " " + s])
        assert list(cc.word_index.items()) == list(py.word_index.items())


BR_CASES = ["<br>", "<br >", "<br/ >", "<br //>", "<br?", "<br?>", "<brr>", "<b r>", "< br>", "<br", "<BR/", "<bR  /  >",
            "x<br/>y<br>z", "<br />end", "start<br />", "<<br>>", "<br/><br/>", "<br\t/>", "<br\xa0/>", "<br  />a"]  # fmt: skip


@pytest.mark.parametrize("s", BR_CASES)
def test_line_break_near_misses(s):
    for filters in (DEFAULT_FILTERS, "", "?"):
        for split in (" ", "x"):
            py, cc = both(filters=filters, split=split)
            py.fit_on_texts([s, "Q" + s + "É"])
            cc.fit_on_texts([s, "Q" + s + "É"])
            assert list(cc.word_index.items()) == list(py.word_index.items()), (filters, split)


def test_lone_surrogates():
    texts = ["a\ud800b c", "\udfff x"]
    py, cc = both()
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    assert_same_vocabulary(py, cc)
    assert "a\ud800b" in cc.word_index
    assert_same_outputs(py, cc, texts)
    py, cc = both(ngrams=2)  # fnv1a_32 encodes to UTF-8, which a lone surrogate cannot be
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    for tok in (py, cc):
        with pytest.raises(UnicodeEncodeError):
            tok.texts_to_sequences(texts)


def test_inputs_the_cpp_code_leaves_to_python():
    class S(str):
        pass

    texts = ["The cat", ["The", "Dog"], S("a cat"), "x"]
    py, cc = both()
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    assert_same_vocabulary(py, cc)
    assert_same_outputs(py, cc, texts)
    for kw in (dict(char_level=True), dict(split="ab"), dict(filters=list("!,"))):
        py, cc = both(**kw)
        assert cc._cpp() is None
        py.fit_on_texts(["a,b! c"])
        cc.fit_on_texts(["a,b! c"])
        assert_same_vocabulary(py, cc)


LAZY = ("word_counts", "word_docs", "word_index", "index_word", "index_docs")


def assert_same_json(py, cc):
    """Keras' JSON of the C++-fitted tokenizer equals json.dumps of the reference's dicts,
    also as the JSON string save_model stores; writing it builds no pending dict."""
    pending = [n for n in LAZY if n not in vars(cc)] if cc._pending is not None else []
    ref = {k: v for k, v in py.get_config().items()}
    for n in LAZY:
        assert ref[n] == json.dumps(getattr(py, n))
    assert cc.get_config() == ref
    doc = json.dumps({"class_name": "Tokenizer", "config": ref})
    assert cc.to_json() == doc and py.to_json() == doc
    assert cc.to_json(indent=1) == json.dumps({"class_name": "Tokenizer", "config": ref}, indent=1)
    assert cc._json_literal() == json.dumps(doc) and py._json_literal() == json.dumps(doc)
    assert cc._json_text(2) == json.dumps(json.dumps(doc)[1:-1])[1:-1]
    assert [n for n in LAZY if n not in vars(cc)] == pending


WORDS = st.lists(
    st.text(st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=6)  # lone surrogates too
    | st.sampled_from(['"\\', "\x7f\x00\b\f\n\r\t\x1f", "😀é\u2028", "<OOV>"]),
    unique=True, max_size=12,
)


@given(words=WORDS, ints=st.lists(st.integers(-(2**63), 2**63 - 1), unique=True, min_size=12, max_size=12),
       depth=st.integers(0, 3))
def test_json_object_is_json_dumps(words, ints, depth):
    # json.dumps(dict(zip(keys, values))) (ensure_ascii, int keys as strings), escaped depth times.
    mod = text._cpp_module()[0]
    n = len(words)
    a = np.array(ints[:n], dtype=np.int64)
    for keys, values, d in ((words, a, dict(zip(words, ints))), (a, words, dict(zip(ints, words))),
                            (words, words, dict(zip(words, words))), (a, a, dict(zip(ints[:n], ints)))):
        ref = json.dumps(d)
        for _ in range(depth):
            ref = json.dumps(ref)[1:-1]
        assert mod.tokenizer_json_object(keys, values, depth) == ref


def test_json_object_bad_arguments():
    mod = text._cpp_module()[0]
    with pytest.raises(ValueError, match="same length"):
        mod.tokenizer_json_object(["a"], np.zeros(2, np.int64))
    with pytest.raises(TypeError):
        mod.tokenizer_json_object(["a", 1], ["b", "c"])
    with pytest.raises(TypeError):
        mod.tokenizer_json_object(["a"], np.zeros(1, np.int32))
    with pytest.raises(ValueError, match="depth"):
        mod.tokenizer_json_object(["a"], ["b"], 9)


@given(
    texts=TEXTS,
    queries=TEXTS,
    num_words=st.sampled_from([None, 0, 2, 5]),
    oov=st.sampled_from([None, "<OOV>", "a"]),
    ngrams=st.sampled_from([1, 2]),
    reads=st.permutations(LAZY),
    n_read=st.integers(0, len(LAZY)),
    later=st.sampled_from(["nothing", "num_words", "oov_token", "set_word_index", "fit_again", "fit_on_sequences"]),
)
def test_vocabulary_built_on_first_read(texts, queries, num_words, oov, ngrams, reads, n_read, later):
    # A first C++ fit leaves Keras' dicts pending: encoding first, reading some of them, then
    # changing options / fitting again must all match the Python tokenizer, which built them.
    text._CPP_PARALLEL_MIN_CHARS = 0
    kw = dict(num_words=num_words, oov_token=oov, ngrams=ngrams, buckets=7)
    py, cc = both(**kw)
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    if oov is None or all(oov not in t.lower() for t in texts):
        assert cc._pending is not None and not any(n in vars(cc) for n in LAZY)
    assert cc.vocab_size == py.vocab_size and repr(cc) == repr(py)
    assert_same_outputs(py, cc, texts)  # from the pending vocabulary
    for name in reads[:n_read]:  # some attributes built, the others still pending
        assert list(getattr(cc, name).items()) == list(getattr(py, name).items())
        assert type(getattr(cc, name)) is type(getattr(py, name))
    assert_same_json(py, cc)  # pending attributes written from the arrays, built ones by json
    assert_same_outputs(py, cc, texts)
    assert_same_outputs(py, cc, queries)
    for tok in (py, cc):
        if later == "num_words":
            tok.num_words = 3
        elif later == "oov_token":
            tok.oov_token = "<other>"
        elif later == "set_word_index":
            tok.word_index = {"a": 2, "b": 3, **({} if oov is None else {oov: 1})}
        elif later == "fit_again":
            tok.fit_on_texts(queries)
        elif later == "fit_on_sequences":
            tok.fit_on_sequences([[1, 2, 2], [3]])
    if later != "oov_token":  # else Keras appends None (the new token's id) for unknown words
        assert_same_outputs(py, cc, texts + queries)
    assert cc.texts_to_sequences(texts + queries) == py.texts_to_sequences(texts + queries)
    assert_same_vocabulary(py, cc)
    assert all(n in vars(cc) for n in LAZY)
    assert cc.to_json() == py.to_json()


def test_pending_vocabulary_survives_copy_and_pickle():
    import copy
    import pickle

    texts = ["The cat sat", "the dog, the cat!"]
    py = Tokenizer(engine="python", oov_token="<OOV>")
    py.fit_on_texts(texts)
    for make in (lambda t: pickle.loads(pickle.dumps(t)), copy.deepcopy, copy.copy):
        cc = Tokenizer(engine="cpp", oov_token="<OOV>")
        cc.fit_on_texts(texts)
        c2 = make(cc)
        assert c2.texts_to_sequences(texts) == py.texts_to_sequences(texts)
        assert_same_vocabulary(py, c2)
        assert_same_vocabulary(py, cc)
    del cc.word_counts  # a deleted attribute reads as Keras' empty value, as on a new Tokenizer
    assert cc.word_counts == OrderedDict()


def test_engine_option():
    assert Tokenizer()._cpp() is text._cpp_module()[0]  # auto: the C++ code when it is built
    assert Tokenizer(engine="python")._cpp() is None
    with pytest.raises(ValueError, match="engine"):
        Tokenizer(engine="rust")
    text._CPP = (None, False)  # as if the extension were missing
    assert Tokenizer()._cpp() is None
    with pytest.raises(_backends.BackendUnavailableError):
        Tokenizer(engine="cpp")


def test_threads_give_identical_results():
    rng = np.random.default_rng(0)
    vocab = ["w%d" % i for i in range(3000)] + ["É", "ΟΔΟΣ", "<br />"]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(0, 60))) for _ in range(3000)]
    out = []
    for threads in (1, 2, 4):
        fastscale.set_num_threads(threads)
        tok = Tokenizer(engine="cpp", ngrams=2, num_words=500)
        tok.fit_on_texts(texts)
        out.append((list(tok.word_counts.items()), list(tok.word_docs.items()), tok.texts_to_bags(texts)))
    for o in out[1:]:
        assert o[0] == out[0][0] and o[1] == out[0][1]
        assert np.array_equal(o[2][0], out[0][2][0]) and np.array_equal(o[2][1], out[0][2][1])


@pytest.mark.parametrize("ngrams, buckets", [(1, 2**20), (2, 7), (2, 2**20), (3, 2**25)])
def test_id_lists_reference_counts(ngrams, buckets):
    # The C++ code stores shared int objects into the lists' slots and raises each int's
    # reference count once by the number of slots holding it: check those counts exactly
    # (ids > 256 are not CPython's cached small ints), and that the lists behave as lists.
    import gc

    rng = np.random.default_rng(1)
    vocab = ["w%d" % i for i in range(2000)]
    texts = [" ".join(rng.choice(vocab, size=rng.integers(0, 40))) for _ in range(600)]
    py, cc = both(ngrams=ngrams, buckets=buckets, oov_token="<OOV>", num_words=1500)
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    out = cc.texts_to_sequences(texts)
    assert out == py.texts_to_sequences(texts)
    objs, uses = {}, {}  # by object identity
    for seq in out:
        for v in seq:
            objs[id(v)] = v
            uses[id(v)] = uses.get(id(v), 0) + 1
    probe = [(objs[k], uses[k]) for k in objs if objs[k] > 256][:300]
    del objs, uses, seq, v
    assert len(probe) > 100
    # Each int is referenced by its slots, its tuple in probe, and getrefcount's argument.
    assert [sys.getrefcount(p[0]) for p in probe] == [n + 2 for _, n in probe]
    del out
    gc.collect()
    assert [sys.getrefcount(p[0]) for p in probe] == [2] * len(probe)
    out = cc.texts_to_sequences(texts)
    out[0].append(out)  # an ordinary, GC-tracked list: the cycle is collected
    del out
    assert gc.collect() >= 1


def test_count_order_around_2_16():
    # The C++ count order: a counting sort below 2**16, a stable sort above; ties in
    # first-seen order on both sides and at the boundary.
    big = 2**16
    texts = ["x y"] + ["b a c"] * (big - 1) + ["a c d e"] + ["c"] * 5 + ["e d b"] * 3 + ["f"] * (big + 2)
    py, cc = both(oov_token="<OOV>")
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    assert list(cc.word_index.items()) == list(py.word_index.items())
    assert list(cc.word_index) == ["<OOV>", "c", "b", "f", "a", "d", "e", "x", "y"]


def test_ids_not_kept_for_a_large_fit(monkeypatch):
    monkeypatch.setattr(text, "_FIT_CACHE_TOKENS", 2)  # the C++ fit keeps ids up to 16 characters
    texts = ["the cat sat", "on the mat, the end"]
    py, cc = both(oov_token="<OOV>", ngrams=2)
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    assert cc._fit_cache is None
    assert_same_outputs(py, cc, texts)
    assert_same_vocabulary(py, cc)


@pytest.mark.parametrize("texts", [["a" * 2_000_000], ["a b " * 300_000], ["x" * 300_000 + " y"] * 4, ["z" * 2**20]])
def test_buffers_around_the_mapped_size(texts):
    # Scratch and id buffers of 1 MiB and more are mapped from the kernel, smaller ones come
    # from malloc; a buffer reserved large and trimmed small (one long token) or grown across
    # that size must still be freed as what it is.
    import gc

    fastscale.set_num_threads(2)
    py, cc = both(ngrams=2)
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    assert list(cc.word_counts.items()) == list(py.word_counts.items())
    assert cc.texts_to_sequences(texts) == py.texts_to_sequences(texts)
    cc._fit_cache = None
    gc.collect()


def test_bad_encode_arguments_raise():
    mod = text._cpp_module()[0]
    prov, off, fin = np.array([0, 5], np.int32), np.array([0, 2], np.int64), np.arange(3, dtype=np.int64)
    with pytest.raises(ValueError, match="out of range"):
        mod.tokenizer_encode(prov, off, fin, None, 1, 1, 0, True, False)
    with pytest.raises(ValueError, match="out of range"):
        mod.tokenizer_encode(np.array([0], np.int32), off, fin, None, 1, 1, 0, True, False)
    with pytest.raises(TypeError):
        mod.tokenizer_encode(prov.astype(np.int64), off, fin, None, 1, 1, 0, True, False)


# ------------------------------------------------------------------ the real IMDB file
@pytest.fixture(scope="module")
def imdb_train():
    d = imdb_dir()
    if d is None:
        pytest.skip("IMDB data not found (set FASTSCALE_DATA or provide ../shared/data/imdb)")
    from fastscale.datasets import load_tsv

    return load_tsv(d / "train.tsv.gz")[0]


def test_imdb_same_vocabulary_and_sequences(imdb_train):
    texts = imdb_train
    py, cc = both(num_words=10000, oov_token="<OOV>")
    py.fit_on_texts(texts)
    cc.fit_on_texts(texts)
    other = [t[::-1] for t in texts[:3000]] + texts[-3000:]  # new texts, encoded by the pending vocabulary
    a, b = cc.texts_to_bags(other), py.texts_to_bags(other)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert cc._pending is not None and "word_index" not in vars(cc)
    assert len(cc.word_index) == 88082
    assert_same_vocabulary(py, cc)
    assert cc.texts_to_sequences(texts) == py.texts_to_sequences(texts)
    assert cc.texts_to_sequences(texts[::-1]) == py.texts_to_sequences(texts[::-1])  # not from the cache


def test_imdb_ngrams_and_raw_keras_rules(imdb_train):
    texts = imdb_train[:4000]
    for kw in (dict(ngrams=2, oov_token="<OOV>", num_words=10000), dict(strip_html=False, lower=False, ngrams=3)):
        py, cc = both(**kw)
        py.fit_on_texts(texts)
        cc.fit_on_texts(texts)
        assert_same_vocabulary(py, cc)
        assert_same_outputs(py, cc, texts)
        assert_same_outputs(py, cc, imdb_train[-500:])


@given(vocab=WORDS, words=st.lists(st.text(max_size=3), max_size=8), data=st.data())
def test_lookup_is_dict_lookup(vocab, words, data):
    # Each word's position among the vocabulary as a dict finds it (-1: absent), also for
    # equal strings that are distinct objects.
    mod = text._cpp_module()[0]
    words = words + [w.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass") for w in vocab]
    words = data.draw(st.permutations(words))
    where = {w: i for i, w in enumerate(vocab)}
    assert mod.tokenizer_lookup(vocab, words).tolist() == [where.get(w, -1) for w in words]
    with pytest.raises(TypeError):
        mod.tokenizer_lookup(vocab, [1])
