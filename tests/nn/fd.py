"""Central finite differences of a model's loss, parameter by parameter (the gradient check
shared by the nn tests)."""
import pytest


def check_against_fd(model, grads, loss_at, rng, per_param=10, h=1e-6, rel=1e-5, abs_=1e-8):
    """``grads[f"{layer}/{param}"]`` (dense arrays) against ``(loss_at(w + h) - loss_at(w - h)) / 2h``
    at ``per_param`` random entries of every parameter of ``model``."""
    for layer in model.layers:
        for k, p in layer.params.items():
            flat = p.reshape(-1)
            for j in rng.choice(flat.size, size=min(flat.size, per_param), replace=False):
                old = flat[j]
                flat[j] = old + h
                up = loss_at()
                flat[j] = old - h
                down = loss_at()
                flat[j] = old
                num = (up - down) / (2 * h)
                assert grads[f"{layer.name}/{k}"].reshape(-1)[j] == pytest.approx(num, rel=rel, abs=abs_), (layer.name, k, j)
