"""Shared test fixtures: backends as explicit parameters, hypothesis profiles.

Every op test takes the ``backend`` fixture; an unavailable backend skips with its reason
(never counted as a pass).  ``xp`` is the array module of that backend, and ``to_xp`` /
``to_np`` move test data in and out.
"""
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Opt-in emulated GPU (tests/emulated_gpu.py): FASTSCALE_TEST_EMULATED_GPU=1 puts a numpy-backed
# cupy and the CUDA kernels on the CPU emulator (fastscale._cuda_emu as fastscale._cuda) in
# sys.modules before anything probes the backends, so the cuda / cupy parametrisations run.
if os.environ.get("FASTSCALE_TEST_EMULATED_GPU") == "1":
    from . import emulated_gpu as _emulated_gpu

    _emulated_gpu.install()
else:
    _emulated_gpu = None

from fastscale import _backends  # noqa: E402

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    # The backend fixtures are stateless names, so reusing them across examples is safe.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long", max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

CPU_BACKENDS = ("cpp", "numba", "numpy")
GPU_BACKENDS = ("cuda", "cupy")
ALL_BACKENDS = CPU_BACKENDS + GPU_BACKENDS


def _usable(request):
    """The fixture's backend name, or a skip with the reason it is unavailable."""
    name = request.param
    reason = _backends.status(name)
    if reason is not None:
        pytest.skip(f"backend {name!r} unavailable: {reason}")
    return name


@pytest.fixture(params=ALL_BACKENDS)
def backend(request):
    return _usable(request)


@pytest.fixture(params=CPU_BACKENDS)
def cpu_backend(request):
    return _usable(request)


@pytest.fixture(params=GPU_BACKENDS)
def gpu_backend(request):
    return _usable(request)


@pytest.fixture(autouse=True)
def _emulated_device_memory():
    """Emulated GPU only: a kernel or adapter that wrote outside a device array fails the test."""
    if _emulated_gpu is None:
        yield
        return
    _emulated_gpu.begin_test()
    yield
    bad = _emulated_gpu.take_violations()
    assert not bad, f"emulated device memory damaged: {bad}"


def is_gpu(backend):
    return backend in GPU_BACKENDS


@pytest.fixture
def xp(backend):
    if is_gpu(backend):
        import cupy

        return cupy
    return np


@pytest.fixture
def to_xp(backend):
    """numpy array -> an array of the backend's kind."""
    if is_gpu(backend):
        import cupy

        return lambda a: None if a is None else cupy.asarray(a)
    return lambda a: a


def to_np(a):
    """Any backend's array -> numpy."""
    if a is None or isinstance(a, np.ndarray):
        return a
    return a.get()
