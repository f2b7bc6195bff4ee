"""Backend discovery and dispatch: the only place that decides which code runs an op.

Each op module registers its implementations with :func:`register`; this module imports no
op.  Resolution: an explicit ``backend=`` beats ``FASTSCALE_BACKEND``; both are strict.
Otherwise numpy arrays go ``cpp -> numba -> numpy`` and cupy arrays ``cuda -> cupy``.
"""
from __future__ import annotations

import importlib
import os
from typing import Callable

# Idle OpenMP workers that spin between kernel calls starve the next kernel, and every other
# thread pool in the process, whenever the cores are shared: a training step of the origin
# model measured 79 ms with libgomp's default active wait against 4.9 ms with passive waiting
# on 2 busy cores.  So fastscale asks for passive waiting unless the user chose otherwise; it
# must be set before libgomp loads (with the _cpu extension), and it also reaches any other
# OpenMP runtime loaded later in this process.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

NUMPY_ORDER = ("cpp", "numba", "numpy")
CUPY_ORDER = ("cuda", "cupy")
ALL = NUMPY_ORDER + CUPY_ORDER
HOW = {
    "cpp": "reinstall fastscale from source with a C++17 compiler: pip install --force-reinstall --no-deps .",
    "numba": "pip install 'fastscale[numba]'",
    "numpy": "pip install numpy",
    "cuda": "build with nvcc on PATH (pip install . -Ccmake.define.FASTSCALE_CUDA=ON) on a machine with an NVIDIA GPU and CuPy",
    "cupy": "pip install 'fastscale[cuda13]' (or [cuda12]) on a machine with an NVIDIA GPU",
}


class BackendUnavailableError(RuntimeError):
    """A backend was asked for by name but cannot run here."""


_status: dict[str, str | None] = {}
_modules: dict[str, object] = {}


def _probe(name: str) -> str | None:
    """None if the backend can run here, else the reason it cannot."""
    try:
        if name == "numpy":
            import numpy  # noqa: F401
        elif name == "cpp":
            _modules["cpp"] = importlib.import_module("fastscale._cpu")
        elif name == "numba":
            import numba  # noqa: F401
        elif name in ("cupy", "cuda"):
            import cupy

            try:
                n = cupy.cuda.runtime.getDeviceCount()
            except Exception as e:  # no driver / no device
                return f"no CUDA GPU is usable: {e}"
            if n < 1:
                return "no CUDA GPU is present"
            if name == "cuda":
                mod = importlib.import_module("fastscale._cuda")
                _modules["cuda"] = mod
        return None
    except ImportError as e:
        return f"{e}"


def status(name: str) -> str | None:
    if name not in _status:
        _status[name] = _probe(name)
    return _status[name]


def backends() -> dict[str, str | None]:
    """``{name: None if usable else the reason it is not}`` for every backend."""
    return {n: status(n) for n in ALL}


def module(name: str):
    """The compiled extension of a backend (``cpp`` -> fastscale._cpu, ``cuda`` -> _cuda)."""
    err = status(name)
    if err is not None:
        raise BackendUnavailableError(f"backend {name!r} is unavailable ({err}); to get it: {HOW[name]}")
    return _modules[name]


def once(factory: Callable[[], object]) -> Callable[[], object]:
    """``get = once(factory)``: ``get()`` runs factory on first use and returns its result after.

    The numba backends build their jitted functions this way, so ``import fastscale`` never
    imports numba.
    """
    cache: list = []

    def get():
        if not cache:
            cache.append(factory())
        return cache[0]

    return get


class Op:
    """The implementations of one op, by backend name."""

    def __init__(self, name: str, impls: dict[str, Callable]):
        unknown = set(impls) - set(ALL)
        if unknown:
            raise ValueError(f"{name}: unknown backends {sorted(unknown)}")
        self.name = name
        self.impls = impls

    def pick(self, backend: str | None, is_cupy: bool) -> tuple[str, Callable]:
        """(backend name, implementation) for arrays of one kind."""
        if backend is None:
            backend = os.environ.get("FASTSCALE_BACKEND") or None
        if backend is not None:
            if backend not in ALL:
                raise ValueError(f"{self.name}: unknown backend {backend!r}; expected one of {list(ALL)}")
            if is_cupy != (backend in CUPY_ORDER):
                kind = "cupy" if is_cupy else "numpy"
                want = "cupy" if backend in CUPY_ORDER else "numpy"
                raise ValueError(
                    f"{self.name}: backend {backend!r} takes {want} arrays, got {kind} arrays "
                    "(fastscale never moves data between host and device)"
                )
            err = status(backend)
            if err is not None:
                raise BackendUnavailableError(
                    f"{self.name}: backend {backend!r} is unavailable ({err}); to get it: {HOW[backend]}"
                )
            if backend not in self.impls:
                raise BackendUnavailableError(f"{self.name}: backend {backend!r} has no implementation of this op")
            return backend, self.impls[backend]
        for name in CUPY_ORDER if is_cupy else NUMPY_ORDER:
            if name in self.impls and status(name) is None:
                return name, self.impls[name]
        raise BackendUnavailableError(f"{self.name}: no backend can run {'cupy' if is_cupy else 'numpy'} arrays here")


_registry: dict[str, Op] = {}


def register(name: str, **impls: Callable) -> Op:
    op = Op(name, impls)
    _registry[name] = op
    return op


def registered() -> dict[str, Op]:
    return dict(_registry)


def set_num_threads(n: int) -> None:
    """Threads used by the ``cpp`` kernels (and numba's parallel loops when numba is loaded)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: n must be an int >= 1, got {n!r}")
    if status("cpp") is None:
        _modules["cpp"].set_num_threads(n)
    import sys

    if "numba" in sys.modules:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def get_num_threads() -> int:
    if status("cpp") is None:
        return _modules["cpp"].get_num_threads()
    return os.cpu_count() or 1
