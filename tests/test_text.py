"""fastscale.text against Keras' documented behaviour, a literal port of Keras' code, and
hypothesis round trips.  (tensorflow is not installed: Keras' expected values are written out.)"""
import json
import os
import re
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastscale import text
from fastscale.text import Tokenizer, pad_sequences, sequences_to_bags, tokenizer_from_json

KERAS_FILTERS = '!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~\t\n'


def imdb_dir():
    """$FASTSCALE_DATA (itself or its imdb/), else a sibling shared/data/imdb of the repo."""
    env = os.environ.get("FASTSCALE_DATA")
    cands = [Path(env), Path(env) / "imdb"] if env else []
    here = Path(__file__).resolve()
    cands += [p / "shared" / "data" / "imdb" for p in here.parents]
    for c in cands:
        if (c / "train.tsv.gz").is_file():
            return c
    return None


# ------------------------------------------------------------------ a literal port of Keras
class KerasRef:
    """keras_preprocessing.text.Tokenizer, fit/encode/decode copied line for line (plus the
    documented strip_html pre-step), the independent reference for the fast code."""

    def __init__(self, num_words=None, filters=KERAS_FILTERS, lower=True, split=" ", char_level=False, oov_token=None, strip_html=False):
        self.word_counts = OrderedDict()
        self.word_docs = {}
        self.filters, self.split, self.lower = filters, split, lower
        self.num_words, self.document_count, self.char_level = num_words, 0, char_level
        self.oov_token, self.index_docs, self.word_index, self.index_word = oov_token, {}, {}, {}
        self.strip_html = strip_html

    def _seq(self, text):
        if self.char_level or isinstance(text, list):
            if self.strip_html and not isinstance(text, list):
                text = re.sub(r"<[bB][rR] */?>", " ", text)
            if self.lower:
                text = [t.lower() for t in text] if isinstance(text, list) else text.lower()
            return text
        if self.strip_html:
            text = re.sub(r"<[bB][rR] */?>", " ", text)
        if self.lower:
            text = text.lower()
        text = text.translate(str.maketrans({c: self.split for c in self.filters}))
        return [i for i in text.split(self.split) if i]

    def fit_on_texts(self, texts):
        for text in texts:
            self.document_count += 1
            seq = self._seq(text)
            for w in seq:
                self.word_counts[w] = self.word_counts.get(w, 0) + 1
            for w in set(seq):
                self.word_docs[w] = self.word_docs.get(w, 0) + 1
        wcounts = list(self.word_counts.items())
        wcounts.sort(key=lambda x: x[1], reverse=True)
        sorted_voc = [] if self.oov_token is None else [self.oov_token]
        sorted_voc.extend(wc[0] for wc in wcounts)
        self.word_index = dict(zip(sorted_voc, list(range(1, len(sorted_voc) + 1))))
        self.index_word = {c: w for w, c in self.word_index.items()}
        for w, c in list(self.word_docs.items()):
            self.index_docs[self.word_index[w]] = c

    def texts_to_sequences(self, texts):
        out = []
        oov_token_index = self.word_index.get(self.oov_token)
        for text in texts:
            vect = []
            for w in self._seq(text):
                i = self.word_index.get(w)
                if i is not None:
                    if self.num_words and i >= self.num_words:
                        if oov_token_index is not None:
                            vect.append(oov_token_index)
                    else:
                        vect.append(i)
                elif self.oov_token is not None:
                    vect.append(oov_token_index)
            out.append(vect)
        return out

    def texts_to_matrix(self, texts, mode="binary"):
        return self.sequences_to_matrix(self.texts_to_sequences(texts), mode=mode)

    def sequences_to_matrix(self, sequences, mode="binary"):
        import math
        from collections import defaultdict

        if not self.num_words:
            if self.word_index:
                num_words = len(self.word_index) + 1
            else:
                raise ValueError("Specify a dimension (`num_words` argument), or fit on some text data first.")
        else:
            num_words = self.num_words
        if mode == "tfidf" and not self.document_count:
            raise ValueError("Fit the Tokenizer on some data before using tfidf mode.")
        x = np.zeros((len(sequences), num_words))
        for i, seq in enumerate(sequences):
            if not seq:
                continue
            counts = defaultdict(int)
            for j in seq:
                if j >= num_words:
                    continue
                counts[j] += 1
            for j, c in list(counts.items()):
                if mode == "count":
                    x[i][j] = c
                elif mode == "freq":
                    x[i][j] = c / len(seq)
                elif mode == "binary":
                    x[i][j] = 1
                elif mode == "tfidf":
                    tf = 1 + np.log(c)
                    idf = np.log(1 + self.document_count / (1 + self.index_docs.get(j, 0)))
                    x[i][j] = tf * idf
                else:
                    raise ValueError("Unknown vectorization mode:", mode)
        return x

    def sequences_to_texts(self, sequences):
        out = []
        oov_token_index = self.word_index.get(self.oov_token)
        for seq in sequences:
            vect = []
            for num in seq:
                word = self.index_word.get(num)
                if word is not None:
                    if self.num_words and num >= self.num_words:
                        if oov_token_index is not None:
                            vect.append(self.index_word[oov_token_index])
                    else:
                        vect.append(word)
                elif self.oov_token is not None:
                    vect.append(self.index_word[oov_token_index])
            out.append(" ".join(vect))
        return out


