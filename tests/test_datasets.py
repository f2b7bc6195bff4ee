"""fastscale.datasets: the TSV loader and IMDB (local folders, offline download via file://)."""
import gzip
import hashlib
import io
import os
import random
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest

from fastscale import datasets
from fastscale.datasets import imdb_from_archive, load_imdb, load_tsv

SHARED_TRAIN_SHA256 = "ecec86e294a0bdd3850a5d076371275b0d7561046b918044c0c72a4bbf7fb4f7"  # its README


def imdb_dir():
    """$FASTSCALE_DATA (itself or its imdb/), else a sibling shared/data/imdb of the repo."""
    env = os.environ.get("FASTSCALE_DATA")
    cands = [Path(env), Path(env) / "imdb"] if env else []
    cands += [p / "shared" / "data" / "imdb" for p in Path(__file__).resolve().parents]
    for c in cands:
        if (c / "train.tsv.gz").is_file():
            return c
    return None


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Never read or write the real ~/.cache, never see the caller's FASTSCALE_DATA."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("FASTSCALE_DATA", raising=False)
    return home


def write(path, data: bytes, gz=False):
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


# ------------------------------------------------------------------ load_tsv
@pytest.mark.parametrize("gz", [False, True])
def test_load_tsv_plain_and_gzip(tmp_path, gz):
    data = "1\thello world\n0\tsecond\tline has\ttabs\n-3\t\n12\tnel\x85and\u2028ls stay in one line".encode()
    p = write(tmp_path / "a.data", data, gz=gz)  # gzip is detected by magic bytes, not by name
    texts, labels = load_tsv(p)
    assert texts == ["hello world", "second\tline has\ttabs", "", "nel\x85and\u2028ls stay in one line"]
    assert labels.dtype == np.int64 and labels.tolist() == [1, 0, -3, 12]


def test_load_tsv_crlf_and_bom(tmp_path):
    p = write(tmp_path / "w.tsv", "\ufeff1\tfirst\r\n0\tsecond\r\n".encode())
    texts, labels = load_tsv(p)
    assert texts == ["first", "second"] and labels.tolist() == [1, 0]


@pytest.mark.parametrize(
    "content, line, what",
    [
        (b"1\tok\nno tab here\n", 2, "no TAB"),
        (b"\tempty label\n", 1, "empty label"),
        (b"1\tok\n1\tok\n1.0\tfloat\n", 3, "integer"),
        (b"1\tok\n 1\tspace\n", 2, "integer"),
        (b"pos\tword\n", 1, "integer"),
        (b"1\tok\n\n", 2, "no TAB"),
    ],
)
@pytest.mark.parametrize("gz", [False, True])
def test_load_tsv_malformed(tmp_path, content, line, what, gz):
    p = write(tmp_path / "bad.tsv", content, gz=gz)
    with pytest.raises(ValueError, match=rf"bad\.tsv:{line}: .*{what}"):
        load_tsv(p)


def test_load_tsv_invalid_utf8_replaced_and_counted(tmp_path):
    p = write(tmp_path / "u.tsv", b"1\tgood\n0\tbad \xff byte\n1\talso \xc3 bad \xfe\n1\tfine\n")
    with pytest.warns(UnicodeWarning, match=r"2 line\(s\).*first at line 2"):
        texts, labels = load_tsv(p)
    assert texts == ["good", "bad \ufffd byte", "also \ufffd bad \ufffd", "fine"]
    assert labels.tolist() == [1, 0, 1, 1]


def test_load_tsv_valid_file_does_not_warn(tmp_path):
    p = write(tmp_path / "ok.tsv", "1\tcafé\n".encode())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_tsv(p)[0] == ["café"]


@pytest.mark.parametrize("gz", [False, True])
def test_load_tsv_empty_file(tmp_path, gz):
    p = write(tmp_path / "empty.tsv", b"", gz=gz)
    with pytest.raises(ValueError, match="empty.tsv.*empty"):
        load_tsv(p)


def test_load_tsv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_tsv(tmp_path / "nope.tsv")


