"""dense forward + backward at the origin model's shapes: fastscale backends vs NumPy and
PyTorch written by hand, on the same arrays, 2 threads each.

    python -m pytest benchmarks/bench_dense.py --benchmark-only

Layers: "hidden" = Dense(64, relu) on the pooled (64, 128) embeddings, "output" = Dense(1,
sigmoid) on its (64, 64) output; "mlp" = both, forward and backward (dx of both layers, as
the embedding backward needs it).  At these sizes the cost is call overhead and memory
traffic, not arithmetic (the hidden layer's three matmuls are ~1.6 M multiply-adds).
"""
import numpy as np
import pytest

import fastscale as fs

from .conftest import torch_or_skip

BACKENDS = ["cpp", "numba", "numpy"]
PEERS = ["numpy_by_hand", "torch_autograd", "torch_by_hand"]
LAYERS = {"hidden": (64, 128, 64, "relu"), "output": (64, 64, 1, "sigmoid")}


def _skip_unavailable(backend):
    if fs.backends()[backend] is not None:
        pytest.skip(f"{backend} unavailable: {fs.backends()[backend]}")


def layer_arrays(B, I, O, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, I)).astype(np.float32)
    w = (rng.standard_normal((I, O)) / np.sqrt(I)).astype(np.float32)
    b = rng.standard_normal(O).astype(np.float32) * 0.1
    dout = rng.standard_normal((B, O)).astype(np.float32)
    return x, w, b, dout


# ---------------------------------------------------------------------------- one layer
def fastscale_step(x, w, b, dout, act, backend):
    def step():
        out = fs.dense_forward(x, w, b, act, backend=backend)
        return fs.dense_backward(dout, x, w, out, act, backend=backend)

    return step


def numpy_step(x, w, b, dout, act):
    """What a NumPy user writes: matmul, bias, activation; the three backward matmuls."""

    def step():
        z = x @ w + b
        if act == "relu":
            out = np.maximum(z, 0)
            dz = dout * (out > 0)
        else:
            out = 1 / (1 + np.exp(-z))
            dz = dout * out * (1 - out)
        return dz @ w.T, x.T @ dz, dz.sum(0)

    return step


def torch_steps(x, w, b, dout, act):
    torch = torch_or_skip()
    F = torch.nn.functional
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(np.ascontiguousarray(w.T)).requires_grad_()  # F.linear's (O, I)
    tb = torch.from_numpy(b).requires_grad_()
    td = torch.from_numpy(dout)
    f = F.relu if act == "relu" else torch.sigmoid

    def autograd():
        tx.grad = tw.grad = tb.grad = None
        f(F.linear(tx, tw, tb)).backward(td)
        return tx.grad, tw.grad, tb.grad

    hx, hw, hb = torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)

    def by_hand():
        with torch.no_grad():
            out = f(torch.addmm(hb, hx, hw))
            dz = td * (out > 0) if act == "relu" else td * out * (1 - out)
            return dz @ hw.T, hx.T @ dz, dz.sum(0)

    return autograd, by_hand


def make_step(impl, x, w, b, dout, act):
    if impl in BACKENDS:
        _skip_unavailable(impl)
        return fastscale_step(x, w, b, dout, act, impl)
    if impl == "numpy_by_hand":
        return numpy_step(x, w, b, dout, act)
    autograd, by_hand = torch_steps(x, w, b, dout, act)
    return autograd if impl == "torch_autograd" else by_hand


@pytest.mark.parametrize("impl", BACKENDS + PEERS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_forward_backward(benchmark, layer, impl):
    B, I, O, act = LAYERS[layer]
    benchmark.group = f"dense forward+backward {layer} {B}x{I}@{I}x{O} {act}"
    x, w, b, dout = layer_arrays(B, I, O)
    step = make_step(impl, x, w, b, dout, act)
    step()  # jit / warm
    benchmark(step)
    benchmark.extra_info["madds"] = 3 * B * I * O


@pytest.mark.parametrize("impl", BACKENDS + ["numpy_by_hand", "torch"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_forward(benchmark, layer, impl):
    B, I, O, act = LAYERS[layer]
    benchmark.group = f"dense forward {layer} {B}x{I}@{I}x{O} {act}"
    x, w, b, _ = layer_arrays(B, I, O)
    if impl in BACKENDS:
        _skip_unavailable(impl)
        step = lambda: fs.dense_forward(x, w, b, act, backend=impl)  # noqa: E731
    elif impl == "numpy_by_hand":
        if act == "relu":
            step = lambda: np.maximum(x @ w + b, 0)  # noqa: E731
        else:
            step = lambda: 1 / (1 + np.exp(-(x @ w + b)))  # noqa: E731
    else:
        torch = torch_or_skip()
        tx, tw, tb = torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(w.T)), torch.from_numpy(b)
        f = torch.relu if act == "relu" else torch.sigmoid

        def step():
            with torch.no_grad():
                return f(torch.nn.functional.linear(tx, tw, tb))

    step()
    benchmark(step)


# ---------------------------------------------------------------------------- both layers
@pytest.mark.parametrize("impl", BACKENDS + ["numpy_by_hand", "torch_autograd"])
def test_mlp(benchmark, impl):
    """Dense(64, relu) -> Dense(1, sigmoid), forward and backward with dx of both layers."""
    benchmark.group = "dense mlp 64x128 -> 64 relu -> 1 sigmoid, forward+backward"
    x, w1, b1, _ = layer_arrays(64, 128, 64, seed=1)
    _, w2, b2, d2 = layer_arrays(64, 64, 1, seed=2)
    if impl in BACKENDS:
        _skip_unavailable(impl)

        def step():
            h = fs.dense_forward(x, w1, b1, "relu", backend=impl)
            p = fs.dense_forward(h, w2, b2, "sigmoid", backend=impl)
            dh, dw2, db2 = fs.dense_backward(d2, h, w2, p, "sigmoid", backend=impl)
            return fs.dense_backward(dh, x, w1, h, "relu", backend=impl), dw2, db2

    elif impl == "numpy_by_hand":

        def step():
            h = np.maximum(x @ w1 + b1, 0)
            p = 1 / (1 + np.exp(-(h @ w2 + b2)))
            dz2 = d2 * p * (1 - p)
            dh = dz2 @ w2.T
            dz1 = dh * (h > 0)
            return (dz1 @ w1.T, x.T @ dz1, dz1.sum(0)), (x.T @ dz2, dz2.sum(0))

    else:
        torch = torch_or_skip()
        F = torch.nn.functional
        tx = torch.from_numpy(x).requires_grad_()
        params = [torch.from_numpy(np.ascontiguousarray(a)).requires_grad_() for a in (w1.T, b1, w2.T, b2)]
        td = torch.from_numpy(d2)

        def step():
            tx.grad = None
            for p_ in params:
                p_.grad = None
            h = F.relu(F.linear(tx, params[0], params[1]))
            torch.sigmoid(F.linear(h, params[2], params[3])).backward(td)

    step()
    benchmark(step)
