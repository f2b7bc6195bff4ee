"""Small train functions for the runner tests: no training stack needed, importable by the
spawned worker processes.  Behaviour is steered by environment variables (inherited by
workers): FAKE_SLEEP (seconds per run), FAKE_FAIL_DIR (runs with seed 1 and embed_dim 16 fail
on their first attempt; a marker file there counts attempts across processes),
FAKE_ALWAYS_FAIL (embed_dim of runs that always fail), FAKE_DIVERGE (embed_dim that diverges), FAKE_KILL_DIR (one run SIGKILLs its own worker
process on its first attempt).
"""
import os
import signal
import time

import numpy as np

from fastscale.scaling.runner import Diverged, count_params

LAW = dict(E=0.3, A=30.0, alpha=0.3, B=25.0, beta=0.4)


def fake_train(cfg, data):
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
    fail_dir = os.environ.get("FAKE_FAIL_DIR")
    if fail_dir and cfg["seed"] == 1 and cfg["embed_dim"] == 16:
        marker = os.path.join(fail_dir, f"{cfg['n_train']}-{cfg['embed_dim']}-{cfg['seed']}")
        if not os.path.exists(marker):
            open(marker, "w").close()
            raise RuntimeError("injected first-attempt failure")
    kill_dir = os.environ.get("FAKE_KILL_DIR")
    if kill_dir and cfg["seed"] == 0 and cfg["embed_dim"] == 16 and cfg["n_train"] == 400:
        marker = os.path.join(kill_dir, "killed")
        if not os.path.exists(marker):
            open(marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)  # the worker process dies mid-run
    if str(cfg["embed_dim"]) == os.environ.get("FAKE_ALWAYS_FAIL"):
        raise ValueError("injected permanent failure")
    if str(cfg["embed_dim"]) == os.environ.get("FAKE_DIVERGE"):
        raise Diverged("loss became nan at epoch 2")
    x, y, ntok = data.padded("pool", cfg["n_train"], cfg["vocab_size"], cfg["maxlen"])
    n = count_params(cfg)["params_total"]
    rng = np.random.default_rng(cfg["seed"] * 1000 + cfg["n_train"] + cfg["embed_dim"])
    loss = (LAW["E"] + LAW["A"] * n ** -LAW["alpha"] + LAW["B"] * cfg["n_train"] ** -LAW["beta"]) * np.exp(rng.normal(0, 0.01))
    epochs = 3
    return {"test_loss": float(loss), "test_loss_se": 0.005, "test_acc": 0.8, "val_loss": float(loss), "val_acc": 0.8,
            "train_loss": float(loss) * 0.8, "train_acc": 0.9, "epochs": epochs, "best_epoch": 2,
            "tokens_train": ntok, "tokens_seen": ntok * epochs, "examples_seen": len(y) * epochs,
            "steps": epochs * -(-len(y) // cfg["batch_size"]), "wall_train": 0.01, "wall_eval": 0.001,
            "wall_first_step": 0.001, "checksum": int(x.sum() % 1000003)}
