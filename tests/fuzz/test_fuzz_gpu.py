"""The fuzz of test_fuzz_ops.py on the GPU backends (cuda, cupy).

Each example is one of test_fuzz_ops.py's mutated calls, made on the numpy backend with host
arrays and on every usable GPU backend with the arrays copied to the device (those CuPy can
hold: native-order bool / integer / float16-64 / complex; others stay on the host, so the call
mixes numpy and cupy arrays).  A GPU backend must raise the numpy backend's exception type or
agree with its result, leave its inputs unchanged, and leave outputs / in-place parameters
untouched when it raises.

Left out, because they do not survive a copy to the device: huge zero-stride broadcasts (the
copy would need 2**34 elements) and the layout mutations of in-place arguments (read-only,
misaligned, non-contiguous, Fortran: the device copy is a fresh, writeable, aligned array).

Skips unless a GPU backend is usable: a GPU, or the emulated one (FASTSCALE_TEST_EMULATED_GPU=1,
see tests/emulated_gpu.py).  FASTSCALE_FUZZ_GPU_EXAMPLES sets the examples per op (default 60).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastscale import _backends
from fastscale._checks import is_cupy

from . import test_fuzz_ops as F

GPU = [b for b in ("cuda", "cupy") if _backends.status(b) is None]
EXAMPLES = int(os.environ.get("FASTSCALE_FUZZ_GPU_EXAMPLES", "60"))
LAYOUT = ("readonly", "misaligned", "noncontig", "fortran")
_CUPY_KINDS = "biufc"


def _device(v):
    import cupy

    if (isinstance(v, np.ndarray) and v.dtype.kind in _CUPY_KINDS and v.dtype.isnative
            and v.dtype not in (np.dtype(np.longdouble), np.dtype(np.clongdouble))):
        return cupy.asarray(v)
    return v


def _host(v):
    return v.get() if is_cupy(v) else v


def _arrays(res):
    return [np.asarray(_host(a)) if not hasattr(a, "rows") else a for a in F._result_arrays(res)]


def run_example(op, data):
    fn, gen, inplace = F.OPS[op]
    positional, base = gen(data.draw)
    names = sorted(set(base) | {"out"} if "out" in inplace else set(base))
    muts = data.draw(st.lists(F.mutation(names).filter(
        lambda m: m[0] != "huge" and not (m[0] in LAYOUT and m[1] in inplace)), max_size=3), label="mutations")
    injected = any(k in ("values", "dtype", "kwarg", "scalar") for k, _, _ in muts)
    if any(F._is_big(p) for _, _, p in muts):
        return  # may ask for a huge output: MemoryError on one side, a bad value on the other
    args, kwargs = F.build(base, positional, muts)
    ref, ref_err = F._call(fn, args, kwargs, "numpy", f"{op}[numpy] mutations={muts}")
    ref_named = dict(zip(positional, args), **kwargs)
    for backend in GPU:
        args, kwargs = F.build(base, positional, muts)
        args = [_device(a) for a in args]
        kwargs = {k: _device(v) for k, v in kwargs.items()}
        named = dict(zip(positional, args), **kwargs)
        before = {n: v.get() for n, v in named.items() if is_cupy(v)}
        where = f"{op}[{backend}] mutations={muts}"
        res, err = F._call(fn, args, kwargs, backend, where)
        if any(isinstance(v, np.ndarray) for v in named.values()):
            # Host and device arrays mixed (a dtype CuPy cannot hold): an error, TypeError
            # unless another check comes first, as it may for a call numpy rejects too.
            assert isinstance(err, TypeError if ref_err is None else F.ALLOWED), f"{where} (mixed): {err!r}"
            for n, saved in before.items():
                np.testing.assert_array_equal(_host(named[n]), saved, err_msg=f"{where}: '{n}' written before {err!r}")
            continue
        if ref_err is not None:
            assert err is not None, f"{where}: succeeded where numpy raised {type(ref_err).__name__}: {ref_err}"
            assert type(err) is type(ref_err), (
                f"{where}: {type(err).__name__}: {err}; numpy raised {type(ref_err).__name__}: {ref_err}")
            for n, saved in before.items():
                np.testing.assert_array_equal(_host(named[n]), saved, err_msg=f"{where}: '{n}' written before {err!r}")
            continue
        if backend == "cuda" and isinstance(err, ValueError) and "the cuda backend takes" in str(err):
            continue  # a documented limit of its kernels (32-bit sort keys: csrc/cuda/segment.cuh)
        assert err is None, f"{where}: {type(err).__name__}: {err} where numpy succeeded"
        for n, saved in before.items():
            if n not in inplace:
                np.testing.assert_array_equal(_host(named[n]), saved, err_msg=f"{where}: input '{n}' was modified")
        if injected:
            continue
        got = _arrays(res) + [np.asarray(_host(named[n])) for n in inplace if n in named and named[n] is not None]
        want = _arrays(ref) + [np.asarray(ref_named[n]) for n in inplace if n in ref_named and ref_named[n] is not None]
        assert len(got) == len(want), f"{where}: {len(got)} results vs numpy's {len(want)}"
        single = any(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in base.values())
        tol = 1e-4 if single else 1e-9
        for g, r in zip(got, want):
            if hasattr(r, "rows"):
                np.testing.assert_array_equal(_host(g.rows), _host(r.rows), err_msg=where)
                g, r = _host(g.values), _host(r.values)
            assert g.shape == r.shape and g.dtype == r.dtype, f"{where}: {g.shape} {g.dtype} vs numpy's {r.shape} {r.dtype}"
            if r.dtype.kind == "f":
                np.testing.assert_allclose(g, r, rtol=tol, atol=tol, err_msg=where)
            else:
                np.testing.assert_array_equal(g, r, err_msg=where)


@pytest.mark.skipif(not GPU, reason="no GPU backend is usable (FASTSCALE_TEST_EMULATED_GPU=1 emulates one)")
@pytest.mark.parametrize("op", sorted(F.OPS))
def test_fuzz_gpu(op):
    @F._fuzz_settings(EXAMPLES)
    @given(data=st.data())
    def run(data):
        run_example(op, data)

    run()
