"""Pure-NumPy stand-ins for ops that are still PLACEHOLDERs on this branch.

Used only by the training-stack tests, and only for an op whose module still says
"PLACEHOLDER": once the real op lands the fixture patches nothing and the tests run the real
kernels.  Math follows the op contracts in DESIGN.md.
"""
import importlib

import numpy as np
import pytest

import fastscale.ops as ops


def _placeholder(modname):
    mod = importlib.import_module(f"fastscale.ops.{modname}")
    return (mod.__doc__ or "").startswith("PLACEHOLDER")


def embedding(weight, ids, backend=None):
    return weight[ids]


def embedding_backward(dout, ids, num_embeddings, *, sparse=False, out=None, backend=None):
    D = dout.shape[-1]
    flat, g = ids.reshape(-1), dout.reshape(-1, D)
    if sparse:
        rows, inv = np.unique(flat, return_inverse=True)
        vals = np.zeros((rows.shape[0], D), dout.dtype)
        np.add.at(vals, inv.reshape(-1), g)
        return ops.SparseRows(rows.astype(np.int64), vals, num_embeddings)
    out = np.zeros((num_embeddings, D), dout.dtype) if out is None else out
    out[...] = 0
    np.add.at(out, flat, g)
    return out


def masked_mean_pool(x, mask, backend=None):
    m = mask.astype(x.dtype)[..., None]
    return (x * m).sum(1) / np.maximum(m.sum(1), 1)


def masked_mean_pool_backward(dout, mask, backend=None):
    m = mask.astype(dout.dtype)[..., None]
    return dout[:, None, :] * m / np.maximum(m.sum(1, keepdims=True), 1)


def _act(z, activation):
    if activation == "relu":
        return np.maximum(z, 0)
    if activation == "sigmoid":
        return (0.5 * (1 + np.tanh(0.5 * z))).astype(z.dtype)
    if activation == "tanh":
        return np.tanh(z)
    return z


def dense_forward(x, weight, bias=None, activation=None, backend=None):
    z = x @ weight
    if bias is not None:
        z = z + bias
    return _act(z, activation)


def dense_backward(dout, x, weight, out, activation, *, need_dx=True, backend=None):
    if activation == "relu":
        dz = dout * (out > 0)
    elif activation == "sigmoid":
        dz = dout * out * (1 - out)
    elif activation == "tanh":
        dz = dout * (1 - out * out)
    else:
        dz = dout
    return (dz @ weight.T if need_dx else None), x.T @ dz, dz.sum(0)


def bce_with_logits(logits, targets, backend=None):
    z = logits.astype(np.float64)
    loss = np.mean(np.maximum(z, 0) - z * targets + np.log1p(np.exp(-np.abs(z))))
    d = (_act(logits, "sigmoid") - targets) / logits.dtype.type(logits.size)
    return float(loss), d.astype(logits.dtype)


def _adam(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled, eps_placement):
    t = p.dtype.type
    if weight_decay and decoupled:
        p -= t(lr * weight_decay) * p
    elif weight_decay:
        g = g + t(weight_decay) * p
    m += (g - m) * t(1 - beta1)
    v += (g * g - v) * t(1 - beta2)
    if eps_placement == "keras":
        alpha = lr * np.sqrt(1 - beta2**step) / (1 - beta1**step)
        p -= t(alpha) * m / (np.sqrt(v) + t(eps))
    else:
        mh = m / t(1 - beta1**step)
        vh = v / t(1 - beta2**step)
        p -= t(lr) * mh / (np.sqrt(vh) + t(eps))


def adam_step(param, grad, m, v, *, step, lr, beta1, beta2, eps, weight_decay=0.0, decoupled=False,
              eps_placement="keras", backend=None):
    _adam(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled, eps_placement)


def sparse_adam_step(param, rows, values, m, v, *, step, lr, beta1, beta2, eps, weight_decay=0.0, decoupled=False,
                     eps_placement="keras", backend=None):
    p, mm, vv = param[rows], m[rows], v[rows]
    _adam(p, values, mm, vv, step, lr, beta1, beta2, eps, weight_decay, decoupled, eps_placement)
    param[rows], m[rows], v[rows] = p, mm, vv


STANDINS = {
    "embedding": ("embedding", "embedding_backward"),
    "masked_mean_pool": ("masked_mean_pool", "masked_mean_pool_backward"),
    "dense": ("dense_forward", "dense_backward"),
    "bce_with_logits": ("bce_with_logits",),
    "adam": ("adam_step", "sparse_adam_step"),
}


@pytest.fixture(autouse=True)
def standin_ops(monkeypatch):
    """Patch fastscale.ops.<op> with the NumPy stand-in while that op is a placeholder."""
    patched = []
    for mod, names in STANDINS.items():
        if _placeholder(mod):
            for n in names:
                monkeypatch.setattr(ops, n, globals()[n])
                patched.append(n)
    return patched
