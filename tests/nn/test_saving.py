"""save / load_model: round trip, exact resume, atomic write, and every damaged-file error."""
import os
import struct

import numpy as np
import pytest

from fastscale import nn, optim
from fastscale.nn import saving

from .data import binary


def _model(lazy=False, dropout=False):
    layers = [nn.Embedding(200, 16, mask_zero=True), nn.GlobalAveragePooling1D(), nn.Dense(8, activation="relu")]
    if dropout:
        layers.append(nn.Dropout(0.2))
    m = nn.Sequential(layers + [nn.Dense(1, activation="sigmoid")])
    m.compile(optimizer=optim.Adam(learning_rate=3e-3, lazy=lazy), loss="binary_crossentropy",
              metrics=["accuracy", "auc"], seed=4)
    return m


def test_round_trip(tmp_path):
    x, y = binary(150, seed=1)
    m = _model()
    m.metadata = {"classes": [0, 1], "note": "é"}
    m.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.fsm"
    m.save(path)
    r = nn.load_model(path)
    np.testing.assert_array_equal(m.predict(x), r.predict(x))
    assert r.metadata == m.metadata
    assert [type(l) for l in r.layers] == [type(l) for l in m.layers]
    assert r.layers[0].mask_zero and r.layers[2].activation == "relu"
    assert r.optimizer.get_config() == m.optimizer.get_config() and r.optimizer.step == m.optimizer.step
    assert m.evaluate(x, y, verbose=0) == r.evaluate(x, y, verbose=0)
    assert not [p for p in os.listdir(tmp_path) if p != "m.fsm"]  # no temp file left behind
    u = nn.load_model(path, compile=False)
    assert not u.compiled
    np.testing.assert_array_equal(u.predict(x), m.predict(x))


def test_without_optimizer_state(tmp_path):
    """include_optimizer=False (Keras's option): weights, settings and tokenizer-free metadata
    round-trip; the optimizer comes back with its settings, step 0 and no moments."""
    x, y = binary(150, seed=1)
    m = _model(lazy=True)
    m.fit(x, y, epochs=1, verbose=0)
    saving.save_model(m, tmp_path / "full.fsm")
    saving.save_model(m, tmp_path / "small.fsm", include_optimizer=False)
    header, arrays = saving.read_file(tmp_path / "small.fsm")
    assert not [k for k in arrays if k.startswith("optimizer/")]
    assert (tmp_path / "small.fsm").stat().st_size < (tmp_path / "full.fsm").stat().st_size / 2
    r = nn.load_model(tmp_path / "small.fsm")
    np.testing.assert_array_equal(m.predict(x), r.predict(x))
    assert r.optimizer.get_config() == m.optimizer.get_config()
    assert r.optimizer.step == 0 and r.optimizer.slots == {}
    assert m.optimizer.step > 0 and m.optimizer.slots  # the model saved is untouched
    r.fit(x, y, epochs=1, verbose=0)  # trains on from fresh moments
    assert r.optimizer.step > 0


