"""Training on the cpp backend is bitwise reproducible: across runs and across thread counts."""
import numpy as np
import pytest

import fastscale as fs
from fastscale import nn, optim


def _data(seed=0, n=512, T=60, V=4000):
    rng = np.random.default_rng(seed)
    x = np.zeros((n, T), np.int32)
    lengths = rng.integers(1, T + 1, n)
    for i, L in enumerate(lengths):
        x[i, T - L :] = rng.integers(1, V, L)
    y = (x % 7 == 3).sum(1) > (lengths / 7)
    return x, y.astype(np.float32)


def _train(threads, lazy=False, seed=0):
    before = fs.get_num_threads()
    fs.set_num_threads(threads)
    try:
        x, y = _data()
        # Sizes past the kernels' single-thread cut-offs (Adam: 32k elements; dense: 2^20
        # multiply-adds), so 2 threads really split the work.
        model = nn.Sequential([nn.Embedding(4000, 128, mask_zero=True), nn.GlobalAveragePooling1D(),
                               nn.Dense(256, activation="relu"), nn.Dense(1, activation="sigmoid")])
        model.compile(optimizer=optim.Adam(learning_rate=1e-2, lazy=lazy), loss="binary_crossentropy",
                      metrics=["accuracy"], backend="cpp", seed=seed)
        model.fit(x, y, epochs=1, batch_size=64, seed=seed, verbose=0)
        return model.get_weights()
    finally:
        fs.set_num_threads(before)


@pytest.mark.parametrize("lazy", [False, True], ids=["adam", "lazy-adam"])
def test_one_epoch_bitwise_for_1_and_2_threads_and_two_runs(lazy):
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    one = _train(1, lazy)
    two = _train(2, lazy)
    again = _train(2, lazy)
    for a, b, c in zip(one, two, again):
        assert a.tobytes() == b.tobytes(), "1 vs 2 threads differ"
        assert b.tobytes() == c.tobytes(), "two runs in a row differ"
    # and training did move the weights
    assert not np.array_equal(one[0], _train(2, lazy, seed=1)[0])


def test_sparse_rows_adam_path_is_bitwise_the_dense_gradient_path(monkeypatch):
    """On cpp, Keras Adam takes the table's gradient as SparseRows (adam_step over every row,
    no (V, D) gradient); forcing the dense gradient must give the very same weights."""
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    from fastscale.nn import model as M

    rows_path = _train(2)
    monkeypatch.setattr(M, "_resolved_backend", lambda backend: "dense-gradient")
    dense_path = _train(2)
    for a, b in zip(rows_path, dense_path):
        assert a.tobytes() == b.tobytes()


def test_padded_inputs_train_as_bags_bitwise(monkeypatch):
    """fit turns padded ids into CSR bags of the non-zero ids once (masked mean); the weights,
    history and validation numbers are bitwise those of the padded path."""
    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    from fastscale.nn import model as M

    x, y = _data(3)
    x[5, 2] = 0  # a zero inside a review, not only leading padding

    def run():
        model = nn.Sequential([nn.Embedding(4000, 16, mask_zero=True), nn.GlobalAveragePooling1D(),
                               nn.Dense(8, activation="relu"), nn.Dense(1, activation="sigmoid")])
        model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"], backend="cpp", seed=1)
        h = model.fit(x, y, epochs=2, batch_size=32, validation_split=0.25, seed=1, verbose=0)
        return model.get_weights(), h.history

    calls = []
    real = M._Inputs.as_bags
    monkeypatch.setattr(M._Inputs, "as_bags", lambda self, V: calls.append(1) or real(self, V))
    w_bags, h_bags = run()
    assert len(calls) == 2  # training and validation inputs
    monkeypatch.setattr(M._Inputs, "as_bags", lambda self, V: self)
    w_pad, h_pad = run()
    for a, b in zip(w_bags, w_pad):
        assert a.tobytes() == b.tobytes()
    assert h_bags == h_pad


_FUSED_CASES = {
    "origin": dict(),
    "lazy": dict(lazy=True),
    "float64": dict(dtype="float64"),
    "two-hidden-no-bias": dict(hidden=[("tanh", True), ("sigmoid", False)]),
    "no-mask-csr": dict(mask_zero=False),
    "embedding-bag-sum": dict(bag="sum"),
    "adamw-torch-eps": dict(opt=lambda: optim.AdamW(learning_rate=3e-3, eps_placement="torch")),
    "l2": dict(opt=lambda: optim.Adam(learning_rate=3e-3, weight_decay=1e-3)),
    "from-logits-linear-head": dict(head=None, loss=lambda: nn.losses.BinaryCrossentropy(from_logits=True)),
    "from-logits-tanh-head": dict(head="tanh", loss=lambda: nn.losses.BinaryCrossentropy(from_logits=True)),
    "numpy": dict(backend="numpy"),
    "numpy-lazy": dict(backend="numpy", lazy=True),
}


