"""A real sweep: the default train function (fastscale.nn) on the synthetic teacher, then
the fit and the report.  Skips until the training stack is importable."""
import os

import pytest

pytest.importorskip("scipy")


def _has_training_stack():
    try:
        from fastscale import nn, optim  # noqa: F401

        return hasattr(nn, "Sequential") and hasattr(optim, "Adam")
    except ImportError:
        return False


pytestmark = pytest.mark.skipif(not _has_training_stack(), reason="fastscale.nn / fastscale.optim not available yet")


def test_synthetic_sweep_trains_fits_and_reports(tmp_path):
    from fastscale.scaling import SweepSpec, fit_sweep, load_results, run_sweep, write_report

    spec = SweepSpec.from_dict({
        "name": "e2e", "design": "ladder", "protocol": "converged", "seeds": [0, 1],
        "axes": {"n_train": [250, 500, 1000, 2000], "embed_dim": [2, 4, 8], "hidden": "embed_dim * 2",
                 "vocab_size": [800]},
        "train": {"batch_size": 32, "lr": 3e-3, "max_epochs": 20, "patience": 2},
        "data": {"source": "synthetic", "synthetic_docs": 2000, "synthetic_vocab": 800, "n_val": 500, "n_test": 2000,
                 "synthetic_length": 30},
    })
    out = str(tmp_path / "e2e")
    counts = run_sweep(spec, out, progress=False)
    assert counts["ok"] == 24 and counts["failed"] == 0, counts
    recs = load_results(out)
    bayes = None
    with open(os.path.join(out, "sweep.toml"), "rb") as f:
        import tomllib

        bayes = tomllib.load(f)["meta"]["data_bayes_test_loss"]
    for r in recs:
        # a trained classifier: better than chance, never better than the teacher's own noise
        assert bayes - 3 * r["test_loss_se"] < r["test_loss"] < 0.69, (r["test_loss"], bayes)
        assert 1 <= r["best_epoch"] <= r["epochs"] <= 20
        assert r["tokens_seen"] == r["tokens_train"] * r["epochs"]
        assert r["tokens_per_s"] > 0 and r["wall_first_step"] > 0
    # more data helps, on average over model sizes and seeds
    mean = {n: sum(r["test_loss"] for r in recs if r["n_train"] == n) / 6 for n in (250, 2000)}
    assert mean[2000] < mean[250]
    fits = fit_sweep(out, ["chinchilla", "envelope"], n_bootstrap=10)
    assert "chinchilla" in fits
    text = open(write_report(out, fits)).read()
    assert "## Fit: chinchilla" in text and "Bayes-optimal test loss" in text


@pytest.mark.slow
def test_imdb_ladder_sweep_within_ten_minutes(tmp_path):
    """Issue 6 point 8: >= 100 runs (6 sizes 1,000..20,000 x 6 model sizes x 3 seeds) on IMDB
    in <= 10 minutes on the 2-core machine, then fit and report."""
    import time

    from fastscale.scaling import SweepSpec, run_sweep, write_report
    from fastscale.scaling.spec import default_data_dir

    if default_data_dir() is None:
        pytest.skip("IMDB data not found (../shared/data/imdb or FASTSCALE_IMDB_DIR)")
    here = os.path.dirname(os.path.abspath(__file__))
    spec = SweepSpec.from_toml(os.path.join(here, "..", "..", "src", "fastscale", "scaling", "examples",
                                            "imdb_ladder.toml"))
    assert len(spec.runs("x")) >= 100
    out = str(tmp_path / "imdb")
    t0 = time.time()
    counts = run_sweep(spec, out, progress=False)
    elapsed = time.time() - t0
    assert counts["ok"] == 108, counts
    assert elapsed <= 600, f"sweep took {elapsed:.0f} s"
    text = open(write_report(out, n_bootstrap=200)).read()
    assert "### Held-out check (chinchilla)" in text
