"""The CUDA extension builds, binds every launcher, and a machine without a GPU says why not.

These run on the CPU-only machines: they check that ``fastscale._cuda`` was compiled (when
nvcc is on the machine), that it exposes every launcher the ``cuda`` adapters call, that a
launch without a usable device is a RuntimeError naming the op and file:line (never a
crash), and that ``fastscale.backends()`` reports ``cuda`` / ``cupy`` unavailable with a
reason.  The numerical tests of the kernels are the op tests, parametrised over ``cuda``
(they run where a GPU is present: ``benchmarks/gpu_check.sh``).

Where nvcc exists but only a CPU build was made, the module tests skip; set
``FASTSCALE_REQUIRE_CUDA=1`` (CI, gpu_check.sh) to make a missing ``_cuda`` a failure.
"""
import glob
import importlib.util
import os
import pathlib
import shutil

import pytest

import fastscale as fs
from fastscale import _backends

if os.environ.get("FASTSCALE_TEST_EMULATED_GPU") == "1":
    pytest.skip("FASTSCALE_TEST_EMULATED_GPU=1: fastscale._cuda is the CPU emulator and a GPU is emulated, so "
                "neither the nvcc build this file checks nor its no-GPU behaviour is present",
                allow_module_level=True)

ROOT = pathlib.Path(__file__).resolve().parents[1]

LAUNCHERS = (
    "device_count",
    "info",
    "embedding_forward",
    "embedding_backward_workspace",
    "embedding_backward_dense",
    "embedding_backward_rows",
    "embedding_backward_values",
    "embedding_bag_forward",
    "embedding_bag_backward_workspace",
    "embedding_bag_backward_dense",
    "embedding_bag_backward_rows",
    "embedding_bag_backward_values",
    "masked_mean_pool_forward",
    "masked_mean_pool_backward",
    "dense_forward",
    "dense_backward",
    "bce_workspace_bytes",
    "bce_with_logits",
    "adam_multi",
    "sparse_adam_step",
)


def _nvcc():
    return shutil.which("nvcc") or (os.path.exists("/usr/local/cuda/bin/nvcc") and "/usr/local/cuda/bin/nvcc")


