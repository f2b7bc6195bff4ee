"""Results table, saved fits and the markdown report of a sweep."""
from __future__ import annotations

import csv
import json
import math
import os
from typing import Iterable

import numpy as np

from .fit import FORMS, LawFit, fit_law
from .runner import OK, latest_by_run, read_records

CSV_COLUMNS = [
    "run_id", "n_train", "embed_dim", "hidden", "vocab_size", "seed", "batch_size", "lr", "protocol",
    "params_total", "params_embedding", "params_nonembedding", "tokens_train", "examples_seen", "tokens_seen",
    "epochs", "best_epoch", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc",
    "test_loss_se", "wall_train", "wall_eval", "wall_first_step", "tokens_per_s", "flops_forward",
    "flops_backward", "flops_optimizer", "flops_total", "backend", "engine", "host", "started", "finished",
]
NUMERIC = {"lr", "train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc", "test_loss_se",
           "wall_train", "wall_eval", "wall_first_step", "tokens_per_s", "flops_forward", "flops_backward",
           "flops_optimizer", "flops_total"}

LIMITS = """\
- The law describes this model (bag of embeddings -> mean pool -> Dense(h, relu) -> Dense(1,
  sigmoid)), this data and this protocol, nothing more.
- Exponents trade off against their coefficients and are weakly identified with few sizes; good
  held-out predictions do not mean precise exponents.
- Intervals cover parameter and seed noise (a bootstrap over configurations), not a wrong
  functional form.
- Hyperparameters (learning rate, batch size, patience) are fixed across sizes, which biases
  the exponents: larger models might want a smaller learning rate, small data more regularisation.
- A bag-of-embeddings sentiment model saturates early (a large floor E), so the reducible loss
  L - E is reported as well as L; most of the observed range may be the floor.
- N is the parameter count named in each fit (params_total by default); ~99% of this model's
  parameters are embedding rows, so the exponent of N depends on that choice.
- Seeds change the initialisation and the batch order, not the training examples: all seeds of
  a cell train on the same subset, so seed standard errors understate the noise of drawing a
  different subset of that size.
- Every n_train is a prefix of one shuffled pool (nested subsets) and the tokenizer is fitted once
  on the whole pool, so rare words of unseen examples have (untrained) rows in small runs.
"""


def load_results(path) -> list[dict]:
    """Ok runs from a run folder, its runs.jsonl, or a results.csv (one dict per run)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        jl = os.path.join(path, "runs.jsonl")
        if os.path.exists(jl):
            path = jl
        else:
            path = os.path.join(path, "results.csv")
    if path.endswith(".csv"):
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        return [_typed(r) for r in rows]
    return [r for r in latest_by_run(read_records(path)).values() if r.get("status") == OK]


def _typed(r: dict) -> dict:
    out = {}
    for k, v in r.items():
        if v == "" or v is None:
            out[k] = None
        elif k in NUMERIC:
            out[k] = float(v)
        else:
            try:
                out[k] = int(v)
            except ValueError:
                try:
                    out[k] = float(v) if k not in ("run_id", "protocol", "backend", "engine", "host") else v
                except ValueError:
                    out[k] = v
    out["status"] = OK
    return out


def write_results_csv(out: str, records: list[dict] | None = None) -> str:
    records = load_results(out) if records is None else records
    path = os.path.join(out, "results.csv")
    tmp = path + ".tmp"
    key = lambda r: (r["params_total"], r["n_train"], r["seed"])  # noqa: E731
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in sorted(records, key=key):
            w.writerow({k: r.get(k) for k in CSV_COLUMNS})
    os.replace(tmp, path)
    return path


def fit_sweep(out: str, forms: Iterable[str] = FORMS, *, n_bootstrap: int = 1000, model_axis: str = "params_total",
              data_axis: str = "n_train", target: str = "test_loss", heldout_bootstrap: int | None = None,
              log=None) -> dict[str, LawFit]:
    """Fit every form to the sweep's ok runs and write fit/<form>.json."""
    records = load_results(out)
    os.makedirs(os.path.join(out, "fit"), exist_ok=True)
    fits = {}
    for form in forms:
        try:
            f = fit_law(records, form, n_bootstrap=n_bootstrap, model_axis=model_axis, data_axis=data_axis,
                        target=target, heldout_bootstrap=heldout_bootstrap)
        except ValueError as e:
            if log:
                log(f"{form}: not fitted: {e}")
            continue
        fits[form] = f
        tmp = os.path.join(out, "fit", form + ".json.tmp")
        with open(tmp, "w") as fh:
            json.dump(f.to_json(), fh, indent=1)
        os.replace(tmp, os.path.join(out, "fit", form + ".json"))
        if log:
            log(f"{form}: fitted ({len(f.warnings)} warnings)")
    return fits


