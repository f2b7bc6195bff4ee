"""PNG plots of a sweep (matplotlib, Agg).  Each function writes one file and returns its path."""
from __future__ import annotations

import os

import numpy as np

from .fit import LawFit


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _cells(records, key_a, key_b, target="test_loss"):
    out: dict[tuple, list] = {}
    for r in records:
        out.setdefault((r[key_a], r[key_b]), []).append(float(r[target]))
    return out


def _colors(n):
    plt = _plt()
    cmap = plt.get_cmap("viridis")
    return [cmap(i / max(1, n - 1) * 0.9) for i in range(n)]


def _model_label(records, n, model_axis):
    r = next(r for r in records if r[model_axis] == n)
    return f"d={r['embed_dim']}, h={r['hidden']} ({n:.3g} params)" if "embed_dim" in r else f"{model_axis}={n:.3g}"


def _series(ax, records, group_axis, group, x_axis, target, color, label):
    """One group's runs (records with ``group_axis == group``): every run as a dot, the mean
    per x as a line.  Returns the sorted x values."""
    sub = [r for r in records if r[group_axis] == group]
    xs = np.array([r[x_axis] for r in sub], float)
    ys = np.array([r[target] for r in sub], float)
    ax.scatter(xs, ys, color=color, s=12, alpha=0.6)
    grid = sorted(set(xs))
    ax.plot(grid, [ys[xs == x].mean() for x in grid], "-o", color=color, ms=3, lw=1.2, label=label)
    return grid


