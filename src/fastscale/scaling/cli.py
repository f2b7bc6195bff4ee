"""``fastscale sweep plan|run|status|fit|report``: registered by ``add_parser(subparsers)``."""
from __future__ import annotations

import argparse
import json
import os
import sys


def _plan(args) -> int:
    from .runner import plan

    p = plan(args.spec, out=args.out)
    print(f"sweep {p['name']}: {p['runs']} runs ({p['configurations']} configurations x {p['seeds']} seeds), "
          f"design {p['design']}, protocol {p['protocol']}")
    print(f"data: {json.dumps(p['data'])}")
    print(f"training FLOPs (analytic): {p['flops_min']:.3g} .. {p['flops_max']:.3g} "
          "(early stopping after patience+1 epochs .. every epoch)")
    print(f"estimated time on {p['workers']} workers at {p['flops_per_s_per_worker']:.3g} FLOP/s each: "
          f"{p['est_seconds_min'] / 60:.1f} .. {p['est_seconds_max'] / 60:.1f} min (plus per-run overheads)")
    return 0


def _run(args) -> int:
    from .runner import run_sweep
    from .spec import SweepSpec

    spec = SweepSpec.load(args.spec)
    out = args.out or os.path.join("runs", spec.name)
    counts = run_sweep(spec, out, engine=args.engine, address=args.address, resume=args.resume,
                       workers=args.workers, train_fn=args.train_fn, progress=not args.quiet)
    print(f"{out}: ok {counts['ok']}, failed {counts['failed']}, diverged {counts['diverged']}, "
          f"skipped (already done) {counts['skipped']}")
    return 0 if counts["failed"] == 0 else 1


def _status(args) -> int:
    from .runner import status

    s = status(args.out)
    print(f"{s['name']}: planned {s['planned']}, ok {s['ok']}, failed {s['failed']}, diverged {s['diverged']}, "
          f"pending {s['pending']} ({s['attempts']} attempts recorded; {s['wall_train_total_s']:.1f} s of training)")
    return 0


def _fit(args) -> int:
    from .fit import FORMS
    from .report import fit_sweep

    forms = args.form or list(FORMS)
    fits = fit_sweep(args.out, forms, n_bootstrap=args.bootstrap, model_axis=args.model_axis,
                     data_axis=args.data_axis, heldout_bootstrap=args.heldout_bootstrap,
                     log=lambda m: print(m, file=sys.stderr))
    from .report import heldout_summary

    for form, f in fits.items():
        for c in f.curves:
            ps = ", ".join(f"{k}={v:.4g} [{c.intervals[k][0]:.4g}, {c.intervals[k][1]:.4g}]" if k in c.intervals
                           else f"{k}={v:.4g}" for k, v in c.params.items())
            print(f"{form}{' ' + c.label if c.label else ''}: {ps}")
        print(f"{form} held-out: {heldout_summary(f)}")
        for w in f.warnings:
            print(f"  warning: {w}")
    print(f"wrote {os.path.join(args.out, 'fit')}/<form>.json")
    return 0


def _report(args) -> int:
    from .report import write_report

    path = write_report(args.out, n_bootstrap=args.bootstrap, log=lambda m: print(m, file=sys.stderr))
    print(f"wrote {path}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``sweep`` and its subcommands on an argparse subparsers object."""
    p = subparsers.add_parser("sweep", help="scaling-law sweeps: plan, run, status, fit, report",
                              description="Train many models, fit scaling laws, check they predict, report.")
    sub = p.add_subparsers(dest="sweep_command", required=True)

    q = sub.add_parser("plan", help="run count, FLOPs and estimated time; trains nothing")
    q.add_argument("spec", help="sweep TOML file")
    q.add_argument("--out", help="run folder (to cache the tokenized data and use measured speed)")
    q.set_defaults(func=_plan)

    q = sub.add_parser("run", help="run (or resume) a sweep")
    q.add_argument("spec", help="sweep TOML file")
    q.add_argument("--out", help="run folder (default runs/<name>)")
    q.add_argument("--engine", choices=["local", "dask"], help="override execution.engine")
    q.add_argument("--address", help="dask scheduler address (tcp://host:8786); implies --engine dask")
    q.add_argument("--resume", action="store_true", help="skip runs already recorded ok; rerun failed ones")
    q.add_argument("--workers", type=int, help="worker processes (default: execution.workers or min(2, cpus))")
    q.add_argument("--train-fn", help="module:function training one run (default: the fastscale classifier)")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_run)

    q = sub.add_parser("status", help="done / failed / pending of a run folder")
    q.add_argument("out")
    q.set_defaults(func=_status)

    q = sub.add_parser("fit", help="fit scaling laws to a run folder (writes fit/<form>.json)")
    q.add_argument("out")
    q.add_argument("--form", action="append", choices=["chinchilla", "power_offset", "envelope"],
                   help="form to fit (repeatable; default: all three)")
    q.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates (default 1000)")
    q.add_argument("--heldout-bootstrap", type=int, help="replicates for the held-out refits (default: --bootstrap)")
    q.add_argument("--model-axis", default="params_total",
                   choices=["params_total", "params_embedding", "params_nonembedding", "embed_dim"])
    q.add_argument("--data-axis", default="n_train", choices=["n_train", "tokens_train"])
    q.set_defaults(func=_fit)

    q = sub.add_parser("report", help="results.csv, plots and report.md (fits first if fit/ is empty)")
    q.add_argument("out")
    q.add_argument("--bootstrap", type=int, default=1000, help="bootstrap replicates when fitting here")
    q.set_defaults(func=_report)
    return p


def main(argv=None) -> int:
    """``python -m fastscale.scaling.cli sweep ...`` (the same as ``fastscale sweep ...``)."""
    parser = argparse.ArgumentParser(prog="fastscale")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
