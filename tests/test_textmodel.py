"""_textmodel's encodings: padded from CSR bags equals the origin's pad_sequences, bags cut
the way the padding cuts."""
import numpy as np
import pytest

from fastscale import _textmodel as R
from fastscale import text

from .nn.textdata import texts


def _sequences(n=200, seed=0, extra_long=0):
    xs, y = texts(n, seed=seed)
    xs = list(xs) + ["great " * extra_long + "awful"] * bool(extra_long)  # a text longer than the rest
    return xs


@pytest.mark.parametrize("ngrams", [1, 2])
@pytest.mark.parametrize("maxlen", [None, 1, 7, 30, 200])
def test_pad_bags_equals_pad_sequences(ngrams, maxlen):
    xs = _sequences(extra_long=40)
    tok = R.make_tokenizer(50, "<OOV>", ngrams, 64)
    tok.fit_on_texts(xs)
    seqs = tok.texts_to_sequences(xs)
    ref = text.pad_sequences(seqs, maxlen=maxlen)
    x, meta = R.fit_encode(tok, xs, input="padded", maxlen=maxlen)
    assert x.dtype == ref.dtype and np.array_equal(x, ref)
    assert meta == {"input": "padded", "maxlen": ref.shape[1]}
    assert np.array_equal(R.encode(tok, xs, meta), ref)


@pytest.mark.parametrize("maxlen", [None, 1, 7, 200])
def test_bags_are_the_padded_rows_without_padding(maxlen):
    xs = _sequences(extra_long=40)
    tok = R.make_tokenizer(50, "<OOV>", 1)
    tok.fit_on_texts(xs)
    (ids, offsets), meta = R.fit_encode(tok, xs, input="bags", maxlen=maxlen)
    assert meta == {"input": "bags", "maxlen": maxlen}
    seqs = tok.texts_to_sequences(xs)
    want = [s if maxlen is None else s[-maxlen:] for s in seqs]  # truncating="pre" keeps the end
    assert [ids[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])] == want
    assert offsets.dtype == np.int64 and offsets[0] == 0


def test_auto_keeps_the_origin_maxlen_for_words_and_every_id_for_ngrams():
    train, test = _sequences(seed=1), _sequences(seed=2, extra_long=60)
    tok = R.make_tokenizer(50, "<OOV>", 1)
    tok.fit_on_texts(train)
    (ids, offsets), meta = R.fit_encode(tok, train)
    longest = max(map(len, tok.texts_to_sequences(train)))
    assert meta == {"input": "bags", "maxlen": longest}
    tids, toff = R.encode(tok, test, meta)
    padded = text.pad_sequences(tok.texts_to_sequences(test), maxlen=longest)
    assert np.diff(toff).max() == longest  # the long test text is cut as the origin cuts it
    rows = [tids[a:b].tolist() for a, b in zip(toff[:-1], toff[1:])]
    assert rows == [r[r != 0].tolist() for r in padded]

    tok2 = R.make_tokenizer(50, "<OOV>", 2, 64)
    tok2.fit_on_texts(train)
    _, meta2 = R.fit_encode(tok2, train)
    assert meta2 == {"input": "bags", "maxlen": None}
    tids, toff = R.encode(tok2, test, meta2)
    assert np.diff(toff).tolist() == [len(s) for s in tok2.texts_to_sequences(test)]


def test_truncate_bags_leaves_short_bags_alone():
    ids = np.arange(10, dtype=np.int32)
    offsets = np.array([0, 3, 3, 10], dtype=np.int64)
    assert R.truncate_bags(ids, offsets, 7)[0] is ids
    t_ids, t_off = R.truncate_bags(ids, offsets, 2)
    assert t_ids.tolist() == [1, 2, 8, 9] and t_off.tolist() == [0, 2, 2, 4]
    assert R.pad_bags(ids, offsets, 4).tolist() == [[0, 0, 1, 2], [0, 0, 0, 0], [6, 7, 8, 9]]
    assert R.pad_bags(ids[:0], np.zeros(1, np.int64), 3).shape == (0, 3)


def test_bad_input_form():
    tok = R.make_tokenizer(50, "<OOV>", 1)
    tok.fit_on_texts(["a b"])
    with pytest.raises(ValueError, match="input must be"):
        R.fit_encode(tok, ["a b"], input="ragged")
