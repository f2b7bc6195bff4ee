"""Outputs of a sweep: results.csv, fit/<form>.json, plots, report.md, and the command line."""
import csv
import json
import os

import pytest

pytest.importorskip("scipy")
pytest.importorskip("matplotlib")

from fastscale import cli
from fastscale.scaling import fit_sweep, load_fits, load_results, run_sweep, write_report

from .test_runner import FAKE, spec

AXES = {"n_train": [100, 200, 300, 500, 700, 900], "embed_dim": [8, 16, 32, 64], "hidden": "embed_dim // 2",
        "vocab_size": [500]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory, monkeypatch_module):
    monkeypatch_module.setenv("FAKE_ALWAYS_FAIL", "999")
    out = str(tmp_path_factory.mktemp("sweep") / "s")
    s = spec(axes=AXES, seeds=[0, 1], execution={"max_retries": 0})
    run_sweep(s, out, train_fn=FAKE, progress=False)
    fits = fit_sweep(out, n_bootstrap=10)
    path = write_report(out)
    return out, fits, path


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_results_csv_has_one_row_per_ok_run(swept):
    out, _, _ = swept
    with open(os.path.join(out, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6 * 4 * 2
    a = sorted(load_results(out), key=lambda r: r["run_id"])
    b = sorted(load_results(os.path.join(out, "results.csv")), key=lambda r: r["run_id"])
    for x, y in zip(a, b):
        for k in ("n_train", "embed_dim", "params_total", "seed"):
            assert x[k] == y[k]
        assert x["test_loss"] == pytest.approx(y["test_loss"], rel=1e-12)


def test_fit_files_round_trip(swept):
    out, fits, _ = swept
    assert set(os.listdir(os.path.join(out, "fit"))) == {"chinchilla.json", "power_offset.json", "envelope.json"}
    back = load_fits(out)
    assert back["chinchilla"].curves[0].params == fits["chinchilla"].curves[0].params
    d = json.load(open(os.path.join(out, "fit", "chinchilla.json")))
    assert {"params", "intervals_95", "diagnostics", "warnings"} <= set(d["curves"][0])
    assert d["heldout"] and {"relative_error", "interval_95", "inside"} <= set(d["heldout"][0])
    # the fake law is chinchilla-shaped: the exponents come back (wide intervals at 10 replicates)
    c = back["chinchilla"].curves[0]
    assert 0.2 < c.params["alpha"] < 0.4 and 0.3 < c.params["beta"] < 0.5


def test_plots_are_real_pngs(swept):
    out, _, _ = swept
    names = set(os.listdir(os.path.join(out, "plots")))
    assert {"loss_vs_data.png", "loss_vs_params.png", "fit_power_offset.png", "fit_envelope.png", "heldout.png",
            "residuals.png", "tokens_per_s.png"} <= names
    for n in names:
        with open(os.path.join(out, "plots", n), "rb") as f:
            head = f.read(8)
        assert head == b"\x89PNG\r\n\x1a\n"
        assert os.path.getsize(os.path.join(out, "plots", n)) > 10_000


def test_report_has_tables_fits_heldout_warnings_limits(swept):
    _, _, path = swept
    text = open(path).read()
    for s in ["## Test loss (mean ± standard error over seeds)", "## Fit: chinchilla", "95% interval",
              "### Reducible loss L - E", "### Held-out check (chinchilla)", "relative error", "## Warnings",
              "## Honest limits", "weakly identified", "N is `params_total`", "![loss_vs_data.png]"]:
        assert s in text, s
    # 6 data sizes -> the main table has a column per size and a row per model size
    assert text.count("| 8 | 4 |") >= 1 and "n_train=900" in text


def test_failed_runs_appear_in_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_ALWAYS_FAIL", "16")
    out = str(tmp_path / "s")
    run_sweep(spec(axes=AXES, seeds=[0], execution={"max_retries": 0}), out, train_fn=FAKE, progress=False)
    text = open(write_report(out, n_bootstrap=5, plots=False)).read()
    assert "## Failed and diverged runs" in text and "injected permanent failure" in text


def test_command_line(tmp_path, capsys):
    toml = tmp_path / "s.toml"
    toml.write_text("""
name = "cli"
design = "ladder"
seeds = [0]
[axes]
n_train = [100, 200, 400]
embed_dim = [8, 16, 32]
hidden = "embed_dim // 2"
vocab_size = [500]
[train]
max_epochs = 2
patience = 1
[data]
source = "synthetic"
synthetic_docs = 500
synthetic_vocab = 600
n_val = 100
n_test = 100
""")
    out = str(tmp_path / "out")
    assert cli.main(["sweep", "plan", str(toml)]) == 0
    assert "9 runs" in capsys.readouterr().out
    assert cli.main(["sweep", "run", str(toml), "--out", out, "--train-fn", FAKE, "--quiet"]) == 0
    assert "ok 9" in capsys.readouterr().out
    assert cli.main(["sweep", "run", str(toml), "--out", out, "--train-fn", FAKE, "--resume"]) == 0
    cap = capsys.readouterr()
    assert "skipped (already done) 9" in cap.out and "done 9" in cap.err  # the progress line
    assert cli.main(["sweep", "status", out]) == 0
    assert "ok 9, failed 0, diverged 0, pending 0" in capsys.readouterr().out
    assert cli.main(["sweep", "fit", out, "--form", "chinchilla", "--bootstrap", "10"]) == 0
    assert "chinchilla" in capsys.readouterr().out
    assert cli.main(["sweep", "report", out]) == 0
    assert os.path.exists(os.path.join(out, "report.md"))
