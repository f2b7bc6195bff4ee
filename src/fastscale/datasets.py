"""Labelled text data: a TSV loader and the IMDB reviews (local copy or verified download).

File format everywhere: UTF-8, one example per line, ``label<TAB>text``, optionally gzip.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np

__all__ = ["IMDB_SHA256", "IMDB_URL", "find_imdb", "imdb_from_archive", "load_imdb", "load_tsv"]

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# The widely published sha256 of aclImdb_v1.tar.gz (84,125,825 bytes).  It could not be
# verified against the archive itself here (no network on the machine that wrote this).
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
IMDB_FILES = ("train.tsv.gz", "test.tsv.gz")

_GZIP_MAGIC = b"\x1f\x8b"
_LABEL = re.compile(r"-?[0-9]+")
_FAST_LABELS = {"0": 0, "1": 1}


def _open_binary(path):
    """``path`` opened for binary reading, gunzipped when it starts with gzip's magic bytes."""
    f = open(path, "rb")
    try:
        magic = f.read(2)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    if magic == _GZIP_MAGIC:
        # BufferedReader: GzipFile's own line iteration is several times slower.
        return io.BufferedReader(gzip.GzipFile(fileobj=f, mode="rb"), buffer_size=1 << 20), f
    return f, f


def load_tsv(path, *, classes=None):
    """Read ``label<TAB>text`` lines from a plain or gzip (by magic bytes) UTF-8 file.

    Returns ``(texts: list[str], labels: np.ndarray int64)``.  Each line is split on its first
    TAB; ``\\n`` and ``\\r\\n`` endings are accepted.  A line without a TAB (a blank line
    included), whose label is empty, not an integer (a header line such as ``label<TAB>text``
    included) or outside int64, or, with ``classes`` (e.g. ``(0, 1)``), not one of those
    classes, raises ValueError naming the file and the 1-based line; so do old-Mac CR-only
    line endings (which would otherwise read as one long line) and a corrupt or truncated
    gzip stream.  Invalid UTF-8 is replaced by U+FFFD and reported with one warning giving the
    number of lines affected.  An empty file raises ValueError.  Lines of any length are
    read; the file is read once, streaming.
    """
    path = os.fspath(path)
    allowed = None if classes is None else {_class(c) for c in classes}
    texts, labels = [], []
    bad_lines, first_bad = 0, 0
    stream, raw = _open_binary(path)
    with raw, stream:
        lineno = 0
        for lineno, line in _lines(stream, path):
            # Binary iteration splits on b"\n" only, so U+0085 / U+2028 in a text never split it.
            if line.endswith(b"\n"):
                line = line[:-2] if line.endswith(b"\r\n") else line[:-1]
            elif line.endswith(b"\r"):
                line = line[:-1]
            try:
                s = line.decode("utf-8")
            except UnicodeDecodeError:
                s = line.decode("utf-8", errors="replace")
                bad_lines += 1
                first_bad = first_bad or lineno
            if lineno == 1 and s.startswith("\ufeff"):
                s = s[1:]  # a UTF-8 byte-order mark is not part of the first label
            label, tab, text = s.partition("\t")
            if not tab:
                what = "no TAB (an empty line)" if not s.strip() else "no TAB"
                raise ValueError(f"{path}:{lineno}: expected 'label<TAB>text', found {what}")
            if "\r" in text and _CR_LINE.search(text):
                raise ValueError(
                    f"{path}:{lineno}: a CR followed by 'label<TAB>' inside the text: the file seems to use "
                    "old-Mac CR-only line endings; convert them to \\n (or \\r\\n)"
                )
            y = _FAST_LABELS.get(label)
            if y is None:
                if not label:
                    raise ValueError(f"{path}:{lineno}: empty label")
                if not _LABEL.fullmatch(label):
                    hint = " (a header line? remove it)" if lineno == 1 else ""
                    raise ValueError(f"{path}:{lineno}: label must be an integer, got {label[:40]!r}{hint}")
                y = int(label)
                if not _INT64_MIN <= y <= _INT64_MAX:
                    raise ValueError(f"{path}:{lineno}: label {label[:40]} does not fit in int64")
            if allowed is not None and y not in allowed:
                raise ValueError(f"{path}:{lineno}: label {y} is not one of the declared classes {sorted(allowed)}")
            labels.append(y)
            texts.append(text)
    if lineno == 0:
        raise ValueError(f"{path}: the file is empty (expected 'label<TAB>text' lines)")
    if bad_lines:
        warnings.warn(
            f"{path}: {bad_lines} line(s) contained invalid UTF-8 (first at line {first_bad}); "
            "the invalid bytes were replaced by U+FFFD",
            UnicodeWarning,
            stacklevel=2,
        )
    return texts, np.asarray(labels, dtype=np.int64)


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_CR_LINE = re.compile(r"\r-?[0-9]+\t")


def _class(c):
    if isinstance(c, bool) or not isinstance(c, (int, np.integer)):
        raise TypeError(f"load_tsv: 'classes' must hold integers, got {c!r}")
    return int(c)


def _lines(stream, path):
    """enumerate(stream, 1), turning a corrupt / truncated gzip stream into a ValueError that
    names the file and the line where it broke off."""
    import zlib

    lineno = 0
    it = iter(stream)
    while True:
        try:
            line = next(it)
        except StopIteration:
            return
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise ValueError(f"{path}:{lineno + 1}: the gzip data is corrupt or truncated ({e})") from e
        lineno += 1
        yield lineno, line


# ---------------------------------------------------------------------------- IMDB
def _candidate_dirs(data_dir):
    dirs = []
    for base in (data_dir, os.environ.get("FASTSCALE_DATA")):
        if base:
            base = Path(base).expanduser()
            dirs += [base, base / "imdb"]  # the imdb folder itself, or a data root holding it
    dirs.append(_cache_dir())
    return dirs