# ------------------------------------------------------------------ Keras' documented values
SUN = ["The sun is shining in June!", "September is grey.", "Life is beautiful in August.", "I like it", "This and other things?"]
SUN_INDEX = {
    "is": 1, "in": 2, "the": 3, "sun": 4, "shining": 5, "june": 6, "september": 7, "grey": 8, "life": 9,
    "beautiful": 10, "august": 11, "i": 12, "like": 13, "it": 14, "this": 15, "and": 16, "other": 17, "things": 18,
}  # fmt: skip


def test_keras_word_index_and_counts():
    tok = Tokenizer()
    tok.fit_on_texts(SUN)
    assert tok.word_index == SUN_INDEX
    assert list(tok.word_index) == list(SUN_INDEX)  # descending count, ties first-seen
    assert tok.index_word == {i: w for w, i in SUN_INDEX.items()}
    assert tok.document_count == 5
    assert tok.word_counts["is"] == 3 and tok.word_counts["in"] == 2 and tok.word_counts["june"] == 1
    assert list(tok.word_counts)[:4] == ["the", "sun", "is", "shining"]  # first-seen order
    assert tok.word_docs["is"] == 3 and tok.word_docs["things"] == 1
    assert tok.index_docs[1] == 3 and tok.index_docs[2] == 2 and tok.index_docs[18] == 1
    assert tok.texts_to_sequences(["June is beautiful and I like it!"]) == [[6, 1, 10, 16, 12, 13, 14]]
    assert tok.sequences_to_texts([[6, 1, 10, 16, 12, 13, 14]]) == ["june is beautiful and i like it"]
    assert tok.vocab_size == 19 and tok.num_ids == 19


def test_keras_num_words_drops_and_oov():
    tok = Tokenizer(num_words=5)
    tok.fit_on_texts(SUN)
    assert len(tok.word_index) == 18  # num_words never limits fitting
    assert tok.texts_to_sequences(["June is beautiful and the sun"]) == [[1, 3, 4]]
    assert tok.num_ids == 5
    tok = Tokenizer(num_words=5, oov_token="<OOV>")
    tok.fit_on_texts(SUN)
    assert tok.word_index["<OOV>"] == 1 and tok.word_index["is"] == 2 and tok.word_index["sun"] == 5
    assert tok.texts_to_sequences(["June is beautiful and the sun"]) == [[1, 2, 1, 1, 4, 1]]
    assert tok.sequences_to_texts([[2, 3, 4, 5, 99]]) == ["is in the <OOV> <OOV>"]
    assert tok.sequences_to_texts([[0]]) == ["<OOV>"]  # Keras maps an unknown id (0 too) to OOV


