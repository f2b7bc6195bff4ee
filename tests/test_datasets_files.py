"""Awkward data files (issue 7, point 9): each is handled or rejected with a message that
names the file and the line.  Every case runs on the plain file and on its gzip."""
from __future__ import annotations

import gzip
import re
import warnings

import numpy as np
import pytest

from fastscale.datasets import load_tsv


@pytest.fixture(params=[False, True], ids=["plain", "gzip"])
def write(request, tmp_path):
    def w(data: bytes, name="data.tsv"):
        p = tmp_path / name
        p.write_bytes(gzip.compress(data) if request.param else data)
        return p

    return w


def _rejects(path, line, what):
    with pytest.raises(ValueError) as e:
        load_tsv(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}:{line}: ") and re.search(what, msg), msg
    return msg


# ---------------------------------------------------------------- rejected, with file:line
def test_empty_file(write):
    p = write(b"")
    with pytest.raises(ValueError, match=re.escape(str(p)) + ".*empty"):
        load_tsv(p)


@pytest.mark.parametrize("data", [b"\n", b"\r\n", b"\n\n\n", b"   \n"])
def test_only_blank_lines(write, data):
    _rejects(write(data), 1, "no TAB")


def test_header_line(write):
    msg = _rejects(write(b"label\ttext\n1\tgood\n0\tbad\n"), 1, "must be an integer, got 'label'")
    assert "header" in msg


@pytest.mark.parametrize(
    "label",
    [b"pos", b"1.0", b"1e3", b"+1", b" 1", b"1 ", b"0x1", b"\xd9\xa1",  # Arabic-Indic digit one
     b"true", b"NaN"],
)
def test_labels_that_are_not_integers(write, label):
    _rejects(write(b"1\tok\n" + label + b"\tthe text\n"), 2, "integer")


def test_label_beyond_int64(write):
    # Was an OverflowError from np.asarray after the whole file was read, naming nothing.
    _rejects(write(b"1\tok\n0\tok\n99999999999999999999\tbig\n"), 3, "does not fit in int64")


def test_labels_outside_declared_classes(write):
    p = write(b"0\ta\n1\tb\n2\tc\n")
    with pytest.raises(ValueError, match=re.escape(f"{p}:3: label 2 is not one of the declared classes [0, 1]")):
        load_tsv(p, classes=(0, 1))
    assert load_tsv(p, classes=[0, 1, 2])[1].tolist() == [0, 1, 2]
    assert load_tsv(p)[1].tolist() == [0, 1, 2]  # without classes, any integer label is a class
    p = write(b"0\ta\n-1\tb\n", name="neg.tsv")
    _rejects_classes = pytest.raises(ValueError, match=r"neg\.tsv:2: label -1 is not one")
    with _rejects_classes:
        load_tsv(p, classes=(0, 1))
    with pytest.raises(TypeError, match="classes"):
        load_tsv(p, classes=("0", "1"))


def test_line_without_tab(write):
    _rejects(write(b"1\tok\n0 no tab separates the label\n1\tok\n"), 2, "no TAB")


def test_cr_only_line_endings(write):
    # Old-Mac files would otherwise load as ONE example whose text swallows the others.
    _rejects(write(b"1\tfirst\r0\tsecond\r1\tthird\r"), 1, "CR-only line endings")


def test_truncated_gzip(tmp_path):
    data = gzip.compress(b"".join(b"%d\treview number %d\n" % (i % 2, i) for i in range(20_000)))
    p = tmp_path / "cut.tsv.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(str(p)) + r":\d+: the gzip data is corrupt or truncated"):
        load_tsv(p)


# ---------------------------------------------------------------- handled
def test_windows_line_endings(write):
    texts, labels = load_tsv(write(b"1\tfirst line\r\n0\tsecond\ttabbed\r\n1\tlast without newline"))
    assert texts == ["first line", "second\ttabbed", "last without newline"]
    assert labels.tolist() == [1, 0, 1]


def test_mixed_line_endings_and_bom(write):
    texts, labels = load_tsv(write("\ufeff0\tä\r\n1\tb\n0\tc\r\n".encode()))
    assert texts == ["ä", "b", "c"] and labels.tolist() == [0, 1, 0]


def test_a_cr_inside_a_text_is_kept(write):
    # A lone CR that is not followed by 'label<TAB>' is text, not a line ending.
    texts, _ = load_tsv(write(b"1\tcarriage\rreturn\n"))
    assert texts == ["carriage\rreturn"]


def test_ten_megabyte_line(write):
    big = b"word " * (2 * 1024 * 1024)  # 10 MB
    texts, labels = load_tsv(write(b"0\tshort\n1\t" + big + b"\n0\tafter\n"))
    assert labels.tolist() == [0, 1, 0]
    assert len(texts[1]) == len(big) and texts[1] == big.decode() and texts[2] == "after"


def test_invalid_utf8_is_replaced_with_one_warning_naming_file_and_line(write):
    p = write(b"1\tok\n0\tbad \xff\xfe here\n1\t\xc3\n1\tfine\n")
    with pytest.warns(UnicodeWarning) as rec:
        texts, labels = load_tsv(p)
    assert len(rec) == 1
    msg = str(rec[0].message)
    assert msg.startswith(str(p)) and "2 line(s)" in msg and "first at line 2" in msg
    assert texts == ["ok", "bad \ufffd\ufffd here", "\ufffd", "fine"] and labels.tolist() == [1, 0, 1, 1]


def test_invalid_utf8_in_the_label(write):
    _rejects(write(b"1\tok\n\xff\ttext\n"), 2, "integer")


def test_nul_bytes_and_unicode_separators_stay_in_the_text(write):
    texts, _ = load_tsv(write("1\ta\x00b\u2028c\x85d\x0be\n".encode()))
    assert texts == ["a\x00b\u2028c\x85d\x0be"]


def test_valid_files_load_without_warnings(write):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        texts, labels = load_tsv(write(b"0\ta\n1\tb\n"), classes=(0, 1))
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1]
