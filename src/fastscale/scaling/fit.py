"""Scaling-law fits: power_offset, chinchilla, envelope.

Every form is fitted the same way (Hoffmann et al. 2022, with the fixes of Besiroglu et al.
2024): minimise the SUM over runs of Huber(delta=1e-3) of ``log Lhat - log L``, where
``log Lhat`` is a log-sum-exp of the terms (so it never overflows and E, A, B stay positive),
from a grid of starting points refined with L-BFGS-B at tight tolerances.  Sizes are divided
by their geometric mean inside the fit so that coefficient and exponent are not nearly
collinear; parameters are reported in natural units.

Uncertainty comes from a bootstrap that resamples whole configurations (a cell: all seeds of
one (N, D) pair travel together), and the held-out check refits without the largest data size
(and without the largest model) and predicts those runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

HUBER_DELTA = 1e-3
FORMS = ("power_offset", "chinchilla", "envelope")
MODEL_AXES = ("params_total", "params_embedding", "params_nonembedding", "embed_dim")
DATA_AXES = ("n_train", "tokens_train")


# ----------------------------------------------------------------------------------------
# Functional forms in "fit space"
# ----------------------------------------------------------------------------------------
class _Form:
    """A law as log-sum-exp of terms, linear in its fit-space parameters.

    ``u`` columns are log(x / x_ref) for each axis.  Each term is ``c_k - exp_k * u_k`` (or a
    constant for the floor).  ``natural`` maps fit-space to the reported parameters.
    """

    names: tuple[str, ...]
    fit_names: tuple[str, ...]
    n_axes: int

    def terms(self, theta, u):  # -> (n, K) term values, and (K, n, P) d term / d theta
        raise NotImplementedError

    def natural(self, theta, ref):  # fit space -> dict of reported parameters
        raise NotImplementedError

    def to_fit(self, params, ref):  # reported -> fit space
        raise NotImplementedError

    def bounds(self, y):
        raise NotImplementedError

    def grid(self, y):
        raise NotImplementedError


class PowerOffset(_Form):
    """L = E + A * x^-alpha."""

    names = ("E", "A", "alpha")
    fit_names = ("log_E", "log_A_ref", "alpha")
    n_axes = 1

    def lse_grad(self, theta, u):
        e, a, al = theta
        t0 = np.full(u.shape[0], e)
        t1 = a - al * u[:, 0]
        m = np.maximum(t0, t1)
        w0, w1 = np.exp(t0 - m), np.exp(t1 - m)
        s = w0 + w1
        lp = m + np.log(s)
        w0, w1 = w0 / s, w1 / s
        grad = np.stack([w0, w1, -w1 * u[:, 0]], axis=1)
        return lp, grad

    def natural(self, theta, ref):
        e, a, al = theta
        return {"E": math.exp(e), "A": math.exp(a + al * math.log(ref[0])), "alpha": float(al)}

    def to_fit(self, p, ref):
        return np.array([math.log(p["E"]), math.log(p["A"]) - p["alpha"] * math.log(ref[0]), p["alpha"]])

    def bounds(self, y):
        hi = math.log(10 * float(np.max(y)))
        return [(math.log(1e-8), hi), (math.log(1e-8), hi + 5.0), (0.0, 4.0)]

    def grid(self, y):
        lo = float(np.min(y))
        es = [math.log(lo * f) for f in (1e-3, 0.3, 0.6, 0.9)]
        as_ = [math.log(float(np.mean(y)) * f) for f in (0.01, 0.1, 0.3, 1.0)]
        als = (0.05, 0.2, 0.5, 1.0, 2.0)
        return np.array([(e, a, al) for e in es for a in as_ for al in als])


class Chinchilla(_Form):
    """L = E + A / N^alpha + B / D^beta."""

    names = ("E", "A", "alpha", "B", "beta")
    fit_names = ("log_E", "log_A_ref", "alpha", "log_B_ref", "beta")
    n_axes = 2

    def lse_grad(self, theta, u):
        e, a, al, b, be = theta
        t0 = np.full(u.shape[0], e)
        t1 = a - al * u[:, 0]
        t2 = b - be * u[:, 1]
        m = np.maximum(np.maximum(t0, t1), t2)
        w0, w1, w2 = np.exp(t0 - m), np.exp(t1 - m), np.exp(t2 - m)
        s = w0 + w1 + w2
        lp = m + np.log(s)
        w0, w1, w2 = w0 / s, w1 / s, w2 / s
        grad = np.stack([w0, w1, -w1 * u[:, 0], w2, -w2 * u[:, 1]], axis=1)
        return lp, grad

    def natural(self, theta, ref):
        e, a, al, b, be = theta
        return {
            "E": math.exp(e),
            "A": math.exp(a + al * math.log(ref[0])),
            "alpha": float(al),
            "B": math.exp(b + be * math.log(ref[1])),
            "beta": float(be),
        }

    def to_fit(self, p, ref):
        return np.array([
            math.log(p["E"]),
            math.log(p["A"]) - p["alpha"] * math.log(ref[0]),
            p["alpha"],
            math.log(p["B"]) - p["beta"] * math.log(ref[1]),
            p["beta"],
        ])

    def bounds(self, y):
        hi = math.log(10 * float(np.max(y)))
        return [(math.log(1e-8), hi), (math.log(1e-8), hi + 5.0), (0.0, 4.0), (math.log(1e-8), hi + 5.0), (0.0, 4.0)]

    def grid(self, y):
        lo, mean = float(np.min(y)), float(np.mean(y))
        es = [math.log(lo * f) for f in (1e-3, 0.4, 0.8)]
        cs = [math.log(mean * f) for f in (0.02, 0.1, 0.4)]
        ex = (0.1, 0.4, 1.0, 2.0)
        return np.array([(e, a, al, b, be) for e in es for a in cs for al in ex for b in cs for be in ex])


FORM_CLASSES = {"power_offset": PowerOffset, "chinchilla": Chinchilla}


def log_predict(form: str, params: dict, *xs) -> np.ndarray:
    """log Lhat in natural units for arrays of sizes (N, D for chinchilla; x for power_offset)."""
    terms = [np.full(np.broadcast(*[np.asarray(x, float) for x in xs]).shape, math.log(params["E"]))]
    if form in ("power_offset", "envelope"):
        (x,) = xs
        terms.append(math.log(params["A"]) - params["alpha"] * np.log(np.asarray(x, float)))
    else:
        n, d = xs
        terms.append(math.log(params["A"]) - params["alpha"] * np.log(np.asarray(n, float)))
        terms.append(math.log(params["B"]) - params["beta"] * np.log(np.asarray(d, float)))
    t = np.stack(np.broadcast_arrays(*terms))
    m = t.max(axis=0)
    return m + np.log(np.exp(t - m).sum(axis=0))


def predict(form: str, params: dict, *xs) -> np.ndarray:
    return np.exp(log_predict(form, params, *xs))


# ----------------------------------------------------------------------------------------
# Objective and optimiser
# ----------------------------------------------------------------------------------------
def huber(r: np.ndarray, delta: float = HUBER_DELTA) -> np.ndarray:
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


def _objective_numpy(form: _Form, u, logy, w, delta):
    def f(theta):
        lp, g = form.lse_grad(theta, u)
        r = lp - logy
        val = float(np.sum(w * huber(r, delta)))
        dr = w * np.clip(r, -delta, delta)  # Huber'(r)
        return val, dr @ g

    return f


def _make_numba_objective():
    import numba

    # One loop over runs instead of ~30 numpy calls: a bootstrap is ~10^5 objective calls on
    # ~100 runs, where numpy's per-call overhead is the whole cost.
    @numba.njit(cache=True, fastmath=False)
    def obj(theta, u, logy, w, delta, grad):
        n, k = u.shape  # k = 1 (power_offset) or 2 (chinchilla); theta = e, (c_j, s_j) per axis
        for p in range(grad.shape[0]):
            grad[p] = 0.0
        val = 0.0
        for i in range(n):
            m = theta[0]
            for j in range(k):
                t = theta[1 + 2 * j] - theta[2 + 2 * j] * u[i, j]
                if t > m:
                    m = t
            s = np.exp(theta[0] - m)
            for j in range(k):
                s += np.exp(theta[1 + 2 * j] - theta[2 + 2 * j] * u[i, j] - m)
            r = m + np.log(s) - logy[i]
            a = abs(r)
            if a <= delta:
                val += w[i] * 0.5 * r * r
                dr = w[i] * r
            else:
                val += w[i] * delta * (a - 0.5 * delta)
                dr = w[i] * (delta if r > 0 else -delta)
            if dr != 0.0:
                grad[0] += dr * np.exp(theta[0] - m) / s
                for j in range(k):
                    wt = np.exp(theta[1 + 2 * j] - theta[2 + 2 * j] * u[i, j] - m) / s
                    grad[1 + 2 * j] += dr * wt
                    grad[2 + 2 * j] -= dr * wt * u[i, j]
        return val

    return obj


_NUMBA_OBJ: list = []


def _numba_objective():
    if not _NUMBA_OBJ:
        try:
            _NUMBA_OBJ.append(_make_numba_objective())
        except ImportError:
            _NUMBA_OBJ.append(None)
    return _NUMBA_OBJ[0]


def _objective(form: _Form, u, logy, w, delta):
    """(value, gradient) of the summed Huber loss; numba when importable, else numpy."""
    nb = _numba_objective()
    if nb is None:
        return _objective_numpy(form, u, logy, w, delta)
    u = np.ascontiguousarray(u, float)
    logy = np.ascontiguousarray(logy, float)
    w = np.ascontiguousarray(w, float)

    def f(theta):
        g = np.empty(len(theta))
        v = nb(np.asarray(theta, float), u, logy, w, float(delta), g)
        return v, g

    return f


def _minimise(f, x0, bounds):
    from scipy.optimize import minimize

    # Tight tolerances: with delta = 1e-3 the objective is tiny (~1e-5 per run), so scipy's
    # default ftol (2.2e-9, relative) would stop long before the optimum.
    res = minimize(f, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 5000, "maxfun": 20000, "ftol": 1e-15, "gtol": 1e-12})
    return res


@dataclass
class _Optimum:
    theta: np.ndarray
    objective: float
    converged: bool
    message: str
    nit: int


def _fit_points(form: _Form, u, logy, w, *, delta=HUBER_DELTA, starts=None, n_refine=8):
    """Best optimum from a grid of starts (screened by objective, best ``n_refine`` refined)."""
    bounds = form.bounds(np.exp(logy))
    f = _objective(form, u, logy, w, delta)
    if starts is None:
        grid = form.grid(np.exp(logy))
        vals = np.array([f(t)[0] for t in grid])
        starts = grid[np.argsort(vals)[:n_refine]]
    opts = []
    for x0 in starts:
        x0 = np.clip(x0, [b[0] for b in bounds], [b[1] for b in bounds])
        r = _minimise(f, x0, bounds)
        opts.append(_Optimum(np.asarray(r.x, float), float(r.fun), bool(r.success), str(r.message), int(r.nit)))
    opts.sort(key=lambda o: o.objective)
    if not opts[0].converged:
        # With delta = 1e-3 the objective is nearly L1, and the line search can stop at a kink
        # of the optimum ("ABNORMAL").  A restart from there that finds nothing lower confirms it.
        b = opts[0]
        r = _minimise(f, b.theta, bounds)
        if r.fun < b.objective - 1e-12 * abs(b.objective):
            opts[0] = _Optimum(np.asarray(r.x, float), float(r.fun), bool(r.success), str(r.message), b.nit + int(r.nit))
            opts.sort(key=lambda o: o.objective)
        else:
            opts[0] = _Optimum(b.theta, b.objective, True, f"{b.message}; a restart found no lower objective", b.nit)
    return opts, bounds


# ----------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------
@dataclass
class CurveFit:
    """One fitted law: point estimate, bootstrap replicates, diagnostics."""

    form: str                      # power_offset | chinchilla (envelope curves are power_offset)
    axes: tuple[str, ...]          # size columns: (x,) or (N, D)
    params: dict[str, float]
    ref: tuple[float, ...]
    objective: float
    n_runs: int
    n_cells: int
    diagnostics: dict[str, Any]
    warnings: list[str]
    boot: np.ndarray | None = None  # (B, P) natural-unit parameters of each replicate
    label: str = ""
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    residuals: list[dict] = field(default_factory=list)
    group: dict[str, float] = field(default_factory=dict)  # e.g. {"params_total": N} of a per-model curve

    def predict(self, *xs, level: float = 0.95):
        """(point, lo, hi) for the mean loss at the given sizes; lo/hi from the bootstrap."""
        point = predict(self.form, self.params, *xs)
        if self.boot is None or len(self.boot) == 0:
            return point, np.full_like(point, np.nan), np.full_like(point, np.nan)
        names = FORM_CLASSES[self.form].names
        reps = np.stack([predict(self.form, dict(zip(names, b)), *xs) for b in self.boot])
        q = (1 - level) / 2
        return point, np.quantile(reps, q, axis=0), np.quantile(reps, 1 - q, axis=0)

    def to_json(self) -> dict:
        return {
            "form": self.form,
            "label": self.label,
            "axes": list(self.axes),
            "params": self.params,
            "intervals_95": {k: list(v) for k, v in self.intervals.items()},
            "objective": self.objective,
            "n_runs": self.n_runs,
            "n_cells": self.n_cells,
            "reference_sizes": list(self.ref),
            "diagnostics": self.diagnostics,
            "warnings": self.warnings,
            "residuals": self.residuals,
            "group": self.group,
            "bootstrap_params": None if self.boot is None else self.boot.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict) -> "CurveFit":
        boot = d.get("bootstrap_params")
        return cls(
            form=d["form"], axes=tuple(d["axes"]), params=d["params"], ref=tuple(d["reference_sizes"]),
            objective=d["objective"], n_runs=d["n_runs"], n_cells=d["n_cells"], diagnostics=d["diagnostics"],
            warnings=d["warnings"], boot=None if boot is None else np.asarray(boot, float), label=d.get("label", ""),
            intervals={k: tuple(v) for k, v in d.get("intervals_95", {}).items()}, residuals=d.get("residuals", []),
            group=d.get("group", {}),
        )


@dataclass
class LawFit:
    """``fit_law``'s answer: one or more curves (one per model size for power_offset), the
    held-out checks and every warning."""

    form: str
    target: str
    model_axis: str
    data_axis: str
    curves: list[CurveFit]
    heldout: list[dict]
    warnings: list[str]
    n_bootstrap: int
    envelope_points: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "form": self.form,
            "target": self.target,
            "model_axis": self.model_axis,
            "data_axis": self.data_axis,
            "objective": f"sum over runs of Huber(delta={HUBER_DELTA}) of log Lhat - log L",
            "n_bootstrap": self.n_bootstrap,
            "curves": [c.to_json() for c in self.curves],
            "heldout": self.heldout,
            "warnings": self.warnings,
            "envelope_points": self.envelope_points,
        }

    @classmethod
    def from_json(cls, d: dict) -> "LawFit":
        return cls(form=d["form"], target=d["target"], model_axis=d["model_axis"], data_axis=d["data_axis"],
                   curves=[CurveFit.from_json(c) for c in d["curves"]], heldout=d["heldout"],
                   warnings=d["warnings"], n_bootstrap=d["n_bootstrap"], envelope_points=d.get("envelope_points", []))


# ----------------------------------------------------------------------------------------
# Fitting one curve with diagnostics and bootstrap
# ----------------------------------------------------------------------------------------
def _cells(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique configurations (rows of xs) and each run's cell index."""
    uniq, inv = np.unique(xs, axis=0, return_inverse=True)
    return uniq, inv.reshape(-1)