@pytest.mark.parametrize("case", sorted(_FUSED_CASES))
def test_fused_step_is_bitwise_the_layer_path(case, monkeypatch):
    """fit's FusedStep (the step as direct kernel calls) against the layer-by-layer path:
    the same weights, optimizer state and history, bitwise, over two epochs with a partial
    last batch and validation."""
    from fastscale.nn import _step

    c = _FUSED_CASES[case]
    backend = c.get("backend", "cpp")
    if fs.backends()[backend] is not None:
        pytest.skip(f"{backend} unavailable: {fs.backends()[backend]}")
    x, y = _data(4, n=300, T=40, V=500)
    lengths = (x != 0).sum(1)
    off = np.zeros(x.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=off[1:])
    bags = (x[x != 0].astype(np.int64), off)
    used = []

    def run():
        if "bag" in c:
            first = [nn.EmbeddingBag(500, 12, mode=c["bag"], padding_idx=None)]
        else:
            first = [nn.Embedding(500, 12, mask_zero=c.get("mask_zero", True)), nn.GlobalAveragePooling1D()]
        hidden = [nn.Dense(7, activation=a, use_bias=b) for a, b in c.get("hidden", [("relu", True)])]
        head = nn.Dense(1, activation=c.get("head", "sigmoid"))
        model = nn.Sequential(first + hidden + [head], dtype=c.get("dtype", "float32"))
        opt = c["opt"]() if "opt" in c else optim.Adam(learning_rate=1e-2, lazy=c.get("lazy", False))
        loss = c["loss"]() if "loss" in c else "binary_crossentropy"
        model.compile(optimizer=opt, loss=loss, metrics=["accuracy"], backend=backend, seed=2)
        h = model.fit(bags, y, epochs=2, batch_size=32, validation_split=0.2, seed=2, verbose=0)
        state = model.optimizer.get_state()
        return model.get_weights(), h.history, state

    real = _step.FusedStep.step
    monkeypatch.setattr(_step.FusedStep, "step", lambda self, *a: used.append(1) or real(self, *a))
    w_fused, h_fused, s_fused = run()
    assert len(used) == 2 * 8  # 240 training samples in batches of 32, two epochs
    monkeypatch.setattr(_step, "ENABLED", False)
    w_layers, h_layers, s_layers = run()
    assert len(used) == 16
    for a, b in zip(w_fused, w_layers):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert h_fused == h_layers
    assert s_fused["step"] == s_layers["step"] == 16
    assert s_fused["slots"].keys() == s_layers["slots"].keys()
    for k in s_fused["slots"]:
        for s in ("m", "v"):
            assert s_fused["slots"][k][s].tobytes() == s_layers["slots"][k][s].tobytes(), (k, s)


def test_train_on_batch_fused_is_bitwise_the_layer_path(monkeypatch):
    """train_on_batch keeps fit's FusedStep across calls (CSR bags) and remakes it when the
    optimizer's state is replaced: the same weights, slots and returned logs as the layer path."""
    from fastscale.nn import _step

    if fs.backends()["cpp"] is not None:
        pytest.skip(f"cpp unavailable: {fs.backends()['cpp']}")
    x, y = _data(5, n=96, T=30, V=300)
    off = np.zeros(x.shape[0] + 1, np.int64)
    np.cumsum((x != 0).sum(1), out=off[1:])
    ids = x[x != 0].astype(np.int32)
    used = []
    real = _step.FusedStep.step
    monkeypatch.setattr(_step.FusedStep, "step", lambda self, *a: used.append(1) or real(self, *a))

    def run():
        model = nn.Sequential([nn.Embedding(300, 8, mask_zero=True), nn.GlobalAveragePooling1D(),
                               nn.Dense(5, activation="relu"), nn.Dense(1, activation="sigmoid")])
        model.compile(optimizer=optim.Adam(learning_rate=1e-2), loss="binary_crossentropy", metrics=["accuracy"],
                      backend="cpp", seed=3)
        logs = []
        for b in range(3):
            lo, hi = 32 * b, 32 * b + 32
            logs.append(model.train_on_batch((ids[off[lo]:off[hi]], off[lo:hi + 1] - off[lo]), y[lo:hi]))
            if b == 1:  # fresh slot arrays: the plan must notice
                model.optimizer.set_state(model.optimizer.get_state())
        return model.get_weights(), model.optimizer.get_state(), logs

    w_f, s_f, logs_f = run()
    assert len(used) == 3
    monkeypatch.setattr(_step, "ENABLED", False)
    w_l, s_l, logs_l = run()
    assert len(used) == 3
    assert logs_f == logs_l
    for a, b in zip(w_f, w_l):
        assert a.tobytes() == b.tobytes()
    for k in s_f["slots"]:
        for s in ("m", "v"):
            assert s_f["slots"][k][s].tobytes() == s_l["slots"][k][s].tobytes()
