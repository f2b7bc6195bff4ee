"""Where a model's arrays live: the host (NumPy, ``device="cpu"``) or a GPU (CuPy, ``device="gpu"``).

The training stack is written once against an array module ``xp`` (numpy or cupy), as the ops'
numpy/cupy code is: the model's parameters, the optimizer's slots, the gradient buffers, the
activations and the inputs of one ``fit`` all live in one module, and the ops dispatch CuPy
arrays to the ``cuda`` / ``cupy`` backends.  CuPy is imported only when a CuPy array or
``device="gpu"`` appears, so ``import fastscale.nn`` never imports it.
"""
from __future__ import annotations

import numpy as np

from .._checks import is_cupy, module_of  # noqa: F401 - the ops' own tests, used here and by nn

DEVICES = ("cpu", "gpu")


def is_array(a) -> bool:
    return isinstance(a, np.ndarray) or is_cupy(a)


def check_device(device, who):
    if device is not None and device not in DEVICES:
        raise ValueError(f"{who}: argument 'device' must be 'cpu', 'gpu' or None (where the inputs are), got {device!r}")
    return device


def gpu_module(who):
    """The cupy module when a GPU backend (``cuda`` or ``cupy``) can run here, else
    BackendUnavailableError saying why not and how to get one."""
    from .._backends import HOW, BackendUnavailableError, status

    cuda, cupy_ = status("cuda"), status("cupy")
    if cuda is None or cupy_ is None:
        import cupy

        return cupy
    raise BackendUnavailableError(
        f"{who}: device='gpu' needs a CUDA GPU and CuPy, and no GPU backend is usable here (cuda: {cuda}; "
        f"cupy: {cupy_}); to get one: {HOW['cupy']}; for fastscale's own CUDA kernels also {HOW['cuda']}"
    )


def module_for(device, who):
    return np if device == "cpu" else gpu_module(who)


def to_module(a, xp):
    """``a`` as an array of module ``xp`` (no copy when it is one already): numpy -> cupy
    copies to the device, cupy -> numpy copies to the host (synchronising)."""
    if xp is np:
        return a.get() if is_cupy(a) else a
    return xp.asarray(a)


def to_host(a):
    return a.get() if is_cupy(a) else a


def as_module(a, xp):
    """An array of module ``xp`` from an array of either module, or from a list / scalar
    (``np.asarray(a)`` exactly, for numpy)."""
    if is_cupy(a):
        return a if xp is not np else a.get()
    a = np.asarray(a)
    return a if xp is np else xp.asarray(a)


def deferred_checks(xp):
    """For a run of ops on the GPU: the cuda ops' device-side input checks are read once at
    the end (or at the next op that synchronises anyway) instead of after every call; a
    no-op context on the host."""
    if xp is np:
        import contextlib

        return contextlib.nullcontext()
    from ..ops import _cuda_util

    return _cuda_util.deferred_checks()
