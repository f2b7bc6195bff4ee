"""bce_with_logits (mean loss + dlogits): fastscale backends vs PyTorch and NumPy by hand.

    python -m pytest benchmarks/bench_bce_with_logits.py --benchmark-only

"origin" is the (64, 1) output of the origin model's last layer, where the cost is the
call; "1M" is a large flat batch, where it is exp / log1p throughput.
"""
import numpy as np
import pytest

import fastscale as fs

from .conftest import torch_or_skip

BACKENDS = ["cpp", "numba", "numpy"]
SHAPES = {"origin": (64, 1), "1M": (1 << 20,)}


def arrays(shape, seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(shape) * 3).astype(np.float32)
    y = (rng.random(shape) < 0.5).astype(np.float32)
    return z, y


@pytest.mark.parametrize("impl", BACKENDS + ["numpy_by_hand", "torch_autograd", "torch_by_hand"])
@pytest.mark.parametrize("size", list(SHAPES))
def test_loss_and_grad(benchmark, size, impl):
    benchmark.group = f"bce_with_logits loss+grad {size} {SHAPES[size]}"
    z, y = arrays(SHAPES[size])
    n = z.size
    if impl in BACKENDS:
        if fs.backends()[impl] is not None:
            pytest.skip(f"{impl} unavailable: {fs.backends()[impl]}")
        step = lambda: fs.bce_with_logits(z, y, backend=impl)  # noqa: E731
    elif impl == "numpy_by_hand":

        def step():
            e = np.exp(-np.abs(z))
            loss = float((np.maximum(z, 0) - z * y + np.log1p(e)).sum(dtype=np.float64)) / n
            return loss, (np.where(z >= 0, 1 / (1 + e), e / (1 + e)) - y) / n

    else:
        torch = torch_or_skip()
        F = torch.nn.functional
        tz, ty = torch.from_numpy(z), torch.from_numpy(y)
        if impl == "torch_autograd":
            tzg = tz.clone().requires_grad_()

            def step():
                tzg.grad = None
                loss = F.binary_cross_entropy_with_logits(tzg, ty)
                loss.backward()
                return loss.item(), tzg.grad

        else:

            def step():
                with torch.no_grad():
                    loss = F.binary_cross_entropy_with_logits(tz, ty)
                    return loss.item(), (torch.sigmoid(tz) - ty) / n

    step()
    benchmark(step)