def loss_vs_data(records, path, fit: LawFit | None = None, model_axis="params_total", data_axis="n_train",
                 target="test_loss"):
    """Test loss against training-set size, one colour per model size; the joint fit with its
    95% band when given."""
    plt = _plt()
    models = sorted({r[model_axis] for r in records})
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for c, n in zip(_colors(len(models)), models):
        ds = _series(ax, records, model_axis, n, data_axis, target, c, _model_label(records, n, model_axis))
        if fit is not None and fit.form == "chinchilla":
            grid = np.geomspace(min(ds), max(ds), 60)
            p, lo, hi = fit.curves[0].predict(np.full_like(grid, n), grid)
            ax.plot(grid, p, "--", color=c, lw=1)
            ax.fill_between(grid, lo, hi, color=c, alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(data_axis + " (training examples)" if data_axis == "n_train" else data_axis)
    ax.set_ylabel(target)
    title = "Test loss vs data, one colour per model size"
    if fit is not None and fit.form == "chinchilla":
        title += "\n(dashed: chinchilla fit, shaded: 95% bootstrap band)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_vs_params(records, path, model_axis="params_total", data_axis="n_train", target="test_loss"):
    plt = _plt()
    datas = sorted({r[data_axis] for r in records})
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for c, d in zip(_colors(len(datas)), datas):
        _series(ax, records, data_axis, d, model_axis, target, c, f"{data_axis}={d:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"{model_axis} (N)")
    ax.set_ylabel(target)
    ax.set_title("Test loss vs parameters, one colour per training-set size", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def fitted_curves(records, fit: LawFit, path):
    """Every curve of a fit with its 95% bootstrap band, over the observed cell means."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    ma, da, t = fit.model_axis, fit.data_axis, fit.target
    if fit.form == "chinchilla":
        return loss_vs_data(records, path, fit, ma, da, t)
    if fit.form == "envelope":
        c = fit.curves[0]
        pts = fit.envelope_points
        xs = np.array([p[da] for p in pts])
        ys = np.array([p[t] for p in pts])
        ax.scatter(xs, ys, s=14, color="C0", label="best model per data size (all seeds)")
        for x, n in sorted({(p[da], p[ma]) for p in pts}):
            ax.annotate(f"{n:.2g}", (x, ys[xs == x].mean()), fontsize=6, xytext=(3, 3), textcoords="offset points")
        grid = np.geomspace(xs.min(), xs.max() * 2, 80)
        p, lo, hi = c.predict(grid)
        ax.plot(grid, p, "--", color="C1", label=_law_label(c))
        ax.fill_between(grid, lo, hi, color="C1", alpha=0.2, lw=0, label="95% bootstrap band")
        ax.set_title("Envelope: best model per data size, power_offset fit (labels: N of the best model)",
                     fontsize=9)
    else:
        cols = _colors(len(fit.curves))
        for col, c in zip(cols, fit.curves):
            n = c.group[ma]
            sub = [r for r in records if r[ma] == n]
            xs = np.array([r[da] for r in sub], float)
            ys = np.array([r[t] for r in sub], float)
            ax.scatter(xs, ys, s=10, color=col, alpha=0.6)
            grid = np.geomspace(xs.min(), xs.max(), 60)
            p, lo, hi = c.predict(grid)
            ax.plot(grid, p, "--", color=col, lw=1, label=f"N={n:.3g}: alpha={c.params['alpha']:.2f}, E={c.params['E']:.3f}")
            ax.fill_between(grid, lo, hi, color=col, alpha=0.15, lw=0)
        ax.set_title("power_offset per model size: L = E + A x^-alpha (95% bootstrap bands)", fontsize=10)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(da)
    ax.set_ylabel(t)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _law_label(c):
    p = c.params
    return f"L = {p['E']:.3f} + {p['A']:.3g} x^-{p['alpha']:.2f}"


def heldout(fits: list[LawFit], path):
    """Held-out predictions against observations, with 95% prediction intervals."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 5.5))
    lo_all, hi_all = [], []
    markers = {"chinchilla": "o", "power_offset": "s", "envelope": "D"}
    k = 0
    for f in fits:
        for what in sorted({r["held_out"] for r in f.heldout}):
            rows = [r for r in f.heldout if r["held_out"] == what]
            obs = np.array([r["observed"] for r in rows])
            pred = np.array([r["predicted"] for r in rows])
            pi = np.array([r["prediction_interval_95"] for r in rows])
            ax.errorbar(obs, pred, yerr=[pred - pi[:, 0], pi[:, 1] - pred], fmt=markers.get(f.form, "o"), ms=4,
                        color=f"C{k}", capsize=2, lw=0.8, label=f"{f.form}: without {what}")
            lo_all += list(pi[:, 0]) + list(obs)
            hi_all += list(pi[:, 1]) + list(obs)
            k += 1
    if lo_all:
        lo, hi = min(lo_all), max(hi_all)
        pad = 0.05 * (hi - lo)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k:", lw=1, label="predicted = observed")
    ax.set_xlabel("observed test loss (mean over seeds)")
    ax.set_ylabel("predicted test loss (95% prediction interval)")
    ax.set_title("Held-out check: fit without the largest size, predict it", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def residuals(fit: LawFit, path):
    """log residuals (observed - fitted) of the first curve against each of its axes."""
    plt = _plt()
    c = fit.curves[0]
    axes = list(c.axes)
    fig, axs = plt.subplots(1, len(axes), figsize=(5 * len(axes), 4), squeeze=False)
    r = np.array([x["log_residual"] for x in c.residuals])
    for ax, a in zip(axs[0], axes):
        xs = np.array([x[a] for x in c.residuals])
        ax.scatter(xs, r, s=10, alpha=0.6)
        u = sorted(set(xs))
        ax.plot(u, [r[xs == v].mean() for v in u], "r-o", ms=3, lw=1, label="mean per size")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlabel(a)
        ax.set_ylabel("log(observed) - log(fitted)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Residuals of the {fit.form} fit{' (' + c.label + ')' if c.label else ''}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def throughput(records, path, model_axis="params_total"):
    plt = _plt()
    recs = [r for r in records if r.get("tokens_per_s")]
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    datas = sorted({r["n_train"] for r in recs})
    for c, d in zip(_colors(len(datas)), datas):
        sub = [r for r in recs if r["n_train"] == d]
        ax.scatter([r[model_axis] for r in sub], [r["tokens_per_s"] for r in sub], s=12, color=c,
                   label=f"n_train={d}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(model_axis)
    ax.set_ylabel("training tokens / s (one worker)")
    ax.set_title("Training throughput vs model size", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def all_plots(records, fits: dict[str, LawFit], folder: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    chin = fits.get("chinchilla")
    ma = next(iter(fits.values())).model_axis if fits else "params_total"
    da = next(iter(fits.values())).data_axis if fits else "n_train"
    out = [loss_vs_data(records, os.path.join(folder, "loss_vs_data.png"), chin, ma, da),
           loss_vs_params(records, os.path.join(folder, "loss_vs_params.png"), ma, da)]
    for form, f in fits.items():
        if form != "chinchilla":
            out.append(fitted_curves(records, f, os.path.join(folder, f"fit_{form}.png")))
    if any(f.heldout for f in fits.values()):
        out.append(heldout([f for f in fits.values() if f.heldout], os.path.join(folder, "heldout.png")))
    if chin is not None:
        out.append(residuals(chin, os.path.join(folder, "residuals.png")))
    if any(r.get("tokens_per_s") for r in records):
        out.append(throughput(records, os.path.join(folder, "tokens_per_s.png"), ma))
    return out