def _cache_dir():
    return Path("~/.cache/fastscale/imdb").expanduser()


def find_imdb(data_dir=None):
    """The first folder holding both ``train.tsv.gz`` and ``test.tsv.gz`` among ``data_dir``,
    ``$FASTSCALE_DATA`` (each itself or its ``imdb/`` subfolder) and ``~/.cache/fastscale/imdb``;
    None if there is none."""
    for d in _candidate_dirs(data_dir):
        if all((d / f).is_file() for f in IMDB_FILES):
            return d
    return None


def load_imdb(data_dir=None, *, url=IMDB_URL, sha256=IMDB_SHA256, download=True):
    """The 50,000 labelled IMDB reviews: ``((train_texts, y_train), (test_texts, y_test))``.

    Reads ``train.tsv.gz`` / ``test.tsv.gz`` from the first folder ``find_imdb`` finds.
    Otherwise (``download=True``) fetches ``url`` (the original aclImdb_v1.tar.gz), checks its
    ``sha256``, and converts it into the two files in ``data_dir`` (default
    ``~/.cache/fastscale/imdb``), byte-identical to the project's shared copy.  Labels: 1 =
    positive, 0 = negative.
    """
    found = find_imdb(data_dir)
    if found is None:
        target = Path(data_dir).expanduser() if data_dir else _cache_dir()
        if not download:
            raise FileNotFoundError(_how_to_get(data_dir, target, url, sha256, None))
        try:
            target.mkdir(parents=True, exist_ok=True)
            archive = _download(url, sha256, target)
        except (OSError, ValueError) as err:
            if isinstance(err, ValueError):
                raise  # a checksum mismatch is not "no network": say it as it is
            raise FileNotFoundError(_how_to_get(data_dir, target, url, sha256, err)) from err
        try:
            imdb_from_archive(archive, target)
        finally:
            os.unlink(archive)
        found = target
    train = load_tsv(found / "train.tsv.gz", classes=(0, 1))
    test = load_tsv(found / "test.tsv.gz", classes=(0, 1))
    return train, test


def _how_to_get(data_dir, target, url, sha256, err):
    looked = ", ".join(str(d) for d in _candidate_dirs(data_dir))
    why = f"downloading {url} failed ({err})" if err else "download=False"
    return (
        f"IMDB data not found (looked in: {looked}) and {why}.  To get it: either set "
        f"FASTSCALE_DATA to a folder holding train.tsv.gz and test.tsv.gz (or an imdb/ folder "
        f"with them), or download {url} (sha256 {sha256}) on a machine with internet access, "
        f"copy it here and run: python -c \"from fastscale.datasets import imdb_from_archive; "
        f"imdb_from_archive('aclImdb_v1.tar.gz', '{target}')\""
    )


def _download(url, sha256, target):
    """Download ``url`` into a temporary file in ``target``; return its path once its sha256
    matches (ValueError and no file left otherwise)."""
    import urllib.request  # ~30 ms of imports (http, email): only when downloading

    fd, tmp = tempfile.mkstemp(dir=target, prefix=".aclImdb_v1.", suffix=".tar.gz.part")
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            while chunk := resp.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        got = digest.hexdigest()
        if got != sha256.lower():
            raise ValueError(f"{url}: sha256 mismatch: expected {sha256}, got {got}; the download was deleted")
        return tmp
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


_MEMBER = re.compile(r"(?:\./)?aclImdb/(train|test)/(pos|neg)/([0-9]+)_([0-9]+)\.txt")
# The README's step 4: characters that would break a TSV line (or str.splitlines) -> space.
_LINE_BREAKERS = str.maketrans({c: " " for c in "\t\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"})
_SHUFFLE_SEED = 20110619


def imdb_from_archive(archive, out_dir):
    """Convert aclImdb_v1.tar.gz into ``out_dir/{train,test}.tsv.gz``, exactly as the shared
    copy's README ("How the files were built") describes, so the output is byte-identical.

    Each output file is written to a temporary file in ``out_dir`` and renamed into place, so
    a reader never sees a half-written file.  The archive is not checked here (``load_imdb``
    checks its sha256 when it downloads it).
    """
    import tarfile

    out_dir = Path(out_dir).expanduser()
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "test": []}
    with tarfile.open(os.fspath(archive), mode="r|*") as tar:  # streaming, one pass; gzip or any tarfile compression
        for member in tar:
            m = _MEMBER.fullmatch(member.name)
            if m is None or not member.isfile():
                continue
            split, polarity, review_id, rating = m.group(1), m.group(2), int(m.group(3)), int(m.group(4))
            label = 1 if polarity == "pos" else 0
            if (label == 1 and rating < 7) or (label == 0 and rating > 4):
                raise ValueError(f"{archive}: {member.name}: rating {rating} contradicts its folder {polarity!r}")
            text = tar.extractfile(member).read().decode("utf-8")  # strict, as the README says
            splits[split].append((label, review_id, text.translate(_LINE_BREAKERS)))
    for split, rows in splits.items():
        if not rows:
            raise ValueError(f"{archive}: no aclImdb/{split}/(pos|neg)/<id>_<rating>.txt reviews found")
    for split, rows in splits.items():
        rows.sort(key=lambda r: (r[0], r[1]))
        random.Random(_SHUFFLE_SEED).shuffle(rows)
        _write_tsv_gz_atomic(out_dir / f"{split}.tsv.gz", rows)
    return out_dir


def _write_tsv_gz_atomic(path, rows):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as raw:
            # filename="" and mtime=0: no name or time in the header, reproducible bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0) as gz:
                for label, _, text in rows:
                    gz.write(f"{label}\t{text}\n".encode("utf-8"))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