def test_keras_oov_token_also_a_word_quirk():
    # Keras builds word_index with dict(zip(...)): the word's later index wins, 1 is unused.
    tok, ref = Tokenizer(oov_token="x"), KerasRef(oov_token="x")
    texts = ["a x a", "b"]
    tok.fit_on_texts(texts)
    ref.fit_on_texts(texts)
    assert tok.word_index == ref.word_index == {"x": 3, "a": 2, "b": 4}
    assert tok.texts_to_sequences(["a z"]) == ref.texts_to_sequences(["a z"]) == [[2, 3]]
    assert tok.vocab_size == 5


def test_filters_lower_split_char_level_and_token_lists():
    tok = Tokenizer(lower=False, filters="", split=",")
    tok.fit_on_texts(["A,b,,A", "b"])
    assert tok.word_index == {"A": 1, "b": 2}
    tok = Tokenizer(char_level=True)
    tok.fit_on_texts(["ab a!"])  # char level: filters are not applied (as in Keras)
    assert tok.word_index == {"a": 1, "b": 2, " ": 3, "!": 4}
    tok = Tokenizer()
    tok.fit_on_texts([["Hello", "World"], ["hello"]])  # pre-tokenized texts are lower-cased only
    assert tok.word_index == {"hello": 1, "world": 2}
    assert tok.texts_to_sequences([["WORLD", "x"]]) == [[2]]
    assert text.text_to_word_sequence("Hi, there!  You.") == ["hi", "there", "you"]


def test_split_keeps_other_whitespace_like_keras():
    # Keras splits on " " only; \r, \xa0, \u2028 (not in filters) stay inside tokens.
    s = "a\rb c\xa0d e\u2028f  g\th"
    tok = Tokenizer()
    assert tok.tokenize([s]) == [["a\rb", "c\xa0d", "e\u2028f", "g", "h"]]
    assert tok.tokenize(["plain  text  "]) == [["plain", "text"]]
    assert Tokenizer(filters="").tokenize(["a\tb c"]) == [["a\tb", "c"]]


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("a<br />b", ["a", "b"]),
        ("a<br/>b<BR>c<Br  />d", ["a", "b", "c", "d"]),
        ("x<br /><br />y", ["x", "y"]),
        ("<bra> <b> br", ["bra", "b", "br"]),  # only line breaks are stripped, not the word "br"
    ],
)
def test_strip_html(raw, expected):
    assert Tokenizer().tokenize([raw]) == [expected]
    assert "br" in Tokenizer(strip_html=False).tokenize(["a<br />b"])[0]


# ------------------------------------------------------------------ against the Keras port
WORDS = st.sampled_from(["the", "The", "cat", "CAT", "a", "b", "é", "Ünï", "br", "x1", "z"])
SEPS = st.sampled_from([" ", "  ", ", ", ".", "!\n", "\t", "<br />", "<BR>", "\r", "\xa0", "--", "?"])
TEXT = st.lists(st.tuples(WORDS, SEPS), max_size=12).map(lambda ps: "".join(w + s for w, s in ps))
TEXTS = st.lists(TEXT, max_size=8)


@given(
    texts=TEXTS,
    queries=TEXTS,
    num_words=st.sampled_from([None, 0, 1, 3, 6, 100]),
    oov=st.sampled_from([None, "<OOV>", "cat"]),
    lower=st.booleans(),
    strip=st.booleans(),
    char_level=st.booleans(),
)
def test_matches_keras_port(texts, queries, num_words, oov, lower, strip, char_level):
    kw = dict(num_words=num_words, oov_token=oov, lower=lower, char_level=char_level)
    tok, ref = Tokenizer(strip_html=strip, **kw), KerasRef(strip_html=strip, **kw)
    tok.fit_on_texts(texts)
    ref.fit_on_texts(texts)
    tok.fit_on_texts(queries[:2])  # fitting twice accumulates, as in Keras
    ref.fit_on_texts(queries[:2])
    assert list(tok.word_counts.items()) == list(ref.word_counts.items())
    assert dict(tok.word_docs) == ref.word_docs
    assert tok.document_count == ref.document_count
    assert list(tok.word_index.items()) == list(ref.word_index.items())
    assert tok.index_word == ref.index_word
    assert dict(tok.index_docs) == ref.index_docs
    seqs = tok.texts_to_sequences(queries)
    assert seqs == ref.texts_to_sequences(queries)
    # The last fitted texts are encoded from the fit's cached ids: same result.
    fitted = queries[:2]
    assert tok._cached(fitted) is not None
    assert tok.texts_to_sequences(fitted) == ref.texts_to_sequences(fitted)
    assert tok.sequences_to_texts(seqs + [[0, 1, 2, 50]]) == ref.sequences_to_texts(seqs + [[0, 1, 2, 50]])


