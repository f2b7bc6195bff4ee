"""The ``fastscale`` command: train, evaluate, predict, info, bench, sweep.

    fastscale train [--train train.tsv.gz --test test.tsv.gz] [--epochs 10 ...] [--out DIR]
    fastscale evaluate DIR/model.fsm test.tsv.gz
    fastscale predict DIR/model.fsm "a wonderful film" "dull and far too long"
    fastscale info                      # backends, SIMD level, threads, CUDA build
    fastscale bench                     # the kernels against NumPy / PyTorch, with GB/s
    fastscale sweep plan|run|status|fit|report ...   # scaling-law sweeps (README)

Data files are ``label<TAB>text`` lines (plain or .gz).  Without ``--train``, ``train`` uses
the IMDB reviews from ``fastscale.datasets.load_imdb``'s folders (``$FASTSCALE_DATA``,
``~/.cache/fastscale/imdb``) or ``../shared/data/imdb``, and says how to get them if absent.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path


def _bench(args) -> int:
    from fastscale import bench

    bench.run(threads=args.threads, budget=args.budget)
    return 0


def _info(args) -> int:
    import numpy as np

    import fastscale
    from fastscale import _backends

    print(f"fastscale {fastscale.__version__}  (python {platform.python_version()}, numpy {np.__version__}, {platform.machine()})")
    print("backends:")
    for name, reason in fastscale.backends().items():
        print(f"  {name:6s} {'available' if reason is None else 'unavailable: ' + reason}")
    if _backends.status("cpp") is None:
        info = _backends.module("cpp").info()
        print(
            f"cpp build: {info['compiler']}, SIMD {info['isa']} (detected {info['isa_detected']}), "
            f"OpenMP {info['openmp']}, {info['num_threads']} threads of {info['num_procs']} processors"
        )
    if _backends.status("cuda") is None:
        info = _backends.module("cuda").info()
        print(f"cuda build: {info}")
    print(f"FASTSCALE_BACKEND={os.environ.get('FASTSCALE_BACKEND', '')!r}")
    return 0


class CLIError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


# ---------------------------------------------------------------------------- data
SHARED_IMDB = Path("..") / "shared" / "data" / "imdb"


def _find_imdb():
    """load_imdb's folders first, then ../shared/data/imdb (the project layout), also from a
    checkout nested deeper (shared/data/imdb in any folder above the current one)."""
    from fastscale import datasets

    found = datasets.find_imdb()
    if found is not None:
        return found
    for d in [SHARED_IMDB] + [p / "shared" / "data" / "imdb" for p in Path.cwd().parents]:
        if all((d / f).is_file() for f in ("train.tsv.gz", "test.tsv.gz")):
            return d
    return None


def _how_to_get_imdb() -> str:
    return (
        "no training data: pass --train PATH --test PATH (files of 'label<TAB>text' lines, plain or .gz), "
        "or get the IMDB reviews, looked for in $FASTSCALE_DATA, ~/.cache/fastscale/imdb and ../shared/data/imdb "
        "(or shared/data/imdb in any folder above this one):\n"
        "  fastscale train --download         # downloads the original aclImdb_v1.tar.gz (84 MB, sha256-checked)\n"
        "                                     # into ~/.cache/fastscale/imdb, then trains\n"
        "  or: python -c 'import fastscale.datasets as d; d.load_imdb()'\n"
        "  or: export FASTSCALE_DATA=/folder/with/train.tsv.gz+test.tsv.gz"
    )


def _load_data(args):
    """``(train, test, source)``; the two files are read at the same time (gunzip releases the
    GIL, so on two cores the test file costs little extra wall time)."""
    from concurrent.futures import ThreadPoolExecutor

    from fastscale import datasets

    if args.train:
        if not args.test:
            raise CLIError("--train needs --test too (a held-out file of 'label<TAB>text' lines)")
        with ThreadPoolExecutor(1) as pool:
            test = pool.submit(datasets.load_tsv, args.test)
            train = datasets.load_tsv(args.train)
            return train, test.result(), f"{args.train} / {args.test}"
    if args.test:
        raise CLIError("--test given without --train")
    found = _find_imdb()
    if found is not None:
        (train, test) = datasets.load_imdb(found, download=False)
        return train, test, f"IMDB from {found}"
    if args.download:
        train, test = datasets.load_imdb()
        return train, test, "IMDB (downloaded)"
    raise CLIError(_how_to_get_imdb())


def _process_seconds():
    """Seconds since this process started (interpreter start-up and imports included), or
    None where /proc is missing."""
    try:
        with open("/proc/self/stat", "rb") as f:
            start_ticks = int(f.read().rsplit(b")", 1)[1].split()[19])
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        wall = max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    # /proc gives the fork, not the exec: `bash -c "pip install . && fastscale train"` execs
    # fastscale in the shell's process, whose clock started before pip (CI showed a 44 s
    # "startup").  Start-up is CPU-bound imports, so a wall time far past this process's CPU
    # time means an earlier program owned the process: report the CPU time then.
    cpu = sum(os.times()[:2])
    return cpu if wall > cpu + 2.0 else wall


# ---------------------------------------------------------------------------- train
# The origin's settings, and the defaults with --ngrams 2+ (benchmarks/README.md measures
# them: buckets x embed_dim x epochs against test accuracy, seconds and memory).  Hashed
# bigrams make the table 10,000 + buckets rows: 16 columns keep its parameters and Adam's
# moments at 201 MB, lazy Adam updates only the rows a batch touches (dense Adam reads all
# of them every step), and the model fits the training set by epoch 3.
ORIGIN = {"embed_dim": 128, "epochs": 10, "init": "torch"}
NGRAM = {"embed_dim": 16, "epochs": 5, "buckets": 2**20, "lazy": True, "init": "keras"}


def _resolve_defaults(args):
    """Fill the options left unset with the origin's settings, or the n-gram ones."""
    d = NGRAM if args.ngrams > 1 else ORIGIN
    if args.embed_dim is None:
        args.embed_dim = d["embed_dim"]
    if args.epochs is None:
        args.epochs = d["epochs"]
    if args.init is None:
        args.init = d["init"]
    if args.ngrams > 1:
        if args.buckets is None:
            args.buckets = NGRAM["buckets"]
        if args.lazy is None:
            args.lazy = NGRAM["lazy"]
    return args


