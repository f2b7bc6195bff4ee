"""The fastscale command: train / evaluate / predict / info, run in-process on tiny files."""
import io
import json
import sys

import numpy as np
import pytest


from fastscale import cli, nn  # noqa: E402

from .nn.textdata import texts, write_tsv  # noqa: E402

SMALL = ["--epochs", "3", "--num-words", "100", "--embed-dim", "16", "--hidden", "8", "--batch-size", "16", "--lr", "1e-2"]


@pytest.fixture
def data(tmp_path):
    write_tsv(tmp_path / "train.tsv.gz", 300, seed=1)
    write_tsv(tmp_path / "test.tsv.gz", 120, seed=2)
    return tmp_path


def test_train_evaluate_predict(data, capsys, monkeypatch):
    out = data / "run"
    rc = cli.main(["train", "--train", str(data / "train.tsv.gz"), "--test", str(data / "test.tsv.gz"), "--out", str(out),
                   *SMALL])
    text = capsys.readouterr().out
    assert rc == 0
    for row in ("test loss", "test accuracy", "seconds per epoch", "tokens/s"):
        assert row in text
    assert text.count("Epoch ") == 3  # one line per epoch (not a terminal)
    rec = json.loads((out / "history.json").read_text())
    assert len(rec["history"]["val_accuracy"]) == 3 and rec["test"]["accuracy"] > 0.9
    assert (out / "training_curve.png").read_bytes()[:4] == b"\x89PNG"
    model = nn.load_model(out / "model.fsm")
    # auto: CSR bags cut at the origin's maxlen (the longest training text), no padding
    longest = max(len(s) for s in model.tokenizer.texts_to_sequences(texts(300, seed=1)[0]))
    assert model.tokenizer is not None and model.metadata["input"] == "bags" and model.metadata["maxlen"] == longest
    assert set(rec["seconds"]["phases"]) >= {"read", "tokenizer fit", "encode", "fit", "evaluate", "save model"}

    assert cli.main(["evaluate", str(out / "model.fsm"), str(data / "test.tsv.gz")]) == 0
    ev = capsys.readouterr().out
    acc = float(next(l for l in ev.splitlines() if "accuracy" in l).split("|")[2])
    assert acc == pytest.approx(rec["test"]["accuracy"], abs=1e-4)

    assert cli.main(["predict", str(out / "model.fsm"), "great wonderful superb film", "awful boring dull waste"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [l.split("\t")[0] for l in lines] == ["1", "0"]
    assert all(0.5 <= float(l.split("\t")[1]) <= 1 for l in lines)

    monkeypatch.setattr(sys, "stdin", io.StringIO("brilliant moving\nterrible clumsy\n"))
    assert cli.main(["predict", str(out / "model.fsm")]) == 0
    assert [l.split("\t")[0] for l in capsys.readouterr().out.strip().splitlines()] == ["1", "0"]


def test_padded_input_trains_the_same_model(data, capsys):
    """--input padded (the origin's (N, maxlen) array) and the default bags: bitwise equal."""
    runs = {}
    for form in ("padded", "auto"):
        out = data / form
        assert cli.main(["train", "--train", str(data / "train.tsv.gz"), "--test", str(data / "test.tsv.gz"),
                         "--out", str(out), "--input", form, "-q", *SMALL]) == 0
        runs[form] = (nn.load_model(out / "model.fsm"), json.loads((out / "history.json").read_text()))
    (mp, hp), (mb, hb) = runs["padded"], runs["auto"]
    assert mp.metadata["input"] == "padded" and mb.metadata["input"] == "bags"
    assert mp.metadata["maxlen"] == mb.metadata["maxlen"]
    assert hp["history"] == hb["history"] and hp["test"] == hb["test"]
    for a, b in zip(mp.get_weights(), mb.get_weights()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("extra,want", [
    ([], {"embed_dim": 128, "epochs": 10, "buckets": None, "lazy": None, "batch_size": 64}),
    (["--ngrams", "2"], {"embed_dim": 16, "epochs": 5, "buckets": 2**20, "lazy": True, "batch_size": 64}),
    (["--ngrams", "2", "--embed-dim", "64", "--epochs", "3", "--buckets", "4096", "--lazy", "false"],
     {"embed_dim": 64, "epochs": 3, "buckets": 4096, "lazy": False, "batch_size": 64}),
    (["--epochs", "2", "--embed-dim", "8"], {"embed_dim": 8, "epochs": 2, "buckets": None, "lazy": None}),
])
def test_defaults_follow_ngrams_unless_given(extra, want):
    argv = ["train", *extra]
    args = cli._resolve_defaults(cli._parser(argv).parse_args(argv))
    assert {k: getattr(args, k) for k in want} == want


def test_bigrams_use_bags(data, capsys):
    out = data / "bi"
    rc = cli.main(["train", "--train", str(data / "train.tsv.gz"), "--test", str(data / "test.tsv.gz"), "--out", str(out),
                   "--ngrams", "2", "--buckets", "512", "-q", *SMALL])
    assert rc == 0
    m = nn.load_model(out / "model.fsm")
    assert m.metadata["input"] == "bags" and m.layers[0].input_dim == 100 + 512
    assert "Epoch" not in capsys.readouterr().out  # -q


def test_without_matplotlib_skips_picture(data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    rc = cli.main(["train", "--train", str(data / "train.tsv.gz"), "--test", str(data / "test.tsv.gz"),
                   "--out", str(data / "np"), "-q", *SMALL])
    assert rc == 0
    assert "matplotlib is not installed" in capsys.readouterr().out
    assert not (data / "np" / "training_curve.png").exists() and (data / "np" / "model.fsm").exists()


def test_finds_imdb_in_shared_folder(tmp_path, capsys, monkeypatch):
    shared = tmp_path / "shared" / "data" / "imdb"
    shared.mkdir(parents=True)
    write_tsv(shared / "train.tsv.gz", 200, seed=3)
    write_tsv(shared / "test.tsv.gz", 50, seed=4)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("FASTSCALE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli.main(["train", "--out", "run", "-q", *SMALL]) == 0
    assert "IMDB from ../shared/data/imdb" in capsys.readouterr().out


def test_no_data_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FASTSCALE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cli.main(["train", *SMALL]) == 2
    err = capsys.readouterr().err
    assert "--train PATH --test PATH" in err and "--download" in err and "FASTSCALE_DATA" in err


def test_bad_inputs(data, capsys):
    assert cli.main(["train", "--train", str(data / "train.tsv.gz")]) == 2
    assert "--test" in capsys.readouterr().err
    assert cli.main(["evaluate", str(data / "nope.fsm"), str(data / "test.tsv.gz")]) == 2
    assert "nope.fsm" in capsys.readouterr().err
    (data / "junk.fsm").write_bytes(b"junk")
    assert cli.main(["predict", str(data / "junk.fsm"), "x"]) == 2
    assert "not a fastscale model" in capsys.readouterr().err


def test_info_still_works(capsys):
    assert cli.main(["info"]) == 0
    assert "backends:" in capsys.readouterr().out


def test_unknown_test_labels_stop_before_training(data, capsys):
    """An error after the plotting child started: reported (exit 2), the child ended."""
    from .nn.textdata import write_tsv as write

    write(data / "three.tsv.gz", 60, seed=5, classes=3)
    rc = cli.main(["train", "--train", str(data / "train.tsv.gz"), "--test", str(data / "three.tsv.gz"),
                   "--out", str(data / "bad"), "-q", *SMALL])
    assert rc == 2
    assert "test labels [2] do not occur in the training data" in capsys.readouterr().err
    assert not (data / "bad" / "model.fsm").exists()


def test_picture_failure_is_a_warning(data, capsys):
    out = data / "pic"
    (out / "training_curve.png").mkdir(parents=True)  # savefig cannot write over a folder
    rc = cli.main(["train", "--train", str(data / "train.tsv.gz"), "--test", str(data / "test.tsv.gz"),
                   "--out", str(out), "-q", *SMALL])
    captured = capsys.readouterr()
    assert rc == 0 and (out / "model.fsm").exists() and (out / "history.json").exists()
    assert "the training-curve picture was not written" in captured.err
    assert "training_curve.png" not in captured.out.splitlines()[-1]
