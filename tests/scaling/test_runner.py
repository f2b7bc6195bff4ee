"""The sweep driver: specs, run ids, records, retries, resume after SIGKILL, engines."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastscale.scaling import runner as R
from fastscale.scaling.data import prepare
from fastscale.scaling.spec import Policy, SweepSpec, run_id

FAKE = "tests.scaling._fake:fake_train"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SMALL = {
    "name": "t", "design": "ladder", "protocol": "converged", "seeds": [0, 1],
    "axes": {"n_train": [200, 400, 800], "embed_dim": [8, 16], "hidden": "embed_dim // 2", "vocab_size": [500]},
    "train": {"max_epochs": 3, "patience": 1},
    "data": {"source": "synthetic", "synthetic_docs": 1000, "synthetic_vocab": 600, "n_val": 200, "n_test": 300,
             "synthetic_length": 20},
    "execution": {"max_retries": 1},
}


def spec(**over):
    d = json.loads(json.dumps(SMALL))
    for k, v in over.items():
        if isinstance(v, dict) and k in d:
            d[k].update(v)
        else:
            d[k] = v
    return SweepSpec.from_dict(d)


# ---- spec ------------------------------------------------------------------------------
def test_policy_is_parsed_not_evaluated():
    assert Policy("embed_dim // 2")({"embed_dim": 64}) == 32
    assert Policy("(embed_dim + 2) * 3 - vocab_size // 100")({"embed_dim": 4, "vocab_size": 1000}) == 8
    for bad in ["__import__('os').system('echo hi')", "embed_dim / 2", "embed_dim ** 2", "2.5 * embed_dim",
                "foo + 1", "embed_dim.bit_length()", "[embed_dim]", "embed_dim if 1 else 2"]:
        with pytest.raises(ValueError):
            Policy(bad, "hidden")


@pytest.mark.parametrize("over, match", [
    (dict(design="random"), "design"),
    (dict(protocol="forever"), "protocol"),
    (dict(seeds=[]), "seeds"),
    (dict(axes={"n_train": [100], "embed_dim": [8], "hidden": "hidden * 2", "vocab_size": [10]}), "cycle"),
    (dict(axes={"n_train": [100], "embed_dim": [8], "hidden": [4], "vocab_size": [10], "depth": [2]}), "unknown axes"),
    (dict(axes={"n_train": [100], "embed_dim": [8, 16], "hidden": [4, 8, 16], "vocab_size": [10]}), "equal lengths"),
    (dict(data={"source": "ftp://x"}), "data.source"),
    (dict(execution={"engine": "spark"}), "engine"),
    (dict(train={"lr": -1.0}), "lr"),
])
def test_bad_specs(over, match):
    with pytest.raises(ValueError, match=match):
        spec(**over)


def test_designs_expand_as_documented():
    lad = spec().points()
    assert [(p["n_train"], p["embed_dim"], p["hidden"]) for p in lad] == [
        (200, 8, 4), (400, 8, 4), (800, 8, 4), (200, 16, 8), (400, 16, 8), (800, 16, 8)]
    grid = spec(design="grid", axes={"n_train": [100, 200], "embed_dim": [8, 16], "hidden": [4, 8],
                                     "vocab_size": [500]}).points()
    assert len(grid) == 8
    one = spec(design="one_factor", axes={"n_train": [100, 200, 300], "embed_dim": [8, 16], "hidden": [4, 8],
                                          "vocab_size": [500]}).points()
    assert len(one) == 1 + 2 + 1 + 1
    assert all(sum(p[a] != one[0][a] for a in ("n_train", "embed_dim", "hidden")) <= 1 for p in one)


def test_toml_and_python_specs_agree(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text(textwrap.dedent("""
        name = "t"
        design = "ladder"
        protocol = "converged"
        seeds = [0, 1]
        [axes]
        n_train = [200, 400, 800]
        embed_dim = [8, 16]
        hidden = "embed_dim // 2"
        vocab_size = [500]
        [train]
        max_epochs = 3
        patience = 1
        [data]
        source = "synthetic"
        synthetic_docs = 1000
        synthetic_vocab = 600
        n_val = 200
        n_test = 300
        synthetic_length = 20
        [execution]
        max_retries = 1
    """))
    a, b = SweepSpec.from_toml(p), spec()
    assert a.to_dict() == b.to_dict()
    assert [r["run_id"] for r in a.runs("fp")] == [r["run_id"] for r in b.runs("fp")]


def test_run_ids_hash_config_seed_and_data():
    runs = spec().runs("fp1")
    ids = [r["run_id"] for r in runs]
    assert len(set(ids)) == len(ids) == 12
    assert ids == [r["run_id"] for r in spec().runs("fp1")]
    assert ids[0] != spec().runs("fp2")[0]["run_id"]
    assert ids[0] != spec(train={"lr": 2e-3}).runs("fp1")[0]["run_id"]
    assert run_id(runs[0], "fp1") == ids[0]


# ---- data ------------------------------------------------------------------------------
def test_data_is_prepared_once_nested_and_vocab_clipped(tmp_path):
    s = spec()
    d1 = prepare(s, cache_dir=str(tmp_path / "d"))
    mtime = os.path.getmtime(tmp_path / "d" / "pool_ids.npy")
    d2 = prepare(s, cache_dir=str(tmp_path / "d"))
    assert d2.fingerprint == d1.fingerprint and os.path.getmtime(tmp_path / "d" / "pool_ids.npy") == mtime
    x_small, _, _ = d1.padded("pool", 200, 600, None)
    x_big, _, _ = d1.padded("pool", 400, 600, None)
    np.testing.assert_array_equal(x_small, x_big[:200, : x_small.shape[1]])  # nested subsets
    x_v, _, ntok = d1.padded("pool", 200, 50, 7)
    assert x_v.shape[1] <= 7 and x_v.max() < 50 and ntok == int((x_v != 0).sum())
    assert 0.0 < d1.meta["bayes_test_loss"] < np.log(2)
    assert prepare(spec(data={"data_seed": 1})).fingerprint != d1.fingerprint


def test_padded_matches_a_python_loop(tmp_path):
    d = prepare(spec())
    ids, off, _ = d.split("pool", 50)
    x, _, _ = d.padded("pool", 50, 100, 12)
    for i in range(50):
        row = [t if t < 100 else 1 for t in ids[off[i]: off[i + 1]][:12]]
        assert list(x[i, : len(row)]) == row and not x[i, len(row):].any()


# ---- running ---------------------------------------------------------------------------
def test_records_flops_params_and_resume(tmp_path):
    out = str(tmp_path / "run")
    counts = R.run_sweep(spec(), out, train_fn=FAKE, progress=False)
    assert counts == {"ok": 12, "failed": 0, "diverged": 0, "skipped": 0}
    recs = R.read_records(os.path.join(out, "runs.jsonl"))
    assert len(recs) == 12 and len({r["run_id"] for r in recs}) == 12
    r = recs[0]
    for k in ["run_id", "status", "error", "fastscale_version", "git_sha", "host", "backend", "engine", "started",
              "finished", "n_train", "embed_dim", "hidden", "vocab_size", "batch_size", "lr", "protocol", "seed",
              "params_total", "params_embedding", "params_nonembedding", "tokens_train", "examples_seen",
              "tokens_seen", "epochs", "best_epoch", "train_loss", "val_loss", "test_loss", "train_acc", "val_acc",
              "test_acc", "test_loss_se", "wall_train", "wall_eval", "wall_first_step", "tokens_per_s",
              "flops_forward", "flops_backward", "flops_optimizer"]:
        assert k in r, k
    assert r["params_embedding"] == r["vocab_size"] * r["embed_dim"]
    assert r["params_total"] == r["params_embedding"] + r["params_nonembedding"]
    d, h, L = r["embed_dim"], r["hidden"], r["tokens_seen"]
    assert r["flops_forward"] + r["flops_backward"] == pytest.approx(2 * L * d + r["examples_seen"] * (6 * d * h + 6 * h))
    assert r["flops_optimizer"] == 12 * r["params_total"] * r["steps"]
    with pytest.raises(FileExistsError):
        R.run_sweep(spec(), out, train_fn=FAKE, progress=False)
    again = R.run_sweep(spec(), out, train_fn=FAKE, progress=False, resume=True)
    assert again == {"ok": 0, "failed": 0, "diverged": 0, "skipped": 12}
    st = R.status(out)
    assert (st["planned"], st["ok"], st["pending"]) == (12, 12, 0)


def test_failures_are_retried_then_recorded(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_FAIL_DIR", str(tmp_path))
    monkeypatch.setenv("FAKE_ALWAYS_FAIL", "8")
    out = str(tmp_path / "run")
    counts = R.run_sweep(spec(), out, train_fn=FAKE, progress=False)
    # embed_dim 8: 6 runs fail twice (1 retry) and stay failed; embed_dim 16 seed 1: 3 runs
    # fail once, then succeed.
    assert counts == {"ok": 6, "failed": 6, "diverged": 0, "skipped": 0}
    recs = R.read_records(os.path.join(out, "runs.jsonl"))
    assert len(recs) == 6 * 2 + 3 * 2 + 3
    final = R.latest_by_run(recs)
    bad = [r for r in final.values() if r["status"] == "failed"]
    assert len(bad) == 6 and all("injected permanent failure" in r["error"] and r["attempt"] == 2 for r in bad)
    assert all(not r["will_retry"] for r in bad)
    # resume retries the failed ones only
    monkeypatch.delenv("FAKE_ALWAYS_FAIL")
    again = R.run_sweep(spec(), out, train_fn=FAKE, progress=False, resume=True)
    assert again == {"ok": 6, "failed": 0, "diverged": 0, "skipped": 6}


def test_diverged_runs_are_recorded_not_retried(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_DIVERGE", "16")
    out = str(tmp_path / "run")
    counts = R.run_sweep(spec(), out, train_fn=FAKE, progress=False)
    assert counts["diverged"] == 6 and counts["ok"] == 6
    recs = R.read_records(os.path.join(out, "runs.jsonl"))
    assert len(recs) == 12
    assert all("nan" in r["error"] for r in recs if r["status"] == "diverged")


def test_progress_line_counts():
    import io

    s = io.StringIO()
    p = R.Progress(10, 2, stream=s)
    p.update("ok")
    p.update("failed")
    line = p.line()
    assert "done 3" in line and "failed 1" in line and "pending 6" in line and "ETA" in line


def test_truncated_last_line_is_tolerated(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    with open(path, "w") as f:
        f.write(json.dumps({"run_id": "a", "status": "ok"}) + "\n" + '{"run_id": "b", "sta')
    assert [r["run_id"] for r in R.read_records(path)] == ["a"]
    w = R.RecordWriter(path)
    w.write({"run_id": "c", "status": "ok"})
    w.close()
    assert [r["run_id"] for r in R.read_records(path)] == ["a", "c"]


DRIVER = """
import sys
sys.path[:0] = [{root!r}, {src!r}]
from tests.scaling.test_runner import spec
from fastscale.scaling.runner import run_sweep
if __name__ == "__main__":  # spawned workers re-import this file
    s = spec(axes={{"n_train": [100, 200, 300, 400, 500], "embed_dim": [8, 16], "hidden": "embed_dim // 2",
                   "vocab_size": [500]}}, seeds=[0, 1, 2])
    run_sweep(s, {out!r}, train_fn={fake!r}, progress=False, resume=True)