def _train(args) -> int:
    _resolve_defaults(args)
    t_start = time.perf_counter()
    before = _process_seconds()  # interpreter start-up + imports, before _train began
    phases = {"startup": before} if before is not None else {}
    cpu = {"startup": time.process_time()} if before is not None else {}  # CPU seconds (all threads)
    mark = [t_start, time.process_time()]

    def phase(name):
        now, now_cpu = time.perf_counter(), time.process_time()
        phases[name] = phases.get(name, 0.0) + now - mark[0]
        cpu[name] = cpu.get(name, 0.0) + now_cpu - mark[1]
        mark[0], mark[1] = now, now_cpu

    # matplotlib's import (~0.6 s) and drawing run in a child process, beside reading and
    # tokenizing here: no GIL shared with the training loop, and the picture is drawn while
    # this process evaluates and saves the model.
    plotter = _Plotter()
    try:
        return _train_run(args, plotter, phases, cpu, phase, t_start, before)
    finally:
        plotter.close()


def _train_run(args, plotter, phases, cpu, phase, t_start, before):
    import numpy as np

    from fastscale import _textmodel as R
    from fastscale.nn import saving

    (train_texts, y_train), (test_texts, y_test), source = _load_data(args)
    phase("read")
    print(f"data: {source}: {len(train_texts):,} training and {len(test_texts):,} test texts ({phases['read']:.2f}s)")

    tok = R.make_tokenizer(args.num_words, "<OOV>", args.ngrams, args.buckets)
    tok.fit_on_texts(train_texts)
    phase("tokenizer fit")
    x, meta = R.fit_encode(tok, train_texts, input=args.input, maxlen=args.maxlen)
    x_test = R.encode(tok, test_texts, meta)
    del train_texts, test_texts  # the ids are all that is needed from here on
    phase("encode")
    t_tok = phases["tokenizer fit"] + phases["encode"]
    if meta["input"] == "padded":
        shape = f"padded to {meta['maxlen']} ids"
    else:
        shape = "bags (no padding" + (f", at most {meta['maxlen']} ids" if meta["maxlen"] is not None else "") + ")"
    print(f"tokenized in {t_tok:.2f}s: {tok.num_ids:,} ids ({args.num_words} words"
          + (f" + {tok.buckets:,} n-gram buckets" if args.ngrams > 1 else "") + f"), {shape}")

    classes, idx = R.label_encoding(y_train)
    test_idx = np.searchsorted(classes, y_test)
    unknown = (test_idx >= len(classes)) | (classes[np.minimum(test_idx, len(classes) - 1)] != y_test)
    if unknown.any():
        raise CLIError(f"test labels {sorted(set(np.asarray(y_test)[unknown].tolist()))} do not occur in the training data")
    n = len(classes)
    model = R.build_model(tok.num_ids, n, args.embed_dim, args.hidden, init=R.INITS[args.init])
    R.compile_model(model, n, args.lr, args.lazy, args.seed)
    model.tokenizer = tok
    model.metadata = {**meta, "labels": classes.tolist()}
    if args.verbose:
        model.summary()
    phase("model init")

    history = model.fit(x, idx, epochs=args.epochs, batch_size=args.batch_size,
                        validation_split=args.validation_split, verbose=1 if args.verbose else 0)
    phase("fit")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    picture = out / "training_curve.png"
    plotter.draw(history.history, picture)  # drawn by the child while this process goes on
    # Evaluation needs no small batches: one forward per 4,096 texts.
    test_loss, test_acc = model.evaluate(x_test, test_idx, batch_size=max(args.batch_size, _EVAL_BATCH), verbose=0)
    phase("evaluate")
    stats = history.epoch_stats
    sec_epoch = sum(s["seconds"] for s in stats) / max(len(stats), 1)
    tok_s = sum(s["tokens"] for s in stats) / max(sum(s["seconds"] for s in stats), 1e-9)

    model_path = out / "model.fsm"
    # Weights, tokenizer and settings: what evaluate / predict need.  Adam's moments would
    # triple the file (and its write time) for a command that never resumes training.
    saving.save_model(model, model_path, include_optimizer=False)
    phase("save model")
    picture = plotter.wait()
    phase("picture")
    wall = time.perf_counter() - t_start
    total = wall + (before or 0.0)
    rss = _peak_rss_mb()
    record = {
        "history": history.history,
        "epoch_stats": stats,
        "test": {"loss": test_loss, "accuracy": test_acc},
        "seconds_per_epoch": sec_epoch,
        "tokens_per_s": tok_s,
        "seconds": {"read": phases["read"], "tokenize": t_tok, "evaluate": phases["evaluate"], "total": total,
                    "phases": dict(phases), "cpu_phases": cpu},
        "peak_rss_mb": {"train": rss, "plot": plotter.peak_rss_mb},
        "args": {k: v for k, v in vars(args).items() if k != "func"},
    }
    (out / "history.json").write_text(json.dumps(record, indent=2) + "\n")

    if args.verbose:
        print("seconds: " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    rows = [
        ("test loss", f"{test_loss:.4f}"),
        ("test accuracy", f"{test_acc:.4f}"),
        ("seconds per epoch", f"{sec_epoch:.3f}"),
        ("tokens/s", f"{tok_s:,.0f}"),
        ("tokenize seconds", f"{t_tok:.2f}"),
        ("total seconds", f"{total:.2f}"),
    ]
    if rss is not None:
        rows.append(("peak memory MB", f"{rss:,.0f}" + (f" + {plotter.peak_rss_mb:,.0f} plot" if plotter.peak_rss_mb else "")))
    _table(rows)
    print(f"wrote {model_path}, {out / 'history.json'}" + (f", {picture}" if picture else ""))
    return 0


_EVAL_BATCH = 4096


def _table(rows):
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    line = f"+-{'-' * w0}-+-{'-' * w1}-+"
    print(line)
    for k, v in rows:
        print(f"| {k.ljust(w0)} | {v.rjust(w1)} |")
    print(line)


# The training-curve picture, drawn by a child interpreter that imports matplotlib while the
# parent reads and tokenizes, then waits for the history on stdin.  Figure + the Agg canvas,
# not pyplot: no backend selection, no GUI toolkit probing.
_PLOT_CHILD = r"""
import json, os, sys
os.nice(10)  # its matplotlib import runs beside the parent's reading: let the parent go first
try:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
except ImportError:
    sys.exit(3)
data = sys.stdin.read()
if not data.strip():
    sys.exit(0)  # the parent stopped before training ended: nothing to draw
job = json.loads(data)
history, path = job["history"], job["path"]
keys = [k for k in ("loss", "accuracy") if k in history]
fig = Figure(figsize=(5 * len(keys), 3.6))
axes = fig.subplots(1, len(keys), squeeze=False)
for ax, k in zip(axes[0], keys):
    epochs = range(1, len(history[k]) + 1)
    ax.plot(epochs, history[k], "o-", label=f"train {k}")
    if f"val_{k}" in history:
        ax.plot(epochs, history[f"val_{k}"], "s--", label=f"validation {k}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(k)
    ax.grid(alpha=0.3)
    ax.legend()
# Fixed margins (inches) for this fixed layout: tight_layout took a third of the drawing time,
# which the command waits for at its end.
w = 5 * len(keys)
fig.subplots_adjust(left=0.75 / w, right=1 - 0.2 / w, bottom=0.55 / 3.6, top=1 - 0.15 / 3.6, wspace=0.9 / 4.05)
fig.savefig(path, dpi=110)
"""
_NO_MATPLOTLIB = 3


class _Plotter:
    """The picture's child process: started first, given the history at the end."""

    def __init__(self):
        self.proc = None
        self.path = None
        self.peak_rss_mb = None
        self.missing = not _matplotlib_importable()
        if self.missing:
            return
        env = dict(os.environ, MPLBACKEND="Agg")
        try:
            self.proc = subprocess.Popen([sys.executable, "-c", _PLOT_CHILD], stdin=subprocess.PIPE,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        except OSError as e:
            print(f"warning: could not start the plotting process ({e}): no training-curve picture", file=sys.stderr)

    def draw(self, history, path):
        self.path = Path(path)
        if self.proc is None:
            return
        job = json.dumps({"history": history, "path": os.fspath(self.path)}, allow_nan=True)
        try:
            self.proc.stdin.write(job.encode("utf-8"))
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # the child is gone: wait() reports why

    def wait(self):
        """The picture's path once written, or None (after saying why)."""
        if self.proc is None:
            if self.missing:
                print("matplotlib is not installed (pip install 'fastscale[plot]'): skipping the training-curve picture")
            return None
        err = self.proc.stderr.read().decode("utf-8", "replace")
        proc, self.proc = self.proc, None
        if hasattr(os, "wait4"):
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = rc = os.waitstatus_to_exitcode(status)
            self.peak_rss_mb = _rss_mb(usage.ru_maxrss)
        else:
            rc = proc.wait()
        proc.stderr.close()
        if rc == _NO_MATPLOTLIB:
            print("matplotlib is not installed (pip install 'fastscale[plot]'): skipping the training-curve picture")
            return None
        if rc != 0 or not self.path.is_file():
            tail = err.strip().splitlines()[-1:] or [f"exit status {rc}"]
            print(f"warning: the training-curve picture was not written ({tail[0]})", file=sys.stderr)
            return None
        return self.path

    def close(self):
        """Ends a child that has no picture to finish (an error before training ended): killed,
        not waited for, so an error is reported without waiting for matplotlib's import."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if self.path is None:
            proc.kill()
        try:
            proc.stdin.close()
        except OSError:
            pass
        proc.wait()
        proc.stderr.close()


def _rss_mb(maxrss):
    return maxrss / (1 << 20) if sys.platform == "darwin" else maxrss / 1024  # bytes there, KiB on Linux


def _peak_rss_mb():
    try:
        import resource
    except ImportError:  # Windows
        return None
    return _rss_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _matplotlib_importable():
    if "matplotlib" in sys.modules:
        return sys.modules["matplotlib"] is not None  # None: its import is blocked here
    import importlib.util

    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


# ---------------------------------------------------------------------------- evaluate / predict
def _load(path):
    from fastscale import nn

    model = nn.load_model(path)
    if model.tokenizer is None or "input" not in model.metadata:
        raise CLIError(f"{path}: this model has no tokenizer / text settings; it was not made by 'fastscale train' "
                       "(attach model.tokenizer and model.metadata to use it here)")
    return model


def _evaluate(args) -> int:
    import numpy as np

    from fastscale import _textmodel as R
    from fastscale import datasets

    model = _load(args.model)
    texts, y = datasets.load_tsv(args.data)
    classes = np.asarray(model.metadata["labels"])
    idx = np.searchsorted(classes, y)
    if ((idx >= len(classes)) | (classes[np.minimum(idx, len(classes) - 1)] != y)).any():
        raise CLIError(f"{args.data}: labels outside the model's classes {classes.tolist()}")
    t0 = time.perf_counter()
    x = R.encode(model.tokenizer, texts, model.metadata)
    loss, acc = model.evaluate(x, idx, batch_size=args.batch_size, verbose=0)[:2]
    dt = time.perf_counter() - t0
    _table([("texts", f"{len(texts):,}"), ("loss", f"{loss:.4f}"), ("accuracy", f"{acc:.4f}"), ("seconds", f"{dt:.2f}")])
    return 0


def _predict(args) -> int:
    import numpy as np

    from fastscale import _textmodel as R

    model = _load(args.model)
    texts = args.texts if args.texts else [line.rstrip("\n") for line in sys.stdin]
    if not texts:
        return 0
    classes = model.metadata["labels"]
    p = R.class_probabilities(model, R.encode(model.tokenizer, texts, model.metadata))
    best = np.argmax(p, axis=1)
    for t, k, row in zip(texts, best, p):
        snippet = t if len(t) <= 60 else t[:57] + "..."
        print(f"{classes[k]}\t{row[k]:.4f}\t{snippet}")
    return 0


# ---------------------------------------------------------------------------- parser
def _maxlen(s):
    return None if s.lower() == "none" else _positive_int(s)


def _positive_int(s):
    v = int(s)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def _lazy(s):
    return {"auto": None, "true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[s.lower()]


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None ones (their help says what unset means)."""

    def _get_help_string(self, action):
        if action.default is None or action.nargs == 0:  # nargs 0: a flag
            return action.help
        return super()._get_help_string(action)


_OWN_COMMANDS = ("info", "bench", "train", "evaluate", "predict")


def _parser(argv):
    """The argument parser for ``argv`` (the sweep commands only when argv can name them)."""
    parser = argparse.ArgumentParser(prog="fastscale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="backends, SIMD level, threads, CUDA build")
    p.set_defaults(func=_info)

    p = sub.add_parser("bench", help="time the kernels against numpy / torch (present here); bandwidth fractions")
    p.add_argument("--threads", type=int, default=2, help="threads for fastscale and torch")
    p.add_argument("--budget", type=float, default=0.25, help="seconds of timing per entry")
    p.set_defaults(func=_bench)

    p = sub.add_parser("train", help="train the text classifier; prints a results table, writes model, history, plot",
                       formatter_class=_HelpFormatter)
    p.add_argument("--train", help="training data: 'label<TAB>text' lines (.gz ok); default: the IMDB reviews")
    p.add_argument("--test", help="test data, same format")
    p.add_argument("--download", action="store_true", help="without --train: download IMDB if it is not found locally")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help=f"training epochs (default: {ORIGIN['epochs']}, the origin's; {NGRAM['epochs']} with --ngrams 2+)")
    p.add_argument("--batch-size", type=_positive_int, default=64, help="training batch size (the origin's)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--num-words", type=_positive_int, default=10000, help="vocabulary size (Keras num_words)")
    p.add_argument("--maxlen", type=_maxlen, default=None, help="pad/truncate to this many ids (None: the longest text)")
    p.add_argument("--embed-dim", type=_positive_int, default=None,
                   help=f"embedding size (default: {ORIGIN['embed_dim']}, the origin's; {NGRAM['embed_dim']} with --ngrams 2+)")
    p.add_argument("--hidden", type=int, default=64, help="hidden Dense units (0: none)")
    p.add_argument("--init", choices=("keras", "torch"), default=None,
                   help="embedding initialiser: keras = uniform(-0.05, 0.05), Keras's Embedding default; "
                        "torch = N(0, 1), PyTorch's nn.Embedding default (default: torch; keras with --ngrams 2+, see README)")
    p.add_argument("--ngrams", type=_positive_int, default=1,
                   help="2: add hashed word bigrams (fastText); changes the defaults of --embed-dim, --epochs and "
                        "--lazy (see benchmarks/README.md for the measurements behind them)")
    p.add_argument("--buckets", type=_positive_int, default=None,
                   help=f"n-gram hash buckets (default: 2**{NGRAM['buckets'].bit_length() - 1})")
    p.add_argument("--input", choices=("auto", "padded", "bags"), default="auto",
                   help="padded: the origin's (texts, longest) id array; bags: CSR ids without padding, cut where "
                        "the padding would cut (the same model, bitwise, in a tenth of the memory); auto: bags")
    p.add_argument("--lazy", type=_lazy, default=None, metavar="{auto,true,false}",
                   help="lazy Adam on the embedding (auto: with --ngrams 2+, or for tables above 200,000 rows)")
    p.add_argument("--seed", type=int, default=0, help="initial weights, shuffles")
    p.add_argument("--validation-split", type=float, default=0.2, help="last fraction of the training data held out")
    p.add_argument("--out", default="fastscale-run", help="output folder: model.fsm (weights, tokenizer, settings; no optimizer state), history.json, "
                        "training_curve.png")
    p.add_argument("-q", "--quiet", dest="verbose", action="store_false", help="no progress output")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="loss and accuracy of a saved model on a data file", formatter_class=_HelpFormatter)
    p.add_argument("model", help="a model.fsm written by 'fastscale train'")
    p.add_argument("data", help="'label<TAB>text' lines (.gz ok), labels among the model's")
    p.add_argument("--batch-size", type=_positive_int, default=256, help="texts per forward pass")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("predict", help="label and probability for each text (arguments, or lines on stdin)",
                       description="Prints one line per text: the predicted label, the probability the model gives "
                                   "that label, and the text's first 60 characters, separated by tabs.")
    p.add_argument("model", help="a model.fsm written by 'fastscale train'")
    p.add_argument("texts", nargs="*", help="texts to classify (default: one per line on stdin)")
    p.set_defaults(func=_predict)

    if not argv or argv[0] not in _OWN_COMMANDS:
        # The sweep parser imports fastscale.scaling (~40 ms): only when it can be the command
        # (or for the top-level help), not on the way to `train`.
        from .scaling.cli import add_parser as _add_sweep  # argparse only: fit/train load lazily
        _add_sweep(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(argv).parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        print(f"fastscale {args.command}: {e}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as e:
        if args.command == "info":
            raise
        print(f"fastscale {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