# ------------------------------------------------------------------ IMDB: local folders
def make_tsvs(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        lines = "".join(f"{i % 2}\t{split} review {i}\n" for i in range(n))
        write(folder / f"{split}.tsv.gz", lines.encode(), gz=True)
    return folder


def test_load_imdb_from_data_dir_env_and_cache(tmp_path, monkeypatch, isolated_home):
    d = make_tsvs(tmp_path / "mine")
    (xtr, ytr), (xte, yte) = load_imdb(d)
    assert xtr == ["train review 0", "train review 1", "train review 2"] and ytr.tolist() == [0, 1, 0]
    assert xte[2] == "test review 2"
    # $FASTSCALE_DATA may be the imdb folder or a data root holding imdb/.
    make_tsvs(tmp_path / "root" / "imdb", n=2)
    monkeypatch.setenv("FASTSCALE_DATA", str(tmp_path / "root"))
    assert len(load_imdb()[0][0]) == 2
    assert datasets.find_imdb(d) == d  # data_dir comes first
    monkeypatch.delenv("FASTSCALE_DATA")
    make_tsvs(isolated_home / ".cache" / "fastscale" / "imdb", n=4)
    assert len(load_imdb(download=False)[1][0]) == 4


def test_load_imdb_nothing_and_no_download(tmp_path):
    with pytest.raises(FileNotFoundError, match="imdb_from_archive.*aclImdb_v1.tar.gz"):
        load_imdb(tmp_path / "none", download=False)


# ------------------------------------------------------------------ IMDB: download + build
REVIEWS = {
    # (split, polarity, id, rating): text
    ("train", "pos", 0, 9): "Great film!<br /><br />Loved it.",
    ("train", "pos", 1, 7): "tab\there and nel\x85and ls\u2028ps\u2029 cr\rvt\x0bff\x0cfs\x1cgs\x1drs\x1e us\x1f kept",
    ("train", "neg", 0, 1): "Awful. 1/10",
    ("train", "neg", 1, 4): "Not good, naïve plot.",
    ("train", "neg", 10, 2): "Numeric ids sort as numbers: 10 after 2",
    ("train", "neg", 2, 3): "id two",
    ("test", "pos", 5, 10): "Test positive.",
    ("test", "neg", 3, 2): "Test negative.",
}


def make_archive(path, reviews=REVIEWS, compress="gz"):
    with tarfile.open(path, f"w:{compress}") as tar:

        def add(name, data: bytes):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add("aclImdb/README", b"not a review")
        add("aclImdb/imdb.vocab", b"the\n")
        add("aclImdb/train/labeledBow.feat", b"0 0:1\n")
        add("aclImdb/train/urls_pos.txt", b"http://x\n")
        add("aclImdb/train/unsup/0_0.txt", b"unlabelled, not used")
        for (split, pol, rid, rating), text in reviews.items():
            add(f"aclImdb/{split}/{pol}/{rid}_{rating}.txt", text.encode())
    return path


def expected_lines(split, reviews=REVIEWS):
    """The README's recipe, written out independently."""
    breakers = "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    rows = []
    for (s, pol, rid, _), text in reviews.items():
        if s == split:
            for c in breakers:
                text = text.replace(c, " ")
            rows.append((1 if pol == "pos" else 0, rid, text))
    rows.sort()
    random.Random(20110619).shuffle(rows)
    return [f"{label}\t{text}\n" for label, _, text in rows]


def sha256_of(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_load_imdb_downloads_verifies_and_builds(tmp_path):
    archive = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    target = tmp_path / "data"
    (xtr, ytr), (xte, yte) = load_imdb(target, url=archive.as_uri(), sha256=sha256_of(archive))
    assert sorted(p.name for p in target.iterdir()) == ["test.tsv.gz", "train.tsv.gz"]  # no temp left
    for split in ("train", "test"):
        raw = (target / f"{split}.tsv.gz").read_bytes()
        assert raw[:4] == b"\x1f\x8b\x08\x00" and raw[4:8] == b"\0\0\0\0"  # no name, mtime 0
        assert raw[8] == 2  # XFL: compresslevel 9
        assert gzip.decompress(raw).decode().splitlines(keepends=True) == expected_lines(split)
    assert len(xtr) == 6 and sorted(ytr.tolist()) == [0, 0, 0, 0, 1, 1]
    assert "tab here and nel and ls ps  cr vt ff fs gs rs  us\x1f kept" in xtr  # U+001F is not replaced
    assert xte in (["Test positive.", "Test negative."], ["Test negative.", "Test positive."])
    # Found locally the second time: no download (an unreachable URL would fail otherwise).
    assert load_imdb(target, url=(tmp_path / "gone.tar.gz").as_uri())[0][0] == xtr


def test_load_imdb_default_target_is_cache(tmp_path, isolated_home):
    archive = make_archive(tmp_path / "a.tar.gz")
    load_imdb(url=archive.as_uri(), sha256=sha256_of(archive))
    assert (isolated_home / ".cache" / "fastscale" / "imdb" / "train.tsv.gz").is_file()


def test_load_imdb_wrong_sha256_leaves_nothing(tmp_path):
    archive = make_archive(tmp_path / "aclImdb_v1.tar.gz")
    target = tmp_path / "data"
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_imdb(target, url=archive.as_uri(), sha256="0" * 64)
    assert list(target.iterdir()) == []


def test_load_imdb_unreachable_says_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_imdb(tmp_path / "data", url=(tmp_path / "missing.tar.gz").as_uri())
    msg = str(info.value)
    assert "FASTSCALE_DATA" in msg and "imdb_from_archive" in msg and datasets.IMDB_SHA256 in msg
    assert list((tmp_path / "data").iterdir()) == []


def test_imdb_from_archive_rejects_contradicting_rating(tmp_path):
    bad = dict(REVIEWS)
    bad[("train", "pos", 99, 3)] = "a 3/10 review in pos"
    archive = make_archive(tmp_path / "bad.tar.gz", bad)
    with pytest.raises(ValueError, match="rating 3"):
        imdb_from_archive(archive, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.slow  # ~6 s of CPU: 25,000 reviews packed, rebuilt and gzipped at level 9
def test_imdb_from_archive_rebuilds_the_shared_train_file_bit_for_bit(tmp_path):
    """Invert the README's sort + shuffle on the shared train file (aclImdb's ids are
    0..12499 per class), pack it as aclImdb/ files, rebuild, and compare with its sha256."""
    d = imdb_dir()
    if d is None:
        pytest.skip("IMDB data not found (set FASTSCALE_DATA or provide ../shared/data/imdb)")
    texts, labels = load_tsv(d / "train.tsv.gz")
    order = [(label, rid) for label in (0, 1) for rid in range(12500)]
    random.Random(20110619).shuffle(order)
    assert [lab for lab, _ in order] == labels.tolist()  # the recipe explains every label
    reviews = {("train", "pos" if lab else "neg", rid, 10 if lab else 1): t for (lab, rid), t in zip(order, texts)}
    reviews[("test", "pos", 0, 8)] = "tiny test split"
    archive = make_archive(tmp_path / "full.tar", reviews, compress="")  # uncompressed: faster
    out = imdb_from_archive(archive, tmp_path / "out")
    assert sha256_of(out / "train.tsv.gz") == SHARED_TRAIN_SHA256
