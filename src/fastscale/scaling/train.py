"""The default train function of a sweep: the origin's classifier on fastscale.nn.

``train_classifier(config, data) -> metrics``: Embedding(V, d, mask_zero=True) ->
GlobalAveragePooling1D -> Dense(h, relu) -> Dense(1, sigmoid), binary cross-entropy, Adam.
Protocol ``converged``: up to ``max_epochs`` with EarlyStopping on the fixed validation split
(restoring the best epoch's weights); ``single_pass``: one epoch.  Inputs go in as CSR bags,
so no run pays for padding.  Quality is measured at the best validation epoch.
"""
from __future__ import annotations

import time

import numpy as np

from .data import SweepData, bce_per_example, mean_and_se


def _build(cfg, nn, optim):
    model = nn.Sequential([
        nn.Embedding(cfg["vocab_size"], cfg["embed_dim"], mask_zero=True),
        nn.GlobalAveragePooling1D(),
        nn.Dense(cfg["hidden"], activation="relu"),
        nn.Dense(1, activation="sigmoid"),
    ])
    model.compile(optimizer=optim.Adam(learning_rate=cfg["lr"]), loss="binary_crossentropy",
                  metrics=["accuracy"], seed=int(cfg["seed"]))
    return model


def train_classifier(cfg: dict, data: SweepData) -> dict:
    from fastscale import nn, optim

    from .runner import Diverged

    V, maxlen, bs = cfg["vocab_size"], cfg.get("maxlen"), cfg["batch_size"]
    x, y, ntok = data.csr("pool", cfg["n_train"], V, maxlen)
    xv, yv, _ = data.csr("val", None, V, maxlen)
    xt, yt, _ = data.csr("test", None, V, maxlen)

    # First-step latency: one update of a fresh model of this config (build + first kernel
    # calls), timed apart so that the training run itself stays untouched.
    probe = _build(cfg, nn, optim)
    first = (x[0][: int(x[1][min(bs, len(y))])], x[1][: min(bs, len(y)) + 1])
    t0 = time.perf_counter()
    probe.fit(first, y[: min(bs, len(y))], batch_size=bs, epochs=1, verbose=0, shuffle=False)
    wall_first = time.perf_counter() - t0
    del probe

    model = _build(cfg, nn, optim)
    if cfg["protocol"] == "single_pass":
        epochs, cbs = 1, []
    else:
        epochs = cfg["max_epochs"]
        cbs = [nn.EarlyStopping(monitor="val_loss", patience=cfg["patience"], restore_best_weights=True)]
    t0 = time.perf_counter()
    try:
        hist = model.fit(x, y, batch_size=bs, epochs=epochs, verbose=0, callbacks=cbs,
                         validation_data=(xv, yv), seed=int(cfg["seed"]))
    except nn.TrainingDivergedError as e:
        raise Diverged(str(e)) from None
    wall_train = time.perf_counter() - t0
    h = hist.history
    vl = np.asarray(h["val_loss"], float)
    if not np.all(np.isfinite(vl)):
        raise Diverged(f"validation loss became non-finite: {vl.tolist()}")
    best = int(np.argmin(vl))  # EarlyStopping restored this epoch's weights
    t0 = time.perf_counter()
    p = model.predict(xt, batch_size=1024)
    wall_eval = time.perf_counter() - t0
    per = bce_per_example(p, yt)
    test_loss, test_se = mean_and_se(per)
    test_acc = float(np.mean((np.asarray(p).reshape(-1) >= 0.5) == (yt >= 0.5)))
    n_ep = len(vl)
    tokens_seen = int(sum(s["tokens"] for s in hist.epoch_stats))
    train_secs = float(sum(s["seconds"] for s in hist.epoch_stats))
    return {
        "train_loss": float(h["loss"][best]), "train_acc": float(h["accuracy"][best]),
        "val_loss": float(vl[best]), "val_acc": float(h["val_accuracy"][best]),
        "test_loss": test_loss, "test_loss_se": test_se, "test_acc": test_acc,
        "epochs": n_ep, "best_epoch": best + 1, "tokens_train": ntok, "tokens_seen": tokens_seen,
        "examples_seen": len(y) * n_ep, "steps": n_ep * -(-len(y) // bs),
        "wall_train": wall_train, "wall_train_steps": train_secs, "wall_eval": wall_eval,
        "wall_first_step": wall_first, "n_test": len(yt),
    }