"""


def test_sigkill_of_the_driver_then_resume(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER.format(root=ROOT, src=os.path.join(ROOT, "src"), out=out, fake=FAKE))
    env = {**os.environ, "FAKE_SLEEP": "0.25"}
    proc = subprocess.Popen([sys.executable, str(script)], env=env, start_new_session=True)
    runs = os.path.join(out, "runs.jsonl")
    t0 = time.time()
    while time.time() - t0 < 60:
        if len(R.read_records(runs)) >= 8:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the driver only: its workers are orphaned mid-run
    proc.wait()
    before = R.read_records(runs)
    time.sleep(0.6)  # orphaned workers finish their run but, not being the driver, write nothing
    assert len(R.read_records(runs)) == len(before)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # clean up whatever this test started
    except ProcessLookupError:
        pass
    assert 8 <= len(before) < 30, len(before)
    monkeypatch.setenv("FAKE_SLEEP", "0")
    s = spec(axes={"n_train": [100, 200, 300, 400, 500], "embed_dim": [8, 16], "hidden": "embed_dim // 2",
                   "vocab_size": [500]}, seeds=[0, 1, 2])
    counts = R.run_sweep(s, out, train_fn=FAKE, progress=False, resume=True)
    after = R.read_records(runs)
    ids = [r["run_id"] for r in after]
    assert len(ids) == len(set(ids)) == 30  # none repeated, none lost
    assert ids[: len(before)] == [r["run_id"] for r in before]
    assert counts["skipped"] == len(before) and counts["ok"] == 30 - len(before)


def test_local_engine_survives_a_killed_worker(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_KILL_DIR", str(tmp_path))
    out = str(tmp_path / "run")
    counts = R.run_sweep(spec(), out, train_fn=FAKE, progress=False)
    assert counts["ok"] == 12 and counts["failed"] == 0
    recs = R.read_records(os.path.join(out, "runs.jsonl"))
    died = [r for r in recs if r["status"] == "failed"]
    assert died and all("died" in r["error"] and r["will_retry"] for r in died)
    assert len({r["run_id"] for r in recs if r["status"] == "ok"}) == 12


def test_dask_local_cluster_with_a_worker_killed_mid_sweep(tmp_path, monkeypatch):
    pytest.importorskip("distributed", reason="dask distributed not installed (pip install 'fastscale[dask]')")
    monkeypatch.setenv("FAKE_KILL_DIR", str(tmp_path))
    monkeypatch.setenv("FAKE_SLEEP", "0.05")
    out = str(tmp_path / "run")
    counts = R.run_sweep(spec(), out, train_fn=FAKE, progress=False, engine="dask", workers=2)
    assert os.path.exists(tmp_path / "killed")  # a worker really died
    assert counts["ok"] == 12 and counts["failed"] == 0
    recs = R.read_records(os.path.join(out, "runs.jsonl"))
    ok = [r for r in recs if r["status"] == "ok"]
    assert len(ok) == len({r["run_id"] for r in ok}) == 12
    assert all(r["engine"] == "dask" for r in recs)


def test_dask_existing_cluster_by_address(tmp_path):
    distributed = pytest.importorskip("distributed", reason="dask distributed not installed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as c:
        out = str(tmp_path / "run")
        # an address means a cluster that may not share our disk: the data is scattered
        counts = R.run_sweep(spec(), out, train_fn=FAKE, progress=False, address=c.scheduler_address)
    assert counts["ok"] == 12
    assert len({r["run_id"] for r in R.read_records(os.path.join(out, "runs.jsonl"))}) == 12


def test_tsv_source_is_tokenized_once_into_csr(tmp_path):
    pytest.importorskip("fastscale.text")
    rng = np.random.default_rng(0)
    words = ["good", "bad", "great", "awful", "movie", "plot", "actor", "the", "a", "fine"]
    lines = []
    for i in range(300):
        lab = i % 2
        w = rng.choice(words, size=rng.integers(3, 12))
        lines.append(f"{lab}\t{' '.join(w)} {'great' if lab else 'awful'}<br />")
    path = tmp_path / "d.tsv"
    path.write_text("\n".join(lines) + "\n")
    s = spec(data={"source": f"tsv:{path}", "n_val": 50, "n_test": 50})
    d = prepare(s, cache_dir=str(tmp_path / "cache"))
    assert (d.meta["n_pool"], d.meta["n_val"], d.meta["n_test"]) == (200, 50, 50)
    (ids, off), y, ntok = d.csr("pool", 100, 5, None)
    assert off[0] == 0 and off[-1] == len(ids) == ntok and len(y) == 100
    assert ids.min() >= 1 and ids.max() <= 4  # ids >= vocab_size map to OOV (1); no padding
    from fastscale import text

    # The same ids a Tokenizer(num_words=5, oov_token=...) fitted on the pool would give.
    texts = [ln.split("\t", 1)[1] for ln in lines]
    order = np.random.default_rng(s.data["data_seed"]).permutation(300)
    test_idx, rest = order[-50:], order[:-50]
    pool = [texts[i] for i in rest[:200]]
    tok = text.Tokenizer(num_words=5, oov_token="<OOV>")
    tok.fit_on_texts(pool)
    want = tok.texts_to_sequences(pool[:100])
    got = [list(ids[off[i]: off[i + 1]]) for i in range(100)]
    assert got == want
    assert prepare(s, cache_dir=str(tmp_path / "cache")).fingerprint == d.fingerprint