# ------------------------------------------------------------------ JSON
@given(texts=TEXTS, num_words=st.sampled_from([None, 3]), oov=st.sampled_from([None, "<OOV>"]),
       strip=st.booleans(), ngrams=st.sampled_from([1, 2, 3]), buckets=st.sampled_from([1, 7, 2**20]))  # fmt: skip
def test_json_round_trip(texts, num_words, oov, strip, ngrams, buckets):
    tok = Tokenizer(num_words=num_words, oov_token=oov, strip_html=strip, ngrams=ngrams, buckets=buckets, filters="!.")
    tok.fit_on_texts(texts)
    s = tok.to_json()
    back = tokenizer_from_json(s)
    assert back.to_json() == s
    for name in ("word_counts", "word_docs", "index_docs", "word_index", "index_word"):
        assert list(getattr(back, name).items()) == list(getattr(tok, name).items()), name
    for name in ("num_words", "filters", "lower", "split", "char_level", "oov_token", "document_count",
                 "strip_html", "ngrams", "buckets", "num_ids"):  # fmt: skip
        assert getattr(back, name) == getattr(tok, name), name
    assert back.texts_to_sequences(texts) == tok.texts_to_sequences(texts)
    back.fit_on_texts(texts[:1])  # a loaded tokenizer can keep fitting (Keras' cannot)
    tok.fit_on_texts(texts[:1])
    assert back.to_json() == tok.to_json()


def test_json_layout_is_keras_and_keras_json_loads():
    tok = Tokenizer(num_words=10, oov_token="<OOV>")
    tok.fit_on_texts(SUN)
    d = json.loads(tok.to_json())
    assert d["class_name"] == "Tokenizer"
    assert json.loads(d["config"]["word_index"]) == tok.word_index  # vocabularies as JSON strings
    # A Keras JSON has no fastscale options: it loads with strip_html=False (Keras' ids).
    for k in ("strip_html", "ngrams", "buckets"):
        del d["config"][k]
    back = tokenizer_from_json(json.dumps(d))
    assert back.strip_html is False and back.ngrams == 1
    assert back.texts_to_sequences(["a<br />b is"]) == [[1, 1, 1, 2]]  # a, br, b are OOV: "br" kept


# ------------------------------------------------------------------ n-grams
def test_fnv1a_and_ngram_hash_values():
    # Standard FNV-1a 32-bit test vectors.
    assert text.fnv1a_32("") == 0x811C9DC5
    assert text.fnv1a_32("a") == 0xE40C292C
    assert text.fnv1a_32("foobar") == 0xBF9CF968
    h = 0x811C9DC5
    for b in "é".encode():
        h = ((h ^ b) * 16777619) % 2**32
    assert text.fnv1a_32("é") == h
    assert text.ngram_hash(["a", "b"]) == (0xE40C292C * 116049371 + text.fnv1a_32("b")) % 2**64
    big = text.ngram_hash(["foobar", "foobar", "foobar"])
    f = 0xBF9CF968
    assert big == ((f * 116049371 + f) * 116049371 + f) % 2**64


@given(texts=TEXTS, n=st.sampled_from([2, 3, 4]), buckets=st.sampled_from([1, 5, 1000, 2**20]),
       num_words=st.sampled_from([None, 4]), oov=st.sampled_from([None, "<OOV>"]))  # fmt: skip
