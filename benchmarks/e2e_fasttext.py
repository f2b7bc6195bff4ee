"""The whole `fastscale train` command against fastText's defaults, one after the other.

    python benchmarks/e2e_fasttext.py [IMDB_DIR] [--runs N] [--only-origin]

Each contender runs in a fresh process and is timed from process start to its final result
(reading the raw files, tokenizing, training, evaluating, and for fastscale writing the model,
history.json and the training-curve picture); peak memory is that process's maximum resident
set size (fastscale's picture is drawn by a child process, alive for the whole command: its
own peak is shown after the "+"; the sum bounds the command's peak).  fastText
(`pip install fasttext-numpy2`) gets its usual input, `__label__<y> <text>` lines written
beforehand (not timed), and trains with its defaults and 2 threads; fastscale reads the
`label<TAB>text` .tsv.gz files itself.  With --runs N the contenders take turns N times and
the medians are compared.  The issue's bars are checked at the end: the origin command
faster than fastText with test accuracy at most 0.005 below it; `--ngrams 2` at least 0.89
in less than twice fastText's time; every fastscale run under 1 GB.
"""
from __future__ import annotations

import argparse
import compileall
import gzip
import json
import os
import re
import statistics
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


def load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def main(argv=None):
    here = Path(__file__).resolve()
    default = next((p / "shared" / "data" / "imdb" for p in here.parents if (p / "shared" / "data" / "imdb").is_dir()), None)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("imdb", nargs="?", default=default, type=Path)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--only-origin", action="store_true", help="skip the two bigram contenders")
    args = ap.parse_args(argv)
    if args.imdb is None or not (args.imdb / "train.tsv.gz").exists():
        sys.exit("IMDB not found: pass the folder holding train.tsv.gz and test.tsv.gz")
    train, test = str(args.imdb / "train.tsv.gz"), str(args.imdb / "test.tsv.gz")
    results: dict[str, list] = {}
    # An installed package carries compiled bytecode (fastText's Python wrapper does); a run
    # from a checkout under PYTHONDONTWRITEBYTECODE=1 would recompile fastscale's modules
    # in every process (~60 ms), so compile them once here.
    import fastscale

    compileall.compile_dir(Path(fastscale.__file__).parent, quiet=1)
    print(f"load average {load():.2f} at the start", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        ft_train, ft_test = fasttext_files(args.imdb, Path(tmp))

        def fastscale(out, *extra):
            return [sys.executable, "-m", "fastscale", "train", "--train", train, "--test", test, "-q",
                    "--out", str(Path(tmp) / out), *extra]

        contenders = [
            ("fastText defaults", [sys.executable, "-c", FASTTEXT.format(extra=""), ft_train, ft_test], None),
            ("fastscale train", fastscale("fs1"), "fs1"),
            ("fastText wordNgrams=2", [sys.executable, "-c", FASTTEXT.format(extra=", wordNgrams=2"), ft_train, ft_test],
             None),
            ("fastscale train --ngrams 2", fastscale("fs2", "--ngrams", "2"), "fs2"),
        ]
        if args.only_origin:
            contenders = contenders[:2]
        for _ in range(args.runs):
            for name, cmd, out in contenders:
                wall, rss, text = run(cmd)
                m = re.search(r"ACC ([0-9.]+)", text) or re.search(r"test accuracy\s*\|\s*([0-9.]+)", text)
                acc = float(m.group(1)) if m else float("nan")
                extra, phases = "", None
                if out is not None:
                    rec = json.loads((Path(tmp) / out / "history.json").read_text())
                    phases = rec["seconds"]["phases"]
                    plot = rec.get("peak_rss_mb", {}).get("plot")
                    extra = f" + {plot:.0f}" if plot else ""
                results.setdefault(name, []).append((wall, acc, rss, phases))
                print(f"{name:28s} {wall:7.2f} s   test accuracy {acc:.4f}   peak RSS {rss:5.0f}{extra} MB", flush=True)
                if phases:
                    print("    " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()), flush=True)
    print(f"load average {load():.2f} at the end")
    summary = {name: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs), max(r[2] for r in rs))
               for name, rs in results.items()}
    if args.runs > 1:
        print(f"medians of {args.runs} runs:")
        for name, (wall, acc, rss) in summary.items():
            print(f"{name:28s} {wall:7.2f} s   test accuracy {acc:.4f}   peak RSS {rss:5.0f} MB (max)")
    checks(summary)
    return results


def checks(s):
    ft_t, ft_a, _ = s["fastText defaults"]
    t, a, rss = s["fastscale train"]
    print(f"origin command: {t:.2f} s vs fastText {ft_t:.2f} s ({t / ft_t:.2f}x) "
          f"{'OK' if t < ft_t else 'SLOWER'}; accuracy {a:.4f} vs {ft_a:.4f} "
          f"{'OK' if a >= ft_a - 0.005 else 'MORE THAN 0.005 BELOW'}; {rss:.0f} MB {'OK' if rss < 1024 else 'OVER 1 GB'}")
    if "fastscale train --ngrams 2" in s:
        t, a, rss = s["fastscale train --ngrams 2"]
        print(f"--ngrams 2: {t:.2f} s = {t / ft_t:.2f}x fastText's default time {'OK' if t < 2 * ft_t else 'NOT < 2x'}; "
              f"accuracy {a:.4f} {'OK' if a >= 0.89 else 'BELOW 0.89'}; {rss:.0f} MB {'OK' if rss < 1024 else 'OVER 1 GB'}")


if __name__ == "__main__":
    main()
