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
