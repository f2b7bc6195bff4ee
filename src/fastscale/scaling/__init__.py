"""fastscale.scaling: sweeps that train many models, fit scaling laws, check and report them."""
from .fit import FORMS, CurveFit, LawFit, fit_curve, fit_law, predict, synthetic_runs

__all__ = ["FORMS", "CurveFit", "LawFit", "fit_curve", "fit_law", "predict", "synthetic_runs"]