def _has_gpu():
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def _load_cuda():
    """fastscale._cuda as installed / built in place, else the newest build-dir copy."""
    if importlib.util.find_spec("fastscale._cuda") is not None:
        import fastscale._cuda as mod

        return mod
    # "_cuda.*.so": not the CPU emulator's _cuda_emu (tests/test_cuda_emu.py).
    built = sorted(glob.glob(str(ROOT / "build" / "**" / "_cuda.*.so"), recursive=True), key=os.path.getmtime)
    if not built:
        return None
    spec = importlib.util.spec_from_file_location("fastscale._cuda", built[-1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def cuda_mod():
    if not _nvcc():
        pytest.skip("nvcc not found: the CUDA extension is not built on this machine")
    mod = _load_cuda()
    if mod is None:
        msg = ("fastscale._cuda was not built: cmake -S . -B build/cuda -G Ninja -DFASTSCALE_INPLACE=ON "
               "-DFASTSCALE_CUDA=ON ... && cmake --build build/cuda")
        if os.environ.get("FASTSCALE_REQUIRE_CUDA") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    return mod


def test_every_launcher_is_bound(cuda_mod):
    missing = [n for n in LAUNCHERS if not callable(getattr(cuda_mod, n, None))]
    assert not missing, f"fastscale._cuda lacks {missing}"
    for name in ("NO_ERROR", "ERR_ID", "ERR_OFFSET", "ERR_ORDER", "ERR_TARGET"):
        assert hasattr(cuda_mod, name)


def test_error_word_encoding_matches_python(cuda_mod):
    from fastscale.ops import _cuda_util as CU

    assert cuda_mod.NO_ERROR == CU.NO_ERROR == 2**64 - 1
    assert (cuda_mod.ERR_ID, cuda_mod.ERR_OFFSET, cuda_mod.ERR_ORDER, cuda_mod.ERR_TARGET) == (
        CU.ERR_ID, CU.ERR_OFFSET, CU.ERR_ORDER, CU.ERR_TARGET)


def test_info_reports_the_archs(cuda_mod):
    info = cuda_mod.info()
    assert info["archs"] and all(a.isdigit() for a in info["archs"].split(","))
    assert info["runtime_version"] >= 12000
    assert info["device_count"] >= 0


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present: a launch would run")
def test_launch_without_a_device_is_a_runtime_error(cuda_mod):
    assert cuda_mod.device_count() == 0
    # One row of a 1x1 @ 1x1 dense forward: the launch itself fails (no driver / device).
    with pytest.raises(RuntimeError, match=r"dense_forward: CUDA error .* at .*dense\.cu:\d+"):
        cuda_mod.dense_forward(0, 0, 0, 0, 0, 1, 1, 1, 4, 0)


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present")
def test_launcher_argument_checks_are_value_errors(cuda_mod):
    with pytest.raises(ValueError, match="dense_forward: float element size"):
        cuda_mod.dense_forward(0, 0, 0, 0, 0, 1, 1, 1, 2, 0)
    with pytest.raises(ValueError, match="embedding: an error word is required"):
        cuda_mod.embedding_forward(0, 0, 0, 1, 1, 1, 4, 4, 0, 0, 0)


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present")
def test_backends_say_why_cuda_and_cupy_are_unavailable():
    status = fs.backends()
    for name in ("cuda", "cupy"):
        assert isinstance(status[name], str) and status[name], f"{name}: {status[name]!r}"
    with pytest.raises(_backends.BackendUnavailableError, match="to get it"):
        _backends.module("cuda")


def test_cuda_adapters_are_registered_without_importing_cupy():
    import subprocess
    import sys

    code = (
        "import sys, fastscale; from fastscale import _backends;"
        "ops = _backends.registered();"
        "missing = [n for n, op in ops.items() if 'cuda' not in op.impls or 'cupy' not in op.impls];"
        "assert len(ops) >= 11 and not missing, missing;"
        "assert 'cupy' not in sys.modules, 'import fastscale imported cupy'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=dict(os.environ, PYTHONPATH=str(ROOT / "src")))


# ---------------------------------------------------------------------------- adapters
class _FakeData:
    def __init__(self, ptr):
        self.ptr = ptr


class _FakeCupyArray(__import__("numpy").ndarray):
    """A host array that quacks like a cupy array where the adapters look (data.ptr, get)."""

    @property
    def data(self):
        return _FakeData(self.ctypes.data)

    def get(self):
        return __import__("numpy").asarray(self).copy()


def _fake(a):
    import numpy as np

    return np.ascontiguousarray(a).view(_FakeCupyArray)


class _FakeCupy:
    """Just enough of the cupy namespace for ops/_cuda_util.py and the adapters."""

    import numpy as _np

    uint64, int64, uint8, float32, float64 = _np.uint64, _np.int64, _np.uint8, _np.float32, _np.float64
    ndarray = _FakeCupyArray

    class cuda:  # noqa: N801
        class _S:
            ptr = 0

        @staticmethod
        def get_current_stream():
            return _FakeCupy.cuda._S()

        class runtime:  # noqa: N801
            @staticmethod
            def getDevice():
                return 0

    @staticmethod
    def empty(shape, dtype=float):
        import numpy as np

        return _fake(np.zeros(shape, dtype))

    @staticmethod
    def full(shape, value, dtype=None):
        import numpy as np

        return _fake(np.full(shape, value, dtype))

    @staticmethod
    def ascontiguousarray(a):
        return _fake(a)

    asarray = ascontiguousarray


@pytest.mark.skipif(_has_gpu(), reason="a GPU is present: fake host pointers must not reach a real launch")
def test_every_cuda_adapter_calls_its_launchers_with_accepted_arguments(cuda_mod, monkeypatch):
    """Each `_cuda_*` adapter, fed host arrays posing as cupy arrays, must reach every launcher
    it uses with arguments pybind11 accepts (a wrong count or type is a TypeError here); the
    launch itself then fails for want of a device, which the proxy records and swallows."""
    import numpy as np

    from fastscale.ops import _cuda_util as CU
    mods = {n: importlib.import_module(f"fastscale.ops.{n}") for n in
            ("adam", "bce_with_logits", "dense", "embedding", "embedding_bag", "masked_mean_pool")}
    adam, bce_with_logits, dense = mods["adam"], mods["bce_with_logits"], mods["dense"]
    embedding, embedding_bag, masked_mean_pool = mods["embedding"], mods["embedding_bag"], mods["masked_mean_pool"]

    called = []

    class Proxy:
        def __getattr__(self, name):
            fn = getattr(cuda_mod, name)

            def call(*args, **kwargs):
                called.append(name)
                try:
                    return fn(*args, **kwargs)
                except RuntimeError as e:  # no device: the arguments were accepted
                    assert "CUDA error" in str(e) and ".cu:" in str(e), e
                    return 256 if name.endswith(("workspace", "bytes")) else None

            return call

    monkeypatch.setattr(_backends, "_modules", dict(_backends._modules, cuda=Proxy()))
    monkeypatch.setattr(_backends, "_status", dict(_backends._status, cuda=None))
    monkeypatch.setattr(CU, "cupy", lambda: _FakeCupy)
    monkeypatch.setattr(CU, "_local", __import__("threading").local())
    monkeypatch.setattr(CU, "result_count", lambda st: 2)
    monkeypatch.setattr(CU, "result_float", lambda st: 0.5)
    f = lambda *s: _fake(np.ones(s, np.float32))  # noqa: E731
    ids = _fake(np.array([1, 2, 3, 1], np.int64))
    off = _fake(np.array([0, 2, 4], np.int32))
    pad2 = _fake(np.array([[1, 2], [3, 0]], np.int32))

    embedding._cuda_forward(f(5, 4), ids, f(4, 4))
    embedding._cuda_backward(f(4, 4), ids, f(5, 4), 5)
    embedding._cuda_backward(f(4, 4), ids, None, 5)
    monkeypatch.setenv(CU.ATOMIC_ENV, "1")
    embedding._cuda_backward(f(4, 4), ids, f(5, 4), 5)
    embedding_bag._cuda_backward(f(2, 4), ids, off, None, -1, True, f(5, 4), 5)
    monkeypatch.delenv(CU.ATOMIC_ENV)
    embedding_bag._cuda_forward(f(5, 4), ids, off, f(4), -1, False, f(2, 4))
    embedding_bag._cuda_forward(f(5, 4), pad2, None, None, 0, True, f(2, 4))
    embedding_bag._cuda_backward(f(2, 4), ids, off, None, 1, True, f(5, 4), 5)
    embedding_bag._cuda_backward(f(2, 4), pad2, None, f(2, 2), 0, False, None, 5)
    masked_mean_pool._cuda_forward(f(2, 3, 4), _fake(np.ones((2, 3), bool)), f(2, 4))
    masked_mean_pool._cuda_backward(f(2, 4), _fake(np.ones((2, 3), bool)), f(2, 3, 4))
    dense._cuda_forward(f(2, 3), f(3, 4), f(4), 1, f(2, 4))
    dense._cuda_forward(f(2, 3), f(3, 4), None, 0, f(2, 4))
    dense._cuda_backward(f(2, 4), f(2, 3), f(3, 4), f(2, 4), 2, f(2, 3), f(3, 4), f(4))
    dense._cuda_backward(f(2, 4), f(2, 3), f(3, 4), None, 0, None, f(3, 4), f(4))
    assert bce_with_logits._cuda(f(8), f(8), f(8)) == 0.5
    k = adam._hyper("adam_step", 1, 1e-3, 0.9, 0.999, 1e-7, 0.0, False, "keras")
    adam._cuda_dense(f(6), f(6), f(6), f(6), k)
    adam._cuda_sparse(f(5, 4), _fake(np.array([0, 3], np.int64)), f(2, 4), f(5, 4), f(5, 4), k)

    expected = {
        "embedding_forward", "embedding_backward_workspace", "embedding_backward_dense", "embedding_backward_rows",
        "embedding_backward_values", "embedding_bag_forward", "embedding_bag_backward_workspace",
        "embedding_bag_backward_dense", "embedding_bag_backward_rows", "embedding_bag_backward_values",
        "masked_mean_pool_forward", "masked_mean_pool_backward", "dense_forward", "dense_backward",
        "bce_workspace_bytes", "bce_with_logits", "adam_multi", "sparse_adam_step",
    }
    assert expected <= set(called), f"never reached: {sorted(expected - set(called))}"
