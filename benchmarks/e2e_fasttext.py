"""The whole `fastscale train` command against fastText's defaults, one after the other.

    python benchmarks/e2e_fasttext.py [IMDB_DIR] [--runs N]

Each contender runs in a fresh process and is timed from process start to its final result
(reading the raw files, tokenizing, training, evaluating); peak memory is that process's
maximum resident set size.  fastText (`pip install fasttext-numpy2`) gets its usual input,
`__label__<y> <text>` lines written beforehand (not timed), and trains with its defaults and
2 threads; fastscale reads the `label<TAB>text` .tsv.gz files itself.
"""
from __future__ import annotations

import argparse
import gzip
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FASTTEXT = """
import sys, fasttext
m = fasttext.train_supervised(input=sys.argv[1], thread=2, verbose=0{extra})
n, p, r = m.test(sys.argv[2])
print(f"ACC {{p:.4f}}")
"""


def run(cmd, env=None):
    """(wall seconds, peak RSS MB, stdout) of one child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}):\n{out[-3000:]}")
    return wall, usage.ru_maxrss / 1024, out


def fasttext_files(imdb: Path, tmp: Path):
    paths = []
    for split in ("train", "test"):
        dst = tmp / f"{split}.ft.txt"
        with gzip.open(imdb / f"{split}.tsv.gz", "rt", encoding="utf-8") as f, open(dst, "w", encoding="utf-8") as g:
            for line in f:
                label, text = line.rstrip("\n").split("\t", 1)
                g.write(f"__label__{label} {text}\n")
        paths.append(str(dst))
    return paths


def main(argv=None):
    here = Path(__file__).resolve()
    default = next((p / "shared" / "data" / "imdb" for p in here.parents if (p / "shared" / "data" / "imdb").is_dir()), None)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("imdb", nargs="?", default=default, type=Path)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args(argv)
    if args.imdb is None or not (args.imdb / "train.tsv.gz").exists():
        sys.exit("IMDB not found: pass the folder holding train.tsv.gz and test.tsv.gz")
    train, test = str(args.imdb / "train.tsv.gz"), str(args.imdb / "test.tsv.gz")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ft_train, ft_test = fasttext_files(args.imdb, Path(tmp))
        contenders = [
            ("fastText defaults", [sys.executable, "-c", FASTTEXT.format(extra=""), ft_train, ft_test]),
            ("fastscale train", [sys.executable, "-m", "fastscale", "train", "--train", train, "--test", test,
                                 "--out", str(Path(tmp) / "fs1")]),
            ("fastText wordNgrams=2", [sys.executable, "-c", FASTTEXT.format(extra=", wordNgrams=2"), ft_train, ft_test]),
            ("fastscale train --ngrams 2", [sys.executable, "-m", "fastscale", "train", "--train", train, "--test", test,
                                            "--ngrams", "2", "--out", str(Path(tmp) / "fs2")]),
        ]
        for _ in range(args.runs):
            for name, cmd in contenders:
                wall, rss, out = run(cmd)
                m = re.search(r"ACC ([0-9.]+)", out) or re.search(r"test accuracy\s*\|\s*([0-9.]+)", out)
                acc = float(m.group(1)) if m else float("nan")
                rows.append((name, wall, acc, rss))
                print(f"{name:28s} {wall:7.2f} s   test accuracy {acc:.4f}   peak RSS {rss:7.0f} MB", flush=True)
    return rows


if __name__ == "__main__":
    main()
