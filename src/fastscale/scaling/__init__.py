"""fastscale.scaling: sweeps that train many models, fit scaling laws, check and report them.

    from fastscale.scaling import SweepSpec, run_sweep, load_results, fit_law, write_report

See SCALING.md for the specification.  Fitting needs scipy, plots need matplotlib, the dask
engine needs dask distributed; none is imported until used.
"""
from .fit import FORMS, CurveFit, LawFit, fit_curve, fit_law, predict, synthetic_runs
from .report import fit_sweep, load_fits, load_results, write_report, write_results_csv
from .runner import Diverged, plan, run_sweep, status
from .spec import Policy, SweepSpec

__all__ = [
    "FORMS", "CurveFit", "Diverged", "LawFit", "Policy", "SweepSpec", "fit_curve", "fit_law", "fit_sweep",
    "load_fits", "load_results", "plan", "predict", "run_sweep", "status", "synthetic_runs", "write_report",
    "write_results_csv",
]