def load_fits(out: str) -> dict[str, LawFit]:
    fits = {}
    folder = os.path.join(out, "fit")
    for form in FORMS:
        p = os.path.join(folder, form + ".json")
        if os.path.exists(p):
            with open(p) as f:
                fits[form] = LawFit.from_json(json.load(f))
    return fits


# ----------------------------------------------------------------------------------------
# report.md
# ----------------------------------------------------------------------------------------
def _fmt(x, nd=4):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float) and (abs(x) >= 1e5 or (abs(x) < 1e-3 and x != 0)):
        return f"{x:.3g}"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell_stats(records, keys, target):
    cells: dict[tuple, list] = {}
    for r in records:
        cells.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = {}
    for k, rs in cells.items():
        v = np.array([float(r[target]) for r in rs])
        out[k] = (v.mean(), v.std(ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan"), rs)
    return out


def main_table(records, model_axis="params_total", data_axis="n_train", target="test_loss") -> str:
    """Mean test loss +- standard error over seeds: rows are model sizes, columns data sizes."""
    datas = sorted({r[data_axis] for r in records})
    models = sorted({r[model_axis] for r in records})
    stats = _cell_stats(records, (model_axis, data_axis), target)
    rows = []
    for n in models:
        r0 = next(r for r in records if r[model_axis] == n)
        row = [r0.get("embed_dim", "-"), r0.get("hidden", "-"), f"{n:,}"]
        for d in datas:
            if (n, d) in stats:
                m, se, rs = stats[(n, d)]
                row.append(f"{m:.4f} ± {se:.4f}" if math.isfinite(se) else f"{m:.4f}")
            else:
                row.append("-")
        rows.append(row)
    return _table(["d", "h", model_axis] + [f"{data_axis}={d:,}" for d in datas], rows)


def accuracy_table(records, model_axis="params_total", data_axis="n_train") -> str:
    datas = sorted({r[data_axis] for r in records})
    models = sorted({r[model_axis] for r in records})
    stats = _cell_stats(records, (model_axis, data_axis), "test_acc")
    rows = []
    for n in models:
        row = [f"{n:,}"]
        for d in datas:
            row.append(f"{100 * stats[(n, d)][0]:.2f}" if (n, d) in stats else "-")
        rows.append(row)
    return _table([model_axis] + [f"{data_axis}={d:,}" for d in datas], rows)


def _params_table(curve):
    rows = []
    for k, v in curve.params.items():
        lo, hi = curve.intervals.get(k, (float("nan"), float("nan")))
        rows.append([k, _fmt(float(v)), f"[{_fmt(float(lo))}, {_fmt(float(hi))}]"])
    return _table(["parameter", "estimate", "95% interval (bootstrap over configurations)"], rows)


def _heldout_table(f: LawFit):
    rows = []
    for r in f.heldout:
        rows.append([r["held_out"], f"{r[f.model_axis]:,.0f}", f"{r[f.data_axis]:,.0f}",
                     f"{r['observed']:.4f} ± {r['observed_se']:.4f}" if math.isfinite(r["observed_se"] or float("nan"))
                     else f"{r['observed']:.4f}",
                     f"{r['predicted']:.4f}", f"[{r['interval_95'][0]:.4f}, {r['interval_95'][1]:.4f}]",
                     f"[{r['prediction_interval_95'][0]:.4f}, {r['prediction_interval_95'][1]:.4f}]",
                     f"{100 * r['relative_error']:+.2f}%", "yes" if r["inside"] else "**no**"])
    return _table(["held out", f.model_axis, f.data_axis, "observed (mean ± se)", "predicted", "95% interval (mean)",
                   "95% prediction interval", "relative error", "inside"], rows)


def heldout_summary(f: LawFit) -> str:
    if not f.heldout:
        return "no held-out check"
    errs = np.abs([r["relative_error"] for r in f.heldout])
    inside = sum(r["inside"] for r in f.heldout)
    verdict = "predicts the held-out runs" if inside == len(f.heldout) else (
        "predicts most held-out runs" if inside >= 0.8 * len(f.heldout) else "does NOT predict the held-out runs")
    return (f"{verdict}: {inside}/{len(f.heldout)} inside their 95% prediction interval, mean |relative error| "
            f"{100 * errs.mean():.2f}%, max {100 * errs.max():.2f}%")


def write_report(out: str, fits: dict[str, LawFit] | None = None, *, n_bootstrap: int = 1000,
                 plots: bool = True, log=None) -> str:
    """results.csv, fit/<form>.json (fitted now unless given or already saved), plots/*.png, report.md."""
    import tomllib

    records = load_results(out)
    if not records:
        raise ValueError(f"{out}: no ok runs to report")
    write_results_csv(out, records)
    if fits is None:
        fits = load_fits(out) or fit_sweep(out, n_bootstrap=n_bootstrap, log=log)
    spec, meta = {}, {}
    if os.path.exists(os.path.join(out, "sweep.toml")):
        with open(os.path.join(out, "sweep.toml"), "rb") as f:
            spec = tomllib.load(f)
        meta = spec.pop("meta", {})
    all_recs = list(latest_by_run(read_records(os.path.join(out, "runs.jsonl"))).values()) \
        if os.path.exists(os.path.join(out, "runs.jsonl")) else records
    bad = [r for r in all_recs if r.get("status") != OK]
    png = []
    if plots:
        from .plots import all_plots

        png = all_plots(records, fits, os.path.join(out, "plots"))
    ma = next(iter(fits.values())).model_axis if fits else "params_total"
    da = next(iter(fits.values())).data_axis if fits else "n_train"

    L = []
    L.append(f"# Scaling sweep `{spec.get('name', os.path.basename(os.path.abspath(out)))}`\n")
    wall = sum(r.get("wall_train") or 0 for r in records)
    L.append(f"- design **{spec.get('design', '?')}**, protocol **{spec.get('protocol', '?')}**, seeds "
             f"{spec.get('seeds', '?')}; axes: `{json.dumps(spec.get('axes', {}))}`")
    L.append(f"- training: `{json.dumps(spec.get('train', {}))}`")
    L.append(f"- data: source `{meta.get('data_source', '?')}`, fingerprint `{meta.get('data_fingerprint', '?')}`, "
             f"pool {meta.get('data_n_pool', '?')}, validation {meta.get('data_n_val', '?')}, test "
             f"{meta.get('data_n_test', '?')} examples"
             + (f"; Bayes-optimal test loss of the synthetic teacher **{meta['data_bayes_test_loss']:.4f}**"
                if "data_bayes_test_loss" in meta else ""))
    L.append(f"- runs: {len(records)} ok, {sum(r.get('status') == 'failed' for r in bad)} failed, "
             f"{sum(r.get('status') == 'diverged' for r in bad)} diverged (of {meta.get('n_runs', len(all_recs))} planned); "
             f"total training time {wall:.1f} s over all workers")
    L.append(f"- fastscale {meta.get('fastscale_version', '?')} (git {str(meta.get('git_sha', '?'))[:10]}), host "
             f"{meta.get('host', '?')}, {meta.get('cpus', '?')} CPUs, engine {records[0].get('engine', '?')}, backend "
             f"{records[0].get('backend', '?')}")
    L.append(f"- **N is `{ma}`**, D is `{da}`; the target is the test loss (binary cross-entropy) at the best "
             "validation epoch.\n")

    if fits:
        L.append("## Summary\n")
        for form in ("chinchilla", "power_offset", "envelope"):
            f = fits.get(form)
            if f is None:
                continue
            if len(f.curves) == 1:
                c = f.curves[0]
                ps = ", ".join(f"{k} = {_fmt(float(v))} [{_fmt(float(c.intervals[k][0]))}, "
                               f"{_fmt(float(c.intervals[k][1]))}]" if k in c.intervals else f"{k} = {_fmt(float(v))}"
                               for k, v in c.params.items())
            else:
                al = [c.params["alpha"] for c in f.curves]
                ps = f"{len(f.curves)} curves, alpha from {min(al):.3f} to {max(al):.3f}"
            n_warn = len(f.warnings)
            L.append(f"- **{form}**: {ps}. Held-out: {heldout_summary(f)}. {n_warn} warning{'s' * (n_warn != 1)}.")
        L.append("")
    L.append("## Test loss (mean ± standard error over seeds)\n")
    L.append(main_table(records, ma, da) + "\n")
    L.append("## Test accuracy (%, mean over seeds)\n")
    L.append(accuracy_table(records, ma, da) + "\n")

    for form in ("chinchilla", "power_offset", "envelope"):
        f = fits.get(form)
        if f is None:
            continue
        L.append(f"## Fit: {form}\n")
        if form == "chinchilla":
            L.append("L = E + A / N^alpha + B / D^beta, summed Huber(δ=1e-3) on log loss, grid of starts + L-BFGS-B, "
                     f"{f.n_bootstrap} bootstrap replicates over configurations.\n")
        elif form == "power_offset":
            L.append("L = E + A · D^-alpha, one curve per model size.\n")
        else:
            L.append("L*(D) = E + A · D^-alpha fitted to the best model at each data size.\n")
        for c in f.curves:
            if c.label:
                L.append(f"**{c.label}** ({c.n_runs} runs, {c.n_cells} configurations)\n")
            L.append(_params_table(c) + "\n")
            d = c.diagnostics
            L.append(f"Diagnostics: best objective {d['best_objective']:.4g}, rms log residual {d['rmse_log']:.4f}, "
                     f"{d['n_optima_within_0.1pct']}/{d['n_starts_refined']} refined starts within 0.1% of the best "
                     f"objective, top optima agree: {'yes' if d['top_optima_agree'] else '**no**'}, "
                     f"at bounds: {', '.join(d['at_bounds']) or 'none'}, converged: {d['converged']}.\n")
        if form == "chinchilla":
            c = f.curves[0]
            E = c.params["E"]
            L.append(f"### Reducible loss L - E (E = {E:.4f}; mean over seeds)\n")
            stats = _cell_stats(records, (ma, da), "test_loss")
            datas = sorted({k[1] for k in stats})
            rows = []
            for n in sorted({k[0] for k in stats}):
                rows.append([f"{n:,}"] + [f"{stats[(n, dd)][0] - E:.4f}" if (n, dd) in stats else "-" for dd in datas])
            L.append(_table([ma] + [f"{da}={dd:,}" for dd in datas], rows) + "\n")
        if f.heldout:
            L.append(f"### Held-out check ({form})\n")
            L.append(heldout_summary(f) + ".\n")
            L.append(_heldout_table(f) + "\n")
            L.append("The 95% interval (mean) is the bootstrap interval of the predicted mean loss; the prediction "
                     "interval widens it by the seed noise of the observed mean (1.96 standard errors, in quadrature).\n")

    warnings = [w for f in fits.values() for w in f.warnings]
    L.append("## Warnings\n")
    L.append("\n".join(f"- {w}" for w in warnings) + "\n" if warnings else "none\n")
    if bad:
        L.append("## Failed and diverged runs\n")
        L.append(_table(["run_id", "status", "n_train", "embed_dim", "seed", "attempt", "error"],
                        [[r["run_id"], r["status"], r.get("n_train"), r.get("embed_dim"), r.get("seed"),
                          r.get("attempt"), (r.get("error") or "").replace("|", "/")[:120]] for r in bad]) + "\n")
    L.append("## Cost\n")
    tps = [r["tokens_per_s"] for r in records if r.get("tokens_per_s")]
    fl = sum(r.get("flops_total") or 0 for r in records)
    L.append(f"- training FLOPs (analytic, all runs): {fl:.3g} (forward "
             f"{sum(r.get('flops_forward') or 0 for r in records):.3g}, backward "
             f"{sum(r.get('flops_backward') or 0 for r in records):.3g}, optimizer "
             f"{sum(r.get('flops_optimizer') or 0 for r in records):.3g})")
    if tps:
        L.append(f"- training throughput per worker: median {np.median(tps):,.0f} tokens/s "
                 f"(min {min(tps):,.0f}, max {max(tps):,.0f})\n")
    L.append("## Honest limits\n")
    L.append(LIMITS)
    if png:
        L.append("## Plots\n")
        L.extend(f"![{os.path.basename(p)}](plots/{os.path.basename(p)})" for p in png)
        L.append("")
    path = os.path.join(out, "report.md")
    with open(path + ".tmp", "w") as fh:
        fh.write("\n".join(L) + "\n")
    os.replace(path + ".tmp", path)
    return path