def _single_threaded_blas():
    """BLAS pools spinning on these 2 shared cores made each L-BFGS-B step ~100x slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1)


def bootstrap_weights(cell: np.ndarray, n_cells: int, rng) -> np.ndarray:
    """Per-run weights of one replicate: cells drawn with replacement, all seeds of a drawn
    cell counted as often as the cell was drawn (seeds are never split from their config)."""
    pick = rng.integers(0, n_cells, n_cells)
    return np.bincount(pick, minlength=n_cells)[cell].astype(float)


def fit_curve(form_name: str, xs: np.ndarray, y: np.ndarray, *, axes: Sequence[str], n_bootstrap: int = 1000,
              seed: int = 0, delta: float = HUBER_DELTA, label: str = "") -> CurveFit:
    """Fit one law to runs ``xs`` (n, n_axes) with losses ``y`` (n,), then bootstrap it."""
    with _single_threaded_blas():
        return _fit_curve(form_name, xs, y, axes=axes, n_bootstrap=n_bootstrap, seed=seed, delta=delta, label=label)


def _fit_curve(form_name, xs, y, *, axes, n_bootstrap, seed, delta, label):
    form = FORM_CLASSES[form_name]()
    xs = np.asarray(xs, float).reshape(len(y), -1)
    y = np.asarray(y, float)
    if xs.shape[1] != form.n_axes:
        raise ValueError(f"fit_curve: form {form_name!r} needs {form.n_axes} size axes, got {xs.shape[1]}")
    if np.any(~np.isfinite(y)) or np.any(y <= 0) or np.any(xs <= 0):
        raise ValueError("fit_curve: losses and sizes must be finite and positive")
    uniq, cell = _cells(xs)
    for k in range(form.n_axes):
        if len(np.unique(uniq[:, k])) < 2:
            raise ValueError(f"fit_curve: axis {axes[k]!r} has a single value; a {form_name} fit needs at least 2 (3 advised)")
    if len(uniq) < len(form.names):
        raise ValueError(f"fit_curve: {len(uniq)} configurations cannot determine {len(form.names)} parameters")
    ref = tuple(float(np.exp(np.mean(np.log(uniq[:, k])))) for k in range(form.n_axes))
    u = np.log(xs / np.asarray(ref))
    logy = np.log(y)
    w = np.ones_like(y)
    opts, bounds = _fit_points(form, u, logy, w, delta=delta)
    best = opts[0]
    params = form.natural(best.theta, ref)

    # Diagnostics: do the top optima agree?  Optima whose objective is within 0.1% of the best
    # should sit at the same parameters; if not, the law is not identified by these data.
    tol_obj = best.objective * 1e-3 + 1e-12
    near = [o for o in opts if o.objective - best.objective <= tol_obj]
    spread = max((float(np.max(np.abs(o.theta - best.theta))) for o in near), default=0.0)
    agree = spread < 1e-2
    at_bounds = []
    for name, t, (lo, hi) in zip(form.fit_names, best.theta, bounds):
        if t - lo < 1e-6 * max(1.0, abs(lo)) or hi - t < 1e-6 * max(1.0, abs(hi)):
            at_bounds.append(name)
    warnings: list[str] = []
    tag = f"{form_name}{' [' + label + ']' if label else ''}"
    if not agree:
        warnings.append(f"{tag}: the {len(near)} best optima differ by up to {spread:.3g} in fit space "
                        "(parameters weakly identified)")
    if at_bounds:
        warnings.append(f"{tag}: parameters at their bounds: {', '.join(at_bounds)}")
    if params["E"] > float(np.min(y)):
        warnings.append(f"{tag}: floor E = {params['E']:.4g} is above the smallest observed loss {float(np.min(y)):.4g}")
    if not best.converged:
        warnings.append(f"{tag}: L-BFGS-B did not report convergence ({best.message})")
    diagnostics = {
        "best_objective": best.objective,
        "n_starts_refined": len(opts),
        "top_objectives": [o.objective for o in opts[:5]],
        "n_optima_within_0.1pct": len(near),
        "top_optima_agree": bool(agree),
        "top_optima_spread": spread,
        "at_bounds": at_bounds,
        "converged": best.converged,
        "message": best.message,
        "iterations": best.nit,
        "fit_space": dict(zip(form.fit_names, map(float, best.theta))),
    }
    lp = form.lse_grad(best.theta, u)[0]
    resid = logy - lp
    diagnostics["rmse_log"] = float(np.sqrt(np.mean(resid ** 2)))
    cf = CurveFit(form=form_name, axes=tuple(axes), params=params, ref=ref, objective=best.objective,
                  n_runs=len(y), n_cells=len(uniq), diagnostics=diagnostics, warnings=warnings, label=label)
    cf.residuals = [{**{a: float(v) for a, v in zip(axes, x)}, "observed": float(o), "predicted": float(np.exp(p)),
                     "log_residual": float(r)} for x, o, p, r in zip(xs, y, lp, resid)]

    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        # Restart each replicate from the best optimum (and from the distinct runners-up when
        # the top optima disagree), not the whole grid: the grid has already located the
        # basin, and 1000 replicates x a full grid would take minutes.
        distinct = [best.theta]
        for o in opts[1:]:
            if len(distinct) >= 3 or agree:
                break
            if all(np.max(np.abs(o.theta - d)) > 1e-2 for d in distinct):
                distinct.append(o.theta)
        reps = np.empty((n_bootstrap, len(form.names)))
        hits = np.zeros(len(form.names))
        n_cells = len(uniq)
        for b in range(n_bootstrap):
            wb = bootstrap_weights(cell, n_cells, rng)
            ob, _ = _fit_points(form, u, logy, wb, delta=delta, starts=distinct)
            nat = form.natural(ob[0].theta, ref)
            reps[b] = [nat[n] for n in form.names]
            hits += np.array([t - lo < 1e-6 * max(1.0, abs(lo)) or hi - t < 1e-6 * max(1.0, abs(hi))
                              for t, (lo, hi) in zip(ob[0].theta, bounds)])
        cf.boot = reps
        cf.intervals = {n: (float(np.quantile(reps[:, i], 0.025)), float(np.quantile(reps[:, i], 0.975)))
                        for i, n in enumerate(form.names)}
        cf.diagnostics["n_bootstrap"] = n_bootstrap
        frac = hits / n_bootstrap
        cf.diagnostics["bootstrap_fraction_at_bounds"] = dict(zip(form.fit_names, map(float, frac)))
        edge = [f"{n} ({100 * f:.0f}%)" for n, f in zip(form.fit_names, frac) if f > 0.025]
        if edge:
            cf.warnings.append(f"{tag}: bootstrap replicates at a bound, so those intervals are cut by the bounds: "
                               + ", ".join(edge))
    return cf


# ----------------------------------------------------------------------------------------
# fit_law: from run records to a LawFit with held-out checks
# ----------------------------------------------------------------------------------------
def _col(records, key):
    return np.array([float(r[key]) for r in records])


def _ok(records):
    out = []
    for r in records:
        if r.get("status", "ok") != "ok":
            continue
        out.append(r)
    return out


def envelope_records(records, model_axis: str, data_axis: str, target: str) -> list[dict]:
    """The runs of the best model (lowest mean ``target`` over seeds) at each data size."""
    best = {}
    by_cell: dict[tuple, list] = {}
    for r in records:
        by_cell.setdefault((float(r[data_axis]), float(r[model_axis])), []).append(r)
    for (d, n), rs in by_cell.items():
        m = float(np.mean([float(r[target]) for r in rs]))
        if d not in best or m < best[d][0]:
            best[d] = (m, n, rs)
    out = []
    for d in sorted(best):
        out.extend(best[d][2])
    return out


def _fit_form(form, records, model_axis, data_axis, target, n_bootstrap, seed, label_prefix=""):
    """The curves of one form on these records."""
    if form == "chinchilla":
        xs = np.stack([_col(records, model_axis), _col(records, data_axis)], axis=1)
        return [fit_curve("chinchilla", xs, _col(records, target), axes=(model_axis, data_axis),
                          n_bootstrap=n_bootstrap, seed=seed, label=label_prefix.strip())]
    if form == "envelope":
        env = envelope_records(records, model_axis, data_axis, target)
        return [fit_curve("power_offset", _col(env, data_axis)[:, None], _col(env, target), axes=(data_axis,),
                          n_bootstrap=n_bootstrap, seed=seed, label=(label_prefix + "envelope").strip())]
    if form == "power_offset":
        curves = []
        models = sorted({float(r[model_axis]) for r in records})
        for i, n in enumerate(models):
            sub = [r for r in records if float(r[model_axis]) == n]
            if len({float(r[data_axis]) for r in sub}) < 3:
                continue
            c = fit_curve("power_offset", _col(sub, data_axis)[:, None], _col(sub, target), axes=(data_axis,),
                          n_bootstrap=n_bootstrap, seed=seed + i, label=f"{label_prefix}{model_axis}={n:,.0f}".strip())
            c.group = {model_axis: n}
            curves.append(c)
        if not curves:
            raise ValueError("fit_law: power_offset needs >= 3 data sizes for at least one model size")
        return curves
    raise ValueError(f"fit_law: unknown form {form!r}; choose one of {FORMS}")


def _heldout_rows(form, fit_curves, held, model_axis, data_axis, target, what):
    """Predict the held-out runs (cell means over seeds) from a fit that did not see them."""
    rows = []
    cells: dict[tuple, list] = {}
    for r in held:
        cells.setdefault((float(r[model_axis]), float(r[data_axis])), []).append(float(r[target]))
    for (n, d), ys in sorted(cells.items()):
        if form == "chinchilla":
            curve, xs = fit_curves[0], (np.array([n]), np.array([d]))
        elif form == "envelope":
            curve, xs = fit_curves[0], (np.array([d]),)
        else:
            match = [c for c in fit_curves if c.group.get(model_axis) == n]
            if not match:
                continue
            curve, xs = match[0], (np.array([d]),)
        point, lo, hi = curve.predict(*xs)
        obs = float(np.mean(ys))
        se = float(np.std(ys, ddof=1) / math.sqrt(len(ys))) if len(ys) > 1 else float("nan")
        # A prediction interval for the observed cell mean: the parameter interval, widened by
        # the seed noise of the observed mean (added in quadrature to each half-width).
        s = se if np.isfinite(se) else 0.0
        plo = float(point[0] - math.hypot(point[0] - lo[0], 1.96 * s))
        phi = float(point[0] + math.hypot(hi[0] - point[0], 1.96 * s))
        rows.append({
            "held_out": what, model_axis: n, data_axis: d, "n_seeds": len(ys), "observed": obs,
            "observed_se": se, "predicted": float(point[0]), "interval_95": [float(lo[0]), float(hi[0])],
            "prediction_interval_95": [plo, phi], "relative_error": (float(point[0]) - obs) / obs,
            "inside": bool(plo <= obs <= phi),
        })
    return rows


def fit_law(records, form: str = "chinchilla", *, target: str = "test_loss", model_axis: str = "params_total",
            data_axis: str = "n_train", n_bootstrap: int = 1000, heldout: bool = True, seed: int = 0,
            heldout_bootstrap: int | None = None) -> LawFit:
    """Fit a scaling law to run records (dicts, or a run folder / results path via load_results).

    ``form``: chinchilla (joint, default), power_offset (one curve per model size over the
    data axis) or envelope (best model per data size, power_offset over the data axis).
    ``model_axis`` is the N of the law (params_total by default: ~99% of this model's
    parameters are embedding rows, so the choice matters and is always reported).
    """
    if isinstance(records, (str, bytes)) or hasattr(records, "__fspath__"):
        from .report import load_results

        records = load_results(records)
    if model_axis not in MODEL_AXES:
        raise ValueError(f"fit_law: model_axis must be one of {MODEL_AXES}, got {model_axis!r}")
    if data_axis not in DATA_AXES:
        raise ValueError(f"fit_law: data_axis must be one of {DATA_AXES}, got {data_axis!r}")
    recs = [r for r in _ok(records) if r.get(target) is not None and np.isfinite(float(r[target]))]
    if not recs:
        raise ValueError("fit_law: no ok runs with a finite target")
    curves = _fit_form(form, recs, model_axis, data_axis, target, n_bootstrap, seed)
    warnings = [w for c in curves for w in c.warnings]
    hb = n_bootstrap if heldout_bootstrap is None else heldout_bootstrap
    rows: list[dict] = []
    if heldout:
        checks = [("largest " + data_axis, data_axis)]
        if form != "envelope":
            checks.append(("largest " + model_axis, model_axis))
        for what, axis in checks:
            top = max(float(r[axis]) for r in recs)
            train = [r for r in recs if float(r[axis]) < top]
            held = [r for r in recs if float(r[axis]) == top]
            if form == "power_offset" and axis == model_axis:
                continue  # one curve per model size: there is no fit for an unseen model
            try:
                hc = _fit_form(form, train, model_axis, data_axis, target, hb, seed + 1000, label_prefix="heldout ")
            except ValueError as e:
                warnings.append(f"{form} held-out check without the {what} skipped: {e}")
                continue
            if form == "envelope":
                held = [r for r in envelope_records(recs, model_axis, data_axis, target) if float(r[axis]) == top]
            rows.extend(_heldout_rows(form, hc, held, model_axis, data_axis, target, what))
        for r in rows:
            if not r["inside"]:
                warnings.append(
                    f"{form} held-out ({r['held_out']}): {model_axis}={r[model_axis]:,.0f}, {data_axis}={r[data_axis]:,.0f}: observed "
                    f"{r['observed']:.4f} outside the 95% prediction interval [{r['prediction_interval_95'][0]:.4f}, "
                    f"{r['prediction_interval_95'][1]:.4f}] (relative error {100 * r['relative_error']:+.1f}%)")
    env_pts = []
    if form == "envelope":
        env_pts = [{model_axis: float(r[model_axis]), data_axis: float(r[data_axis]), target: float(r[target])}
                   for r in envelope_records(recs, model_axis, data_axis, target)]
    return LawFit(form=form, target=target, model_axis=model_axis, data_axis=data_axis, curves=curves,
                  heldout=rows, warnings=warnings, n_bootstrap=n_bootstrap, envelope_points=env_pts)


# ----------------------------------------------------------------------------------------
# Synthetic runs from a known law (validation of the fitter)
# ----------------------------------------------------------------------------------------
def synthetic_runs(params: dict, model_sizes: Iterable[float], data_sizes: Iterable[float], *, seeds: int = 3,
                   noise: float = 0.01, cell_noise: float = 0.0, rng_seed: int = 0,
                   model_axis: str = "params_total", data_axis: str = "n_train", target: str = "test_loss") -> list[dict]:
    """Run records from L = E + A/N^alpha + B/D^beta with multiplicative log-normal noise.

    ``noise`` is the per-run standard deviation of log L (seed noise); ``cell_noise`` a
    per-configuration one shared by its seeds.  Without B/beta the law is power_offset in D.
    """
    rng = np.random.default_rng(rng_seed)
    out = []
    for n in model_sizes:
        for d in data_sizes:
            if "B" in params:
                mean = params["E"] + params["A"] * n ** -params["alpha"] + params["B"] * d ** -params["beta"]
            else:
                mean = params["E"] + params["A"] * d ** -params["alpha"]
            c = rng.normal(0, cell_noise) if cell_noise else 0.0
            for s in range(seeds):
                out.append({"status": "ok", model_axis: float(n), data_axis: float(d), "seed": s,
                            target: float(mean * math.exp(c + rng.normal(0, noise))), "true_loss": float(mean)})
    return out