@pytest.mark.parametrize("lazy,dropout", [(False, False), (True, True)])
def test_resume_continues_exactly(tmp_path, lazy, dropout):
    x, y = binary(200, seed=2)
    full = _model(lazy, dropout)
    h_full = full.fit(x, y, epochs=2, batch_size=16, validation_split=0.2, verbose=0)

    part = _model(lazy, dropout)
    h1 = part.fit(x, y, epochs=1, batch_size=16, validation_split=0.2, verbose=0)
    part.save(tmp_path / "ckpt.fsm")
    resumed = nn.load_model(tmp_path / "ckpt.fsm")
    h2 = resumed.fit(x, y, epochs=1, batch_size=16, validation_split=0.2, verbose=0)

    for k in h_full.history:
        assert h_full.history[k] == h1.history[k] + h2.history[k], k
    for a, b in zip(full.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    sa, sb = full.optimizer.get_state(), resumed.optimizer.get_state()
    assert sa["step"] == sb["step"]
    for k in sa["slots"]:
        for s in sa["slots"][k]:
            np.testing.assert_array_equal(sa["slots"][k][s], sb["slots"][k][s])


def test_unbuilt_and_uncompiled_models_save(tmp_path):
    m = nn.Sequential([nn.EmbeddingBag(50, 4), nn.Dense(2, activation="softmax")])
    m.save(tmp_path / "a.fsm")
    r = nn.load_model(tmp_path / "a.fsm")
    assert not r.built and not r.compiled and r.layers[0].input_dim == 50


def test_overwrite_is_atomic(tmp_path, monkeypatch):
    x, y = binary(50, seed=3)
    m = _model()
    m.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "m.fsm"
    m.save(path)
    before = path.read_bytes()
    m.fit(x, y, epochs=1, verbose=0)

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        m.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["m.fsm"]
    monkeypatch.undo()
    m.save(path)
    assert path.read_bytes() != before


@pytest.fixture
def saved(tmp_path):
    x, y = binary(50, seed=4)
    m = _model()
    m.fit(x, y, epochs=1, verbose=0)
    p = tmp_path / "model.fsm"
    m.save(p)
    return p


def test_truncated(saved):
    data = saved.read_bytes()
    for n in (3, 15, 100, len(data) // 2, len(data) - 1):
        saved.write_bytes(data[:n])
        with pytest.raises(ValueError, match=r"model\.fsm.*truncated"):
            nn.load_model(saved)


def test_corrupted(saved):
    data = bytearray(saved.read_bytes())
    for pos in (len(data) // 2, len(data) - 40, len(data) - 1):
        bad = bytearray(data)
        bad[pos] ^= 0x20
        saved.write_bytes(bytes(bad))
        with pytest.raises(ValueError, match=r"model\.fsm.*corrupted"):
            nn.load_model(saved)
    saved.write_bytes(bytes(data) + b"x")
    with pytest.raises(ValueError, match=r"model\.fsm.*trailing"):
        nn.load_model(saved)


def test_newer_version(saved):
    data = bytearray(saved.read_bytes())
    struct.pack_into("<I", data, len(saved_magic()), saving.FORMAT_VERSION + 1)
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"model\.fsm.*newer fastscale"):
        nn.load_model(saved)


def saved_magic():
    return saving.MAGIC


def test_not_a_model_file(tmp_path):
    for content in (b"", b"hello world, not a model at all", np.arange(10).tobytes()):
        p = tmp_path / "other.npz"
        p.write_bytes(content)
        with pytest.raises(ValueError, match=r"other\.npz.*not a fastscale model"):
            nn.load_model(p)
    with pytest.raises(FileNotFoundError, match="missing.fsm"):
        nn.load_model(tmp_path / "missing.fsm")


def test_metadata_must_be_json(tmp_path):
    m = _model()
    m.metadata = {"bad": object()}
    with pytest.raises(TypeError, match="JSON"):
        m.save(tmp_path / "x.fsm")
    assert os.listdir(tmp_path) == []


def test_tokenizer_travels_with_the_model(tmp_path):
    from fastscale import text

    from .textdata import texts

    docs, y = texts(80, seed=5)
    tok = text.Tokenizer(num_words=50, oov_token="<OOV>", ngrams=2, buckets=32)
    tok.fit_on_texts(docs)
    m = nn.Sequential([nn.Embedding(tok.num_ids, 8, mask_zero=True), nn.GlobalAveragePooling1D(),
                       nn.Dense(1, activation="sigmoid")])
    m.compile(loss="binary_crossentropy", seed=0)
    m.fit(tok.texts_to_bags(docs), y, epochs=1, verbose=0)
    m.tokenizer = tok
    m.save(tmp_path / "t.fsm")
    r = nn.load_model(tmp_path / "t.fsm")
    assert r.tokenizer.get_config() == tok.get_config()
    assert r.tokenizer.texts_to_sequences(docs[:5]) == tok.texts_to_sequences(docs[:5])
    np.testing.assert_array_equal(r.predict(r.tokenizer.texts_to_bags(docs)), m.predict(tok.texts_to_bags(docs)))


def test_tokenizer_header_is_json_dumps(tmp_path):
    """The header is exactly json.dumps(header, sort_keys=True) with the tokenizer's to_json()
    (written without building a pending vocabulary), whatever kind of tokenizer it is."""
    import copy
    import json

    from fastscale import text

    docs = ['The "cat" sat\\', "the dog, the CAT! Ünï 😀 \ud800", "a\x7fb c"]
    tok = text.Tokenizer(oov_token="<OOV>")
    tok.fit_on_texts(docs)
    assert tok._pending is not None or text._cpp_module()[0] is None  # a C++ fit: nothing built yet
    built = copy.deepcopy(tok)
    for name in ("word_counts", "word_docs", "index_docs", "index_word", "word_index"):
        getattr(built, name)

    class Plain:  # only to_json(): the generic path
        def to_json(self):
            return tok.to_json()

    m = nn.Sequential([nn.Embedding(20, 4), nn.GlobalAveragePooling1D(), nn.Dense(1, activation="sigmoid")])
    m.metadata = {"zzz": 1}
    files = []
    for t in (tok, built, Plain()):
        pending = [n for n in text._VOCAB_JSON if n not in vars(t)]
        m.tokenizer = t
        saving.save_model(m, tmp_path / "t.fsm")
        assert [n for n in text._VOCAB_JSON if n not in vars(t)] == pending
        header, _ = saving.read_file(tmp_path / "t.fsm")
        assert header["tokenizer"] == built.to_json()
        data = (tmp_path / "t.fsm").read_bytes()
        (hlen,) = struct.unpack_from("<Q", data, 12)
        assert data[20 : 20 + hlen] == json.dumps(header, sort_keys=True, allow_nan=False).encode("utf-8")
        files.append(data)
    assert files[0] == files[1] == files[2]
    r = nn.load_model(tmp_path / "t.fsm")
    assert r.tokenizer.get_config() == built.get_config()
    assert list(r.tokenizer.word_index.items()) == list(built.word_index.items())


def test_unwritable_path_names_the_users_path(tmp_path):
    m = _model()
    target = tmp_path / "missing" / "m.fsm"
    with pytest.raises(FileNotFoundError, match=r"save_model: cannot write '.*missing/m\.fsm'") as e:
        m.save(target)
    assert ".tmp" not in str(e.value)
    assert not (tmp_path / "missing").exists()