def test_ngram_ids_follow_the_documented_hash(texts, n, buckets, num_words, oov):
    tok = Tokenizer(ngrams=n, buckets=buckets, num_words=num_words, oov_token=oov)
    tok.fit_on_texts(texts[: len(texts) // 2])
    plain = Tokenizer(num_words=num_words, oov_token=oov)
    plain.fit_on_texts(texts[: len(texts) // 2])
    V = tok.vocab_size
    assert tok.num_ids == V + buckets
    seqs = tok.texts_to_sequences(texts)
    for t, seq, words in zip(texts, seqs, plain.texts_to_sequences(texts)):
        toks = tok.tokenize([t])[0]  # every token string, OOV ones included
        grams = [V + text.ngram_hash(toks[i : i + k]) % buckets for i in range(len(toks)) for k in range(2, n + 1) if i + k <= len(toks)]
        assert seq == words + grams
        assert all(V <= g < V + buckets for g in grams)
    assert tok.sequences_to_texts(seqs) == plain.sequences_to_texts(plain.texts_to_sequences(texts))
    lists = tok.tokenize(texts)
    hashes, lens = tok._token_hashes(lists)
    whole, small = tok._ngram_ids(hashes, lens), tok._ngram_ids(hashes, lens, chunk_tokens=3)  # chunked = whole
    assert np.array_equal(whole[0], small[0]) and np.array_equal(whole[1], small[1])


def test_ngram_ids_deterministic_across_processes():
    code = (
        "from fastscale.text import Tokenizer\n"
        "t = Tokenizer(ngrams=3, buckets=1000003); t.fit_on_texts(['the cat sat'])\n"
        "print(t.texts_to_sequences(['the cat sat on the mat', 'naïve café ünïcode']))\n"
    )
    outs = set()
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(Path(text.__file__).parents[1]))
        outs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert len(outs) == 1
    tok = Tokenizer(ngrams=3, buckets=1000003)
    tok.fit_on_texts(["the cat sat"])
    assert outs.pop().strip() == str(tok.texts_to_sequences(["the cat sat on the mat", "naïve café ünïcode"]))


def test_encoding_follows_later_changes():
    # Keras users set num_words or replace word_index after fitting: no stale lookup table.
    tok = Tokenizer()
    tok.fit_on_texts(SUN)
    assert tok.texts_to_sequences(["the sun is"]) == [[3, 4, 1]]
    tok.num_words = 4
    assert tok.texts_to_sequences(["the sun is"]) == [[3, 1]]
    tok.num_words = None
    tok.word_index = {w: 19 - i for w, i in SUN_INDEX.items()}
    assert tok.texts_to_sequences(["the sun is"]) == [[16, 15, 18]]
    tok.fit_on_texts(["sun sun sun sun"])
    assert tok.texts_to_sequences(["the sun is"]) == [[4, 1, 2]]  # sun 5, is 3, in 2, the 1


@given(texts=TEXTS, n=st.sampled_from([1, 2, 3]), num_words=st.sampled_from([None, 3]), oov=st.sampled_from([None, "<OOV>"]))
def test_fit_cache_gives_the_same_ids(texts, n, num_words, oov):
    tok = Tokenizer(ngrams=n, buckets=50, num_words=num_words, oov_token=oov)
    tok.fit_on_texts(texts)
    assert tok._cached(texts) is not None
    fresh = list(iter(texts))  # same objects: cached; a generator is never cached
    assert tok.texts_to_sequences(fresh) == tok.texts_to_sequences(iter(texts))
    a, b = tok.texts_to_bags(texts), tok.texts_to_bags(iter(texts))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[0].dtype == b[0].dtype


def test_fit_cache_is_not_used_after_changes():
    texts = ["The Cat", "the dog"]
    tok = Tokenizer()
    tok.fit_on_texts(texts)
    assert tok.texts_to_sequences(texts) == [[1, 2], [1, 3]]
    tok.lower = False  # tokenizing rules changed: the cached ids no longer apply
    assert tok.texts_to_sequences(texts) == [[], [1, 3]]
    tok.lower = True
    texts[1] = "dog dog"  # a different text object
    assert tok._cached(texts) is None and tok.texts_to_sequences(texts) == [[1, 2], [3, 3]]
    tok.word_index = {"dog": 7}
    assert tok.texts_to_sequences(["the dog"]) == [[7]]


def test_bad_options():
    with pytest.raises(ValueError, match="ngrams"):
        Tokenizer(ngrams=0)
    with pytest.raises(ValueError, match="buckets"):
        Tokenizer(buckets=0)
    with pytest.raises(ValueError, match="num_words"):
        Tokenizer(num_words=-1)
    with pytest.raises(TypeError, match="unrecognized"):
        Tokenizer(bogus=1)


# ------------------------------------------------------------------ bags
@given(texts=TEXTS, n=st.sampled_from([1, 2, 3]), oov=st.sampled_from([None, "<OOV>"]))
def test_bags_match_sequences(texts, n, oov):
    tok = Tokenizer(ngrams=n, buckets=97, oov_token=oov)
    tok.fit_on_texts(texts[:3])
    seqs = tok.texts_to_sequences(texts)
    ids, offsets = tok.texts_to_bags(texts)
    assert ids.dtype == np.int32 and offsets.dtype == np.int64
    assert ids.shape == (sum(map(len, seqs)),) and offsets.shape == (len(texts) + 1,)
    assert offsets[0] == 0
    assert [ids[offsets[b] : offsets[b + 1]].tolist() for b in range(len(texts))] == seqs
    ids2, off2 = sequences_to_bags(seqs)
    assert np.array_equal(ids, ids2) and np.array_equal(offsets, off2)
    ids3, off3 = tok.sequences_to_bags(seqs)
    assert np.array_equal(ids, ids3) and np.array_equal(offsets, off3)


def test_sequences_to_bags_forms_and_errors():
    ids, off = sequences_to_bags([])
    assert ids.shape == (0,) and ids.dtype == np.int32 and off.tolist() == [0]
    ids, off = sequences_to_bags(np.array([[0, 0, 3], [4, 5, 6]]))
    assert ids.tolist() == [0, 0, 3, 4, 5, 6] and off.tolist() == [0, 3, 6]
    ids, off = sequences_to_bags(np.zeros((3, 0), dtype=np.int64))
    assert ids.shape == (0,) and off.tolist() == [0, 0, 0, 0]
    ids, off = sequences_to_bags([np.array([1, 2]), [], (3,)])
    assert ids.tolist() == [1, 2, 3] and off.tolist() == [0, 2, 2, 3]
    with pytest.raises(ValueError, match="-1 at position 1"):
        sequences_to_bags([[1, -1]])
    with pytest.raises(ValueError, match="2147483648"):
        sequences_to_bags([[2**31]])


# ------------------------------------------------------------------ pad_sequences
def test_pad_sequences_keras_doc_examples():
    seqs = [[1], [2, 3], [4, 5, 6]]
    assert pad_sequences(seqs).tolist() == [[0, 0, 1], [0, 2, 3], [4, 5, 6]]
    assert pad_sequences(seqs, value=-1).tolist() == [[-1, -1, 1], [-1, 2, 3], [4, 5, 6]]
    assert pad_sequences(seqs, padding="post").tolist() == [[1, 0, 0], [2, 3, 0], [4, 5, 6]]
    assert pad_sequences(seqs, maxlen=2).tolist() == [[0, 1], [2, 3], [5, 6]]
    assert pad_sequences(seqs, maxlen=2, truncating="post").tolist() == [[0, 1], [2, 3], [4, 5]]
    out = pad_sequences(seqs)
    assert out.dtype == np.int32 and out.shape == (3, 3)
    assert pad_sequences(seqs, dtype="float32", value=0.5).tolist() == [[0.5, 0.5, 1], [0.5, 2, 3], [4, 5, 6]]


def test_pad_sequences_edge_cases():
    assert pad_sequences([]).shape == (0, 0)
    assert pad_sequences([], maxlen=4).shape == (0, 4)
    assert pad_sequences([[], []]).shape == (2, 0)
    assert pad_sequences([[1, 2], [3]], maxlen=0).shape == (2, 0)
    assert pad_sequences(np.array([[1, 2], [3, 4]]), maxlen=3).tolist() == [[0, 1, 2], [0, 3, 4]]
    vec = pad_sequences([[[1, 2]], [[3, 4], [5, 6]]])  # sample_shape (2,), as Keras allows
    assert vec.shape == (2, 2, 2) and vec[0].tolist() == [[0, 0], [1, 2]]
    strs = pad_sequences([["a"], ["b", "c"]], dtype=object, value="")
    assert strs.tolist() == [["", "a"], ["b", "c"]]
    with pytest.raises(ValueError, match="Padding type"):
        pad_sequences([[1]], padding="middle")
    with pytest.raises(ValueError, match="Truncating type"):
        pad_sequences([[1]], truncating="middle")
    with pytest.raises(ValueError, match="non-iterable"):
        pad_sequences([1, 2])
    with pytest.raises(ValueError, match="dtype"):
        pad_sequences([[1]], value="x")
    with pytest.raises(ValueError, match="different from expected shape"):
        pad_sequences([[[1, 2]], [[1, 2, 3]]])


def _pad_ref(seqs, maxlen, padding, truncating, value):
    width = max((len(s) for s in seqs), default=0) if maxlen is None else maxlen
    rows = []
    for s in seqs:
        s = list(s)
        if len(s) > width:
            s = s[len(s) - width :] if truncating == "pre" else s[:width]
        pad = [value] * (width - len(s))
        rows.append(pad + s if padding == "pre" else s + pad)
    return rows, width


@given(
    seqs=st.lists(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=9), max_size=9),
    maxlen=st.one_of(st.none(), st.integers(0, 12)),
    padding=st.sampled_from(["pre", "post"]),
    truncating=st.sampled_from(["pre", "post"]),
    value=st.integers(-3, 3),
    as_arrays=st.sampled_from([None, np.int64, np.int32, np.int16]),
)
def test_pad_sequences_property(seqs, maxlen, padding, truncating, value, as_arrays):
    if as_arrays is not None:  # int32 / int16 arrays take the concatenating fast path
        seqs = [[v for v in s if np.iinfo(as_arrays).min <= v <= np.iinfo(as_arrays).max] for s in seqs]
    arg = seqs if as_arrays is None else [np.array(s, dtype=as_arrays) for s in seqs]
    out = pad_sequences(arg, maxlen=maxlen, padding=padding, truncating=truncating, value=value)
    rows, width = _pad_ref(seqs, maxlen, padding, truncating, value)
    assert out.shape == (len(seqs), width) and out.dtype == np.int32
    assert out.tolist() == rows


# ------------------------------------------------------------------ the real IMDB file
@pytest.fixture(scope="module")
def imdb_train():
    d = imdb_dir()
    if d is None:
        pytest.skip("IMDB data not found (set FASTSCALE_DATA or provide ../shared/data/imdb)")
    from fastscale.datasets import load_tsv

    return load_tsv(d / "train.tsv.gz")


def test_imdb_vocabulary(imdb_train):
    texts, y = imdb_train
    tok = Tokenizer(num_words=10000, oov_token="<OOV>")
    tok.fit_on_texts(texts)
    assert tok.document_count == 25000
    assert len(tok.word_index) == 88082  # 88,081 words (a literal Keras port agrees) + <OOV>
    top = list(tok.word_index)[1:11]
    assert top == ["the", "and", "a", "of", "to", "is", "in", "it", "i", "this"]
    assert tok.word_counts["the"] == 336157
    assert tok.word_counts.get("br", 0) <= 1  # one literal "br" in the text, not 101,871
    assert sum(tok.word_counts.values()) == 5841002
    seqs = tok.texts_to_sequences(texts[:2000])
    assert all(1 <= i < 10000 for s in seqs for i in s)
    x = pad_sequences(seqs)
    assert x.shape == (2000, max(map(len, seqs)))
    ids, offsets = tok.texts_to_bags(texts[:2000])
    assert ids.size == sum(map(len, seqs)) and offsets[-1] == ids.size


def test_imdb_without_strip_html_br_is_frequent(imdb_train):
    texts, _ = imdb_train
    tok = Tokenizer(strip_html=False)
    tok.fit_on_texts(texts[:3000])
    assert list(tok.word_index).index("br") < 15


# ------------------------------------------------------------------ matrices (Keras)
@given(
    texts=TEXTS,
    queries=TEXTS,
    num_words=st.sampled_from([None, 1, 3, 6, 100]),
    oov=st.sampled_from([None, "<OOV>"]),
    mode=st.sampled_from(["binary", "count", "freq", "tfidf"]),
)
def test_matrices_equal_keras_bitwise(texts, queries, num_words, oov, mode):
    tok = Tokenizer(num_words=num_words, oov_token=oov, strip_html=False)
    ref = KerasRef(num_words=num_words, oov_token=oov)
    tok.fit_on_texts(texts + ["a b"])  # never empty: an unfitted tokenizer without num_words raises
    ref.fit_on_texts(texts + ["a b"])
    got, want = tok.texts_to_matrix(queries, mode=mode), ref.texts_to_matrix(queries, mode=mode)
    assert got.dtype == np.float64 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)
    seqs = ref.texts_to_sequences(queries) + [[0, 1, 1, 99, 10**6], []]  # ids beyond the width are skipped
    np.testing.assert_array_equal(tok.sequences_to_matrix(seqs, mode=mode), ref.sequences_to_matrix(seqs, mode=mode))
    np.testing.assert_array_equal(tok.sequences_to_matrix(np.array([[0, 2, 2]]), mode=mode),
                                  ref.sequences_to_matrix([[0, 2, 2]], mode=mode))


def test_matrix_bad_arguments():
    with pytest.raises(ValueError, match="texts_to_matrix: argument 'mode' must be one of"):
        Tokenizer(num_words=5).texts_to_matrix(["a"], mode="tf-idf")
    with pytest.raises(ValueError, match="sequences_to_matrix: give the Tokenizer num_words, or fit it"):
        Tokenizer().sequences_to_matrix([[1]])
    with pytest.raises(ValueError, match="mode 'tfidf' needs a Tokenizer fitted"):
        Tokenizer(num_words=5).sequences_to_matrix([[1]], mode="tfidf")
    with pytest.raises(ValueError, match=r"sequences_to_matrix: ids must be in \[0, .*got -1 at position 1"):
        Tokenizer(num_words=5).sequences_to_matrix([[1, -1]])  # Keras would write column -1
    assert Tokenizer(num_words=4).sequences_to_matrix([]).shape == (0, 4)


# ------------------------------------------------------------------ texts that are not texts
@pytest.mark.parametrize("method", ["fit_on_texts", "texts_to_sequences", "texts_to_bags", "texts_to_matrix", "tokenize"])
@pytest.mark.parametrize("engine", ["python", "auto"])
def test_non_text_items_are_named(method, engine):
    tok = Tokenizer(num_words=10, engine=engine)
    tok.fit_on_texts(["a b c", "a"])
    before = tok.to_json()
    for bad, what in [(None, "NoneType"), (3, "int"), (b"a", "bytes"), (["a", 1], "a list holding int")]:
        with pytest.raises(TypeError, match=rf"Tokenizer.{method}: texts\[1\] must be a str or a list of str tokens, got {what}"):
            getattr(tok, method)(["a b", bad, "c"])
    with pytest.raises(TypeError, match=rf"Tokenizer.{method}: argument 'texts' must be a list .* got a str; pass \[text\]"):
        getattr(tok, method)("a b")
    assert tok.to_json() == before  # a failed call changed nothing


def test_non_text_items_in_iterators():
    tok = Tokenizer()
    with pytest.raises(TypeError, match=r"fit_on_texts: texts\[9001\] must be a str"):
        tok.fit_on_texts(iter(["b"] + ["a"] * 9000 + [None]))
    # The batches before the bad text's stay fitted and indexed, as Keras keeps the texts before it.
    assert tok.document_count == 8192 and tok.word_index == {"a": 1, "b": 2}
    gen = tok.texts_to_sequences_generator(["a", None])
    assert next(gen) == [1]
    with pytest.raises(TypeError, match=r"texts_to_sequences_generator: texts\[1\] must be a str"):
        next(gen)
