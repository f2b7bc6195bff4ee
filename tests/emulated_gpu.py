"""An emulated GPU for the test suites: a numpy-backed stand-in for ``cupy`` and the CUDA
kernels on the CPU emulator (``fastscale._cuda_emu``) as ``fastscale._cuda``.

Opt-in: ``FASTSCALE_TEST_EMULATED_GPU=1`` makes tests/conftest.py call :func:`install` before
anything probes the backends, so the ``cuda`` and ``cupy`` parametrisations run here instead
of skipping: backend "cuda" runs the real adapters -> the real launchers -> the emulated
kernels (device pointers are host addresses), backend "cupy" runs the ops' xp code on the
stand-in.  Library code is unaware of it: it finds ``cupy`` and ``fastscale._cuda`` in
``sys.modules``.

The stand-in is NOT a numpy subclass: fastscale (as any CuPy user) tells the two kinds apart
with ``isinstance(a, numpy.ndarray)``, and a CuPy array is not one.  It wraps a numpy array and
mimics CuPy (14.x, read from its sources) where CuPy differs from numpy in a way code can
depend on:

* no implicit host <-> device conversion: ``numpy.asarray(a)`` / ``__array__`` raise
  TypeError (CuPy's message); a numpy array (or a list) as an operand of arithmetic, of a
  ufunc or of a cupy function other than the host -> device entry points (asarray, array,
  setitem values, add.at values) raises TypeError ("Unsupported type");
* numpy functions called on stand-in arrays dispatch to the stand-in (``__array_function__``,
  ``__array_ufunc__``) as CuPy's do, or fail when CuPy has no such function;
* reductions, ``count_nonzero`` and integer indexing return 0-d arrays, never numpy / Python
  scalars; a 0-d array has no ``__index__`` (``range(a.sum())`` is a TypeError on CuPy);
  ``int()``, ``float()``, ``bool()`` synchronise and work on size-1 arrays; ``bool()`` of an
  empty array is False with a DeprecationWarning; every device -> host read is counted
  (:func:`read_backs`), so a test can show that a training step adds none;
* integer-array indices wrap around (``a[[1, 3]]`` of a 3-vector is ``a[[1, 0]]``) for reads
  and writes instead of raising IndexError;
* fancy-index assignment with repeated indices: CuPy leaves which value wins undefined; here
  the FIRST occurrence wins (numpy: the last), so code relying on numpy's order shows;
* ``ufunc.at`` exists for add / subtract / maximum / minimum / bitwise and/or/xor only
  (others: NotImplementedError), adds in a shuffled order (atomics: float sums are not in
  index order), and checks the value dtypes CuPy's atomics support; ``ndarray.scatter_add``
  warns DeprecationWarning (deprecated since CuPy 10);
* no floating-point RuntimeWarnings (GPU kernels raise no FP exceptions);
* ``repeat`` takes no device array as ``repeats`` (CuPy 13.x and 14.0; fastscale's extras
  allow them);
* ``bincount`` of an empty array raises ValueError (CuPy through 14.1);
* ``flags`` has c_contiguous / f_contiguous / owndata only (no writeable, no aligned);
* fresh allocations of zero bytes have ``data.ptr == 0`` (CuPy allocates nothing for them).

Memory: every array's buffer ends at an inaccessible page (a kernel reading or writing past
the end faults; the emulator reports an illegal address) and starts after canary bytes; a
buffer whose length is not a multiple of 16 keeps a canary gap of < 16 bytes before the guard
page so that every allocation is 16-byte aligned, as on a GPU.  Canaries are checked when a
buffer is freed and, for buffers still alive, at the end of each test (:func:`take_violations`).
``empty`` memory is filled with 0xff bytes (NaN, -1), or random bytes with
FASTSCALE_EMU_EMPTY=random: a kernel reading an output or workspace it never wrote shows.
FASTSCALE_EMU_SCHEDULE (0 forward, 1 reverse: the default, 2 random) picks the emulator's
block and thread order; FASTSCALE_EMU_SEED seeds the stand-in's shuffles.

Not modelled: asynchrony and streams (everything runs in order at the call; a stream's ptr
only keys the error-word state); the memory pool (freed memory is unmapped at once, so a use
after free faults here where a stream-ordered pool would hide it); true concurrency of the
kernels (the emulator's block / thread schedules stand in); a reads-before-writes race within
numpy (CuPy's elementwise kernels on overlapping in/out views are undefined, numpy buffers
them); CuPy's own dtype rules where they differ from numpy 2's (NEP 50) for mixed
scalar / array arithmetic, and its float results (cuBLAS / reduction summation order: only
the atomics of ufunc.at are reordered here); which value wins among repeated fancy-index
writes other than on axis 0 with one index array (numpy's order there); functions CuPy lacks
(the stand-in offers only the lists below, all present in CuPy 14, but several accept
arguments CuPy's versions reject); restrictions of other old CuPy versions than the two
modelled (repeat, bincount); device memory limits.
"""
from __future__ import annotations

import ctypes
import glob
import importlib
import importlib.util
import mmap
import os
import pathlib
import sys
import time
import types
import warnings
import weakref

import numpy as np

ENV = "FASTSCALE_TEST_EMULATED_GPU"
ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = mmap.PAGESIZE
CANARY = 0xA5
EMPTY_FILL = 0xFF

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

_violations: list[str] = []
_live: "weakref.WeakSet[_Block]" = weakref.WeakSet()
_generation = [0]
_rng = np.random.default_rng(int(os.environ.get("FASTSCALE_EMU_SEED", "0")))
# FASTSCALE_EMU_EMPTY=random: empty() memory holds random bytes instead of 0xff.
_READ_BACKS = [0]  # device -> host copies (every one synchronises on a real GPU)


def read_backs() -> int:
    """How many device -> host reads (``get``, ``asnumpy``, ``int()`` / ``float()`` / ``bool()``
    of an array) the emulated GPU has served so far: a training step must add none."""
    return _READ_BACKS[0]


_EMPTY_RANDOM = os.environ.get("FASTSCALE_EMU_EMPTY") == "random"
_GARBAGE = _rng.integers(0, 256, 1 << 16, dtype=np.uint8)


# ---------------------------------------------------------------------------- guarded memory
def guarded(n: int, slack: int):
    """``(mmap, raw)``: at least ``n + slack`` bytes of CANARY, ``raw``, followed by a
    PROT_NONE page, so a kernel touching past the end of an array placed at raw's end faults
    (the emulator reports an illegal address)."""
    total = ((n + slack + PAGE - 1) // PAGE + 1) * PAGE
    mm = mmap.mmap(-1, total)
    whole = np.frombuffer(mm, np.uint8)
    raw = whole[: total - PAGE]
    raw[:] = CANARY
    if _libc.mprotect(ctypes.c_void_p(whole.ctypes.data + total - PAGE), PAGE, 0) != 0:
        raise OSError(ctypes.get_errno(), "mprotect")
    return mm, raw


class _Block:
    """One allocation: n bytes ending at (or < 16 bytes before) a PROT_NONE page, canaries before."""

    __slots__ = ("mm", "raw", "start", "n", "ptr", "addr", "gen", "__weakref__")

    def __init__(self, n: int):
        self.mm, self.raw = guarded(n, 64)
        self.start = (self.raw.size - n) & ~15
        self.n = n
        self.addr = self.raw.ctypes.data + self.start
        self.ptr = 0 if n == 0 else self.addr
        self.gen = _generation[0]
        _live.add(self)

    def bytes(self) -> np.ndarray:
        return self.raw[self.start : self.start + self.n]

    def check(self) -> str | None:
        if not (self.raw[: self.start] == CANARY).all():
            return f"a write before the start of a {self.n}-byte device array"
        if not (self.raw[self.start + self.n :] == CANARY).all():
            return f"a write past the end of a {self.n}-byte device array"
        return None

    def contains(self, addr: int, nbytes: int) -> bool:
        return self.addr <= addr and addr + nbytes <= self.addr + self.n

    def __del__(self):
        try:
            err = self.check()
        except Exception:  # interpreter shutdown
            return
        if err:
            _violations.append(err)


def begin_test():
    _generation[0] += 1


def take_violations() -> list[str]:
    """Canary damage seen since the last call: freed buffers, and live ones of this test."""
    for b in list(_live):
        if b.gen == _generation[0]:
            err = b.check()
            if err:
                _violations.append(err)
                b.raw[: b.start] = CANARY  # report it once
                b.raw[b.start + b.n :] = CANARY
    out = list(_violations)
    _violations.clear()
    return out


def _alloc(shape, dtype, fill=None) -> "ndarray":
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    blk = _Block(n)
    raw = blk.bytes()
    if fill is EMPTY_FILL and _EMPTY_RANDOM and n:
        raw[:] = np.resize(_GARBAGE, n)
    elif fill is not None:
        raw[:] = fill
    a = raw.view(dtype).reshape(shape) if n else np.empty(shape, dtype)
    return ndarray._make(a, blk)


def _to_device(a: np.ndarray) -> "ndarray":
    """A copy in guarded memory; Fortran order is kept (CuPy's order='K'), any other layout
    becomes C-contiguous."""
    if a.ndim > 1 and a.flags.f_contiguous and not a.flags.c_contiguous:
        return _fortran(a)
    out = _alloc(a.shape, a.dtype)
    if a.size:
        out._a[...] = a
    return out


def _fortran(a: np.ndarray) -> "ndarray":
    t = _alloc(a.shape[::-1], a.dtype)
    t._a[...] = a.T
    return ndarray._make(t._a.T, t._blk)


# ---------------------------------------------------------------------------- arguments, results
_SCALARS = (int, float, complex, bool, np.generic)


def _unsupported(x):
    return TypeError(f"Unsupported type {type(x)}")


def _in(x, host_ok=False):
    """An argument for numpy: stand-in arrays unwrapped; numpy arrays refused (implicit
    host -> device conversion) unless host_ok; lists and tuples walked."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        if host_ok:
            return x
        raise _unsupported(x)
    if type(x) in (list, tuple):
        return type(x)(_in(v, host_ok) for v in x)
    return x


def _kw_in(kw, host_ok=False):
    return {k: (v if k == "out" else _in(v, host_ok)) for k, v in kw.items()}


def _blocks(args):
    out = []
    for x in args:
        if isinstance(x, ndarray):
            out.append(x._blk)
        elif type(x) in (list, tuple):
            out.extend(_blocks(x))
    return out


def _out(res, parents=()):
    """A numpy result as stand-in arrays: views of an input's buffer stay views of it, new
    arrays are copied into guarded memory, numpy scalars become 0-d arrays."""
    if isinstance(res, np.ndarray):
        if res.size:
            addr = res.__array_interface__["data"][0]
            lo = addr + min(0, sum((s - 1) * st for s, st in zip(res.shape, res.strides) if st < 0))
            hi = addr + max(0, sum((s - 1) * st for s, st in zip(res.shape, res.strides) if st > 0)) + res.itemsize
            for blk in parents:
                if blk.contains(lo, hi - lo):
                    return ndarray._make(res, blk)
        return _to_device(res)
    if isinstance(res, np.generic):
        return _to_device(np.asarray(res))
    if type(res) is tuple:
        return tuple(_out(r, parents) for r in res)
    if type(res) is list:
        return [_out(r, parents) for r in res]
    return res


def _call(fn, args, kw, host_ok=False, out_arg=None):
    with np.errstate(all="ignore"):  # no floating-point warnings on a GPU
        res = fn(*_in(args, host_ok), **_kw_in(kw, host_ok))
    if out_arg is not None:
        return out_arg
    return _out(res, _blocks(args) + _blocks(list(kw.values())))


def _with_out(kw):
    """numpy's ``out=`` from a stand-in array; returns (kw, the stand-in out or None)."""
    out = kw.get("out")
    if out is None:
        return kw, None
    if isinstance(out, tuple):
        if len(out) != 1:
            raise ValueError("The 'out' parameter must have exactly one array value")
        out = out[0]
    if not isinstance(out, ndarray):
        raise TypeError(f"out must be a cupy.ndarray, got {type(out)}")
    kw = dict(kw)
    kw["out"] = out._a
    return kw, out


# ---------------------------------------------------------------------------- indexing
def _index(idx, shape, host_ok=True):
    """An index for numpy: stand-in arrays unwrapped, host lists / arrays accepted (CuPy copies
    them to the device), integer arrays wrapped around their axis as CuPy does."""
    parts = list(idx) if isinstance(idx, tuple) else [idx]
    conv = []
    for p in parts:
        if isinstance(p, ndarray):
            p = p._a
        elif isinstance(p, (list, np.ndarray)) or (isinstance(p, (bool, np.bool_))):
            p = np.asarray(p)
            if p.dtype.kind not in "biu" and p.size == 0:
                p = p.astype(np.int32)
        conv.append(p)
    consumed = sum(
        (p.ndim if p.dtype == np.bool_ else 1) if isinstance(p, np.ndarray) else (0 if p is None or p is Ellipsis else 1)
        for p in conv
    )
    axis = 0
    for i, p in enumerate(conv):
        if p is None:
            continue
        if p is Ellipsis:
            axis += len(shape) - consumed
            continue
        if isinstance(p, np.ndarray):
            if p.dtype == np.bool_:
                axis += p.ndim
                continue
            if p.dtype.kind in "iu" and axis < len(shape) and shape[axis] > 0:
                conv[i] = p % shape[axis]
        axis += 1
    return tuple(conv)


def _advanced(idx):
    return any(isinstance(p, np.ndarray) for p in idx)


# ---------------------------------------------------------------------------- the array
class _Flags:
    def __init__(self, a: np.ndarray, owndata: bool):
        self.c_contiguous = bool(a.flags.c_contiguous)
        self.f_contiguous = bool(a.flags.f_contiguous)
        self.owndata = owndata

    def __getitem__(self, name):
        key = {"C_CONTIGUOUS": "c_contiguous", "F_CONTIGUOUS": "f_contiguous", "OWNDATA": "owndata"}.get(name)
        if key is None:
            raise KeyError(f"{name} is not defined for cupy.ndarray.flags")
        return getattr(self, key)


class MemoryPointer:
    def __init__(self, ptr: int):
        self.ptr = ptr

    def __int__(self):
        return self.ptr

    def __add__(self, off):
        return MemoryPointer(self.ptr + off)


class ndarray:
    """A device array of the emulated GPU (see the module docstring)."""

    __slots__ = ("_a", "_blk", "__weakref__")
    __array_priority__ = 100

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        if memptr is not None or strides is not None:
            raise NotImplementedError("emulated cupy.ndarray(): memptr / strides")
        made = _alloc(shape, dtype, EMPTY_FILL)
        if order == "F":
            made = _out(np.asfortranarray(made._a))
        self._a, self._blk = made._a, made._blk

    @classmethod
    def _make(cls, a: np.ndarray, blk: _Block) -> "ndarray":
        self = object.__new__(cls)
        self._a = a
        self._blk = blk
        return self

    # ---- attributes
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    T = property(lambda self: _out(self._a.T, [self._blk]))
    mT = property(lambda self: _out(np.swapaxes(self._a, -1, -2), [self._blk]))
    flags = property(lambda self: _Flags(self._a, self._owndata()))
    device = property(lambda self: Device(0))

    def _owndata(self):
        return self._a.size == 0 or self._a.__array_interface__["data"][0] == self._blk.ptr and self._a.nbytes == self._blk.n

    @property
    def data(self):
        if self._a.size == 0 and self._blk.ptr == 0:
            return MemoryPointer(0)
        return MemoryPointer(self._a.__array_interface__["data"][0])

    @property
    def base(self):
        return None if self._owndata() else ndarray._make(self._blk.bytes(), self._blk)

    @property
    def __cuda_array_interface__(self):
        a = self._a
        return {
            "shape": a.shape, "typestr": a.dtype.str, "descr": a.dtype.descr, "version": 3,
            "strides": None if a.flags.c_contiguous else a.strides, "data": (self.data.ptr, False), "stream": 1,
        }

    # ---- conversions (CuPy: never implicit)
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
        )

    def get(self, stream=None, order="C", out=None, blocking=True):
        _READ_BACKS[0] += 1
        if out is not None:
            out[...] = self._a
            return out
        return np.array(self._a, order=order)

    def set(self, arr, stream=None):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        if arr.shape != self.shape or arr.dtype != self.dtype:
            raise ValueError("Shape or dtype mismatch")
        self._a[...] = arr

    def __int__(self):
        return int(self.get())

    def __float__(self):
        return float(self.get())

    def __complex__(self):
        return complex(self.get())

    def __bool__(self):
        if self.size == 0:
            warnings.warn("The truth value of an empty array is ambiguous. Returning False, but in future this will "
                          "result in an error. Use `array.size > 0` to check that an array is not empty.",
                          DeprecationWarning, stacklevel=2)
            return False
        if self.size == 1:
            return bool(self.get())
        raise ValueError("The truth value of an array with more than one element is ambiguous. Use a.any() or a.all()")

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec)

    def __reduce__(self):
        return (array, (self.get(),))

    __hash__ = None

    # ---- indexing
    def __getitem__(self, idx):
        idx = _index(idx, self.shape)
        res = self._a[idx]
        if isinstance(res, np.generic):  # CuPy: a 0-d view, not a scalar
            if not _advanced(idx) and not any(p is Ellipsis for p in idx):
                res = self._a[idx + (Ellipsis,)]
            else:
                res = np.asarray(res)
        return _out(res, [self._blk])

    def __setitem__(self, idx, value):
        idx = _index(idx, self.shape)
        v = value._a if isinstance(value, ndarray) else value  # host values are copied (CuPy does)
        with np.errstate(all="ignore"):
            adv = [p for p in idx if isinstance(p, np.ndarray) and p.dtype != np.bool_]
            if len(idx) == 1 and len(adv) == 1:
                # One integer array on axis 0: CuPy leaves the winner among repeated indices
                # undefined; the first occurrence wins here (numpy: the last).
                i = adv[0].reshape(-1)
                target_shape = adv[0].shape + self.shape[1:]
                vb = np.broadcast_to(np.asarray(v, dtype=self.dtype), target_shape).reshape((i.size,) + self.shape[1:])
                self._a[i[::-1]] = vb[::-1]
            else:
                self._a[idx] = v

    def scatter_add(self, slices, value):
        warnings.warn("`ndarray.scatter_add` is deprecated. Please use `cupy.add.at` instead.", DeprecationWarning,
                      stacklevel=2)
        _scatter(self, slices, value, np.add)

    # ---- numpy protocol: numpy functions on stand-in arrays run the stand-in's
    def __array_ufunc__(self, uf, method, *inputs, **kwargs):
        mine = getattr(_MODULE, uf.__name__, None)
        if mine is None or (method != "__call__" and not isinstance(mine, ufunc)):
            return NotImplemented
        for x in inputs + tuple(kwargs.get("out", ()) or ()):
            if isinstance(x, np.ndarray):
                raise _unsupported(x)
        if "out" in kwargs:
            kwargs = dict(kwargs, out=kwargs["out"][0] if isinstance(kwargs["out"], tuple) else kwargs["out"])
        f = mine if method == "__call__" else getattr(mine, method, None)
        if f is None:
            return NotImplemented
        return f(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        mod = _MODULE
        for part in func.__module__.split(".")[1:]:
            mod = getattr(mod, part, None)
            if mod is None:
                return NotImplemented
        mine = getattr(mod, func.__name__, None)
        if mine is None or mine is func:
            return NotImplemented
        return mine(*args, **kwargs)


def _binop(name, reflected=False, inplace=False):
    uf = getattr(np, name)

    def op(self, other):
        if not isinstance(other, (ndarray,) + _SCALARS):
            if other is None and name in ("equal", "not_equal"):
                return _alloc(self.shape, np.bool_, 0 if name == "equal" else 1)
            if isinstance(other, np.ndarray) and other.ndim == 0 and name in (
                    "less", "less_equal", "equal", "not_equal", "greater", "greater_equal"):
                other = other.item()
            else:
                raise _unsupported(other)
        a, b = (other, self) if reflected else (self, other)
        if inplace:
            with np.errstate(all="ignore"):
                uf(_in(a), _in(b), out=self._a)
            return self
        return _call(uf, (a, b), {})

    return op


for _name, _uf in [("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "true_divide"),
                   ("floordiv", "floor_divide"), ("mod", "remainder"), ("pow", "power"), ("matmul", "matmul"),
                   ("and", "bitwise_and"), ("or", "bitwise_or"), ("xor", "bitwise_xor"), ("lshift", "left_shift"),
                   ("rshift", "right_shift")]:
    setattr(ndarray, f"__{_name}__", _binop(_uf))
    setattr(ndarray, f"__r{_name}__", _binop(_uf, reflected=True))
    if _name != "matmul":
        setattr(ndarray, f"__i{_name}__", _binop(_uf, inplace=True))
for _name, _uf in [("lt", "less"), ("le", "less_equal"), ("eq", "equal"), ("ne", "not_equal"), ("gt", "greater"),
                   ("ge", "greater_equal")]:
    setattr(ndarray, f"__{_name}__", _binop(_uf))
for _name, _uf in [("neg", np.negative), ("pos", np.positive), ("abs", np.absolute), ("invert", np.invert)]:
    setattr(ndarray, f"__{_name}__", lambda self, _uf=_uf: _call(_uf, (self,), {}))


def _method(name):
    def m(self, *args, **kw):
        kw, out = _with_out(kw)
        res = _call_raw(getattr(self._a, name), args, kw)
        return out if out is not None else _out(res, [self._blk] + _blocks(args))

    m.__name__ = name
    return m


def _call_raw(fn, args, kw):
    with np.errstate(all="ignore"):
        return fn(*_in(args), **_kw_in(kw))


# The methods of cupy.ndarray (14.x) that numpy's ndarray also has, with numpy's behaviour.
for _name in ("all", "any", "argmax", "argmin", "argpartition", "argsort", "astype", "byteswap", "choose", "clip",
              "compress", "conj", "conjugate", "copy", "cumprod", "cumsum", "diagonal", "dot", "dump", "dumps",
              "fill", "flatten", "item", "max", "mean", "min", "nonzero", "partition", "prod", "ptp", "put", "ravel",
              "repeat", "reshape", "round", "searchsorted", "sort", "squeeze", "std", "sum", "swapaxes", "take",
              "tobytes", "tofile", "tolist", "trace", "transpose", "var", "view"):
    if hasattr(np.ndarray, _name) or _name == "ptp":
        setattr(ndarray, _name, _method(_name) if _name != "ptp" else
                (lambda self, *a, **k: _call(np.ptp, (self,) + a, k)))
ndarray.__module__ = "cupy"
ndarray.__qualname__ = ndarray.__name__ = "ndarray"


# ---------------------------------------------------------------------------- ufuncs
_AT_OPS = {"add", "subtract", "maximum", "minimum", "bitwise_and", "bitwise_or", "bitwise_xor"}
_ADD_AT_DTYPES = {np.dtype(t) for t in (np.int32, np.int64, np.float16, np.float32, np.float64, np.uint32, np.uint64)}


def _scatter(a: ndarray, slices, value, uf):
    """ufunc.at / scatter_add: indices wrap, the value may come from the host, and the
    updates land in a shuffled order (GPU atomics)."""
    idx = _index(slices, a.shape)
    v = value._a if isinstance(value, ndarray) else np.asarray(value)
    v = v.astype(a.dtype, copy=False)
    if uf is np.add and v.dtype not in _ADD_AT_DTYPES:
        raise TypeError("cupy.add.at only supports int32, int64, float16, float32, float64, uint32, uint64 as data type")
    with np.errstate(all="ignore"):
        if len(idx) == 1 and isinstance(idx[0], np.ndarray) and idx[0].dtype != np.bool_:
            i = idx[0].reshape(-1)
            vb = np.broadcast_to(v, idx[0].shape + a.shape[1:]).reshape((i.size,) + a.shape[1:])
            perm = _rng.permutation(i.size)
            uf.at(a._a, i[perm], vb[perm])
        else:
            uf.at(a._a, idx, v)


class ufunc:
    """A numpy ufunc on stand-in arrays (CuPy's ufunc surface)."""

    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__
        self.nin, self.nout = uf.nin, uf.nout

    def __repr__(self):
        return f"<ufunc '{self.__name__}'>"

    def _check(self, args):
        for x in args:
            if not isinstance(x, (ndarray,) + _SCALARS):
                raise _unsupported(x)

    def __call__(self, *args, **kw):
        self._check(args)
        kw, out = _with_out(kw)
        return _call(self._uf, args, kw, out_arg=out)

    def at(self, a, indices, b=None):
        if self.__name__ not in _AT_OPS:
            raise NotImplementedError(f"`cupy_{self.__name__}.at` is not supported yet")
        if not isinstance(a, ndarray):
            raise TypeError(f"Unsupported type {type(a)}")
        _scatter(a, indices, b, self._uf)

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        if self.__name__ == "add":
            return array.sum(axis, dtype, out, keepdims)
        if self.__name__ == "multiply":
            return array.prod(axis, dtype, out, keepdims)
        raise NotImplementedError(f"`cupy_{self.__name__}.reduce` is not supported yet")

    def accumulate(self, array, axis=0, dtype=None, out=None):
        if self.__name__ == "add":
            return array.cumsum(axis, dtype, out)
        if self.__name__ == "multiply":
            return array.cumprod(axis, dtype, out)
        raise NotImplementedError(f"`cupy_{self.__name__}.accumulate` is not supported yet")

    def outer(self, a, b, **kw):
        self._check((a, b))
        return _call(self._uf.outer, (a, b), kw)


# ---------------------------------------------------------------------------- functions
def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray):
        if (dtype is None or np.dtype(dtype) == a.dtype) and order in (None, "K", "A"):
            return a
        return _out(np.asarray(a._a, dtype=dtype, order=order), [a._blk])
    if hasattr(a, "__cuda_array_interface__") and not isinstance(a, np.ndarray):
        raise TypeError(f"emulated cupy: foreign __cuda_array_interface__ objects are not supported ({type(a)})")
    return _to_device(np.asarray(_in(a, host_ok=True), dtype=dtype, order=order))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    if isinstance(obj, ndarray):
        if copy is False and (dtype is None or np.dtype(dtype) == obj.dtype):
            return obj
        return _to_device(np.array(obj._a, dtype=dtype, order=order, ndmin=ndmin))
    return _to_device(np.array(_in(obj, host_ok=True), dtype=dtype, order=order, ndmin=ndmin))


def asanyarray(a, dtype=None, order=None):
    return asarray(a, dtype, order)


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(stream=stream, order=order, out=out)
    res = np.asarray(a, order=order)
    if out is not None:
        out[...] = res
        return out
    return res


def ascontiguousarray(a, dtype=None):
    if not isinstance(a, ndarray):
        raise TypeError(f"Argument 'a' has incorrect type (expected cupy._core.core._ndarray_base, got {type(a).__name__})")
    if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return _out(np.ascontiguousarray(a._a, dtype=dtype))


def empty(shape, dtype=float, order="C"):
    return ndarray(shape, dtype, order=order)


def zeros(shape, dtype=float, order="C"):
    out = _alloc(shape, dtype, 0)
    return out if order == "C" else _out(np.asfortranarray(out._a))


def ones(shape, dtype=float, order="C"):
    out = _alloc(shape, dtype)
    out._a[...] = 1
    return out


def full(shape, fill_value, dtype=None, order="C"):
    if isinstance(fill_value, ndarray):
        fill_value = fill_value._a
    dtype = np.asarray(fill_value).dtype if dtype is None else dtype
    out = _alloc(shape, dtype)
    out._a[...] = fill_value
    return out


def _like(maker):
    def f(a, dtype=None, order="K", subok=None, shape=None, **kw):
        if not isinstance(a, ndarray):
            raise TypeError(f"Unsupported type {type(a)}")
        return maker(a.shape if shape is None else shape, a.dtype if dtype is None else dtype, **kw)

    return f


empty_like, zeros_like, ones_like = _like(empty), _like(zeros), _like(ones)


def full_like(a, fill_value, dtype=None, order="K", subok=None, shape=None):
    return full(a.shape if shape is None else shape, fill_value, a.dtype if dtype is None else dtype)


def copyto(dst, src, casting="same_kind", where=None):
    if not isinstance(dst, ndarray):
        raise TypeError(f"Unsupported type {type(dst)}")
    if isinstance(src, np.ndarray):
        raise _unsupported(src)
    with np.errstate(all="ignore"):
        np.copyto(dst._a, _in(src), casting=casting, where=True if where is None else _in(where))


def repeat(a, repeats, axis=None):
    # CuPy 13.x (fastscale's cuda12 extra allows cupy-cuda12x>=13) and 14.0 take no device
    # array as repeats; 14.1 does.  The stand-in models the oldest supported version.
    if isinstance(repeats, ndarray):
        raise ValueError("cupy.ndaray cannot be specified as `repeats` argument.")
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    return a.repeat(repeats, axis)


def bincount(x, weights=None, minlength=None):
    # CuPy (through 14.1) sizes the result with int(cupy.max(x)) + 1, which raises on an
    # empty x (a zero-size reduction without identity); numpy returns zeros(minlength).
    if not isinstance(x, ndarray) or (weights is not None and not isinstance(weights, ndarray)):
        raise TypeError(f"Unsupported type {type(x if not isinstance(x, ndarray) else weights)}")
    if x.ndim != 1:
        raise ValueError("object too deep for desired array" if x.ndim > 1 else "object of too small depth for desired array")
    if x.dtype.kind == "f":
        raise TypeError("x must be int array")
    if x.size == 0:
        raise ValueError("zero-size array to reduction operation cupy_max which has no identity")
    return _call(np.bincount, (x,), dict(weights=weights, minlength=minlength or 0))


def _ndarray_repeat(self, repeats, axis=None):
    if isinstance(repeats, ndarray):
        raise ValueError("cupy.ndaray cannot be specified as `repeats` argument.")
    if isinstance(repeats, np.ndarray):
        raise TypeError("'repeats' does not accept numpy.ndarray; convert with cupy.array() first")
    return _out(self._a.repeat(repeats, axis))


ndarray.repeat = _ndarray_repeat


def get_array_module(*args):
    return _MODULE if any(isinstance(a, ndarray) for a in args) else np


def _function(name, fn, scalar_result=False):
    def f(*args, **kw):
        kw, out = _with_out(kw)
        res = _call(fn, args, kw, out_arg=out)
        if scalar_result and isinstance(res, (int, float, bool, np.generic)):  # CuPy: a 0-d array
            res = _to_device(np.asarray(res))
        return res

    f.__name__ = f.__qualname__ = name
    return f


# numpy functions the stand-in offers (all exist in CuPy 14 with these names).
_FUNCTIONS = (
    "all any amax amin argmax argmin argsort argwhere around atleast_1d atleast_2d broadcast_arrays "
    "broadcast_to clip column_stack concatenate count_nonzero cumprod cumsum diff dot einsum expand_dims flatnonzero "
    "flip hstack isclose allclose array_equal lexsort linspace max mean median min moveaxis nonzero outer "
    "partition prod ptp ravel reshape round searchsorted sort split squeeze stack std sum swapaxes take "
    "take_along_axis matmul tile transpose tril triu unique var vstack where nan_to_num nansum average cov meshgrid "
    "put roll trace"
).split()
_PLAIN = "shares_memory may_share_memory result_type can_cast isscalar ndim shape size min_scalar_type common_type".split()
_TYPE_FUNCS = "iinfo finfo dtype issubdtype promote_types".split()
_UFUNCS = (
    "absolute abs add arccos arcsin arctan arctan2 bitwise_and bitwise_or bitwise_xor invert cbrt ceil conj "
    "conjugate copysign cos cosh deg2rad degrees divide equal exp exp2 expm1 fabs floor floor_divide fmax fmin "
    "fmod greater greater_equal hypot isfinite isinf isnan left_shift less less_equal log log10 log1p log2 "
    "logaddexp logaddexp2 logical_and logical_not logical_or logical_xor maximum minimum mod multiply negative "
    "nextafter not_equal positive power rad2deg radians reciprocal remainder right_shift rint sign signbit sin sinh "
    "sqrt square subtract tan tanh true_divide trunc"
).split()
_TYPES = ("bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64 complex64 complex128 "
          "intc uintc intp uintp longlong ulonglong byte ubyte short ushort half single double longdouble "
          "integer floating number generic signedinteger unsignedinteger inexact complexfloating").split()


def arange(start, stop=None, step=1, dtype=None):
    return _to_device(np.arange(start, stop, step, dtype=dtype) if stop is not None else np.arange(start, dtype=dtype))


def eye(N, M=None, k=0, dtype=float, order="C"):
    return _to_device(np.eye(N, M, k, dtype=dtype))


def identity(n, dtype=float):
    return eye(n, dtype=dtype)


# ---------------------------------------------------------------------------- cupy.cuda
class Stream:
    _next = [0x1000]
    _stack: list = []

    def __init__(self, null=False, non_blocking=False, ptds=False):
        if null:
            self.ptr = 0
        else:
            Stream._next[0] += 0x10
            self.ptr = Stream._next[0]

    def __enter__(self):
        Stream._stack.append(self)
        return self

    def __exit__(self, *exc):
        Stream._stack.pop()

    def use(self):
        Stream._stack[:] = [self]
        return self

    def synchronize(self):
        pass

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event


Stream.null = Stream(null=True)


def get_current_stream(device_id=-1):
    return Stream._stack[-1] if Stream._stack else Stream.null


class Event:
    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        pass

    done = property(lambda self: True)


def get_elapsed_time(start, end):
    return (end.t - start.t) * 1e3


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise _runtime.CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    compute_capability = property(lambda self: "90")

    def use(self):
        pass

    def synchronize(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def __int__(self):
        return self.id

    def __eq__(self, other):
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self):
        return self.id


class _MemoryPool:
    def used_bytes(self):
        return sum(b.n for b in list(_live))

    def total_bytes(self):
        return self.used_bytes()

    def free_all_blocks(self, stream=None):
        pass

    def set_limit(self, size=None, fraction=None):
        pass

    def get_limit(self):
        return 0


_POOL = _MemoryPool()


def get_default_memory_pool():
    return _POOL


def _make_runtime():
    rt = types.ModuleType("cupy.cuda.runtime")

    class CUDARuntimeError(RuntimeError):
        pass

    rt.CUDARuntimeError = CUDARuntimeError
    rt.getDeviceCount = lambda: 1
    rt.getDevice = lambda: 0
    rt.setDevice = lambda d: None
    rt.deviceSynchronize = lambda: None
    rt.runtimeGetVersion = lambda: 12080
    rt.driverGetVersion = lambda: 12080
    rt.getDeviceProperties = lambda d: {"name": b"fastscale CUDA emulator (CPU)", "major": 9, "minor": 0,
                                       "totalGlobalMem": 1 << 34, "multiProcessorCount": 1, "memoryClockRate": 0,
                                       "memoryBusWidth": 0, "clockRate": 0}
    rt.memGetInfo = lambda: (1 << 34, 1 << 34)
    return rt


_runtime = _make_runtime()


# ---------------------------------------------------------------------------- the modules
def _build():
    cp = types.ModuleType("cupy")
    cp.__doc__ = "fastscale's emulated-GPU stand-in for CuPy (tests/emulated_gpu.py)"
    cp.__version__ = "14.2.0+fastscale.emulated"
    cp.__file__ = __file__
    cp._fastscale_emulated = True
    for name in ("ndarray", "ufunc", "asarray", "array", "asanyarray", "asnumpy", "ascontiguousarray", "empty",
                 "zeros", "ones", "full", "empty_like", "zeros_like", "ones_like", "full_like", "copyto",
                 "get_array_module", "arange", "eye", "identity", "get_default_memory_pool", "repeat", "bincount"):
        setattr(cp, name, globals()[name])
    for name in _FUNCTIONS:
        setattr(cp, name, _function(name, getattr(np, name), scalar_result=True))
    cp.count_nonzero = _function("count_nonzero", np.count_nonzero, scalar_result=True)
    for name in _PLAIN:  # host answers (Python bools, dtypes, shapes)
        setattr(cp, name, (lambda fn: lambda *a, **k: fn(*_in(a), **_kw_in(k)))(getattr(np, name)))
    for name in _TYPE_FUNCS:
        setattr(cp, name, getattr(np, name))
    for name in _UFUNCS:
        if hasattr(np, name):
            setattr(cp, name, ufunc(getattr(np, name)))
    for name in _TYPES:
        if hasattr(np, name):
            setattr(cp, name, getattr(np, name))
    for name in ("inf", "nan", "pi", "e", "newaxis", "euler_gamma"):
        setattr(cp, name, getattr(np, name))
    cp.asfortranarray = _function("asfortranarray", np.asfortranarray)
    cp.is_available = lambda: True

    cuda = types.ModuleType("cupy.cuda")
    cuda.runtime = _runtime
    cuda.Stream, cuda.Event, cuda.Device, cuda.MemoryPointer = Stream, Event, Device, MemoryPointer
    cuda.get_current_stream, cuda.get_elapsed_time = get_current_stream, get_elapsed_time
    cuda.is_available = lambda: True
    cuda.get_device_id = lambda: 0
    cuda.memory = types.SimpleNamespace(MemoryPointer=MemoryPointer)
    cp.cuda = cuda

    cupyx = types.ModuleType("cupyx")
    cupyx.scatter_add = lambda a, slices, value: _scatter(a, slices, value, np.add)
    cupyx.scatter_max = lambda a, slices, value: _scatter(a, slices, value, np.maximum)
    cupyx.scatter_min = lambda a, slices, value: _scatter(a, slices, value, np.minimum)
    return cp, cupyx


_MODULE, _CUPYX = _build()


# ---------------------------------------------------------------------------- _cuda_emu
def _sanitized(build_dir: pathlib.Path) -> bool:
    cache = build_dir / "CMakeCache.txt"
    return cache.exists() and "FASTSCALE_SANITIZE:BOOL=ON" in cache.read_text(errors="replace")


def load_cuda_emu():
    """fastscale._cuda_emu built in place, else FASTSCALE_CUDA_EMU_MODULE (a path), else the
    newest non-sanitized build/**/_cuda_emu*.so."""
    if "fastscale._cuda_emu" in sys.modules:  # loaded once per process: an extension cannot load twice
        return sys.modules["fastscale._cuda_emu"]
    path = os.environ.get("FASTSCALE_CUDA_EMU_MODULE")
    if not path:
        if importlib.util.find_spec("fastscale._cuda_emu") is not None:
            return importlib.import_module("fastscale._cuda_emu")
        built = sorted(glob.glob(str(ROOT / "build" / "**" / "_cuda_emu.*.so"), recursive=True), key=os.path.getmtime)
        # Not a sanitized build (it needs libasan preloaded), nor a link to one (sanitize.sh's staging).
        built = [p for p in built if not _sanitized(pathlib.Path(p).resolve().parent)]
        if not built:
            raise ImportError(
                f"{ENV}=1 needs fastscale._cuda_emu: cmake -S . -B build/emu -G Ninja -DFASTSCALE_INPLACE=OFF "
                "-DFASTSCALE_CUDA=OFF -DFASTSCALE_CUDA_EMU=ON -Dpybind11_DIR=$(python -m pybind11 --cmakedir) "
                "&& cmake --build build/emu --target _cuda_emu")
        path = built[-1]
    spec = importlib.util.spec_from_file_location("fastscale._cuda_emu", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules["fastscale._cuda_emu"] = mod
    return mod


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


def install():
    """Put the stand-in cupy / cupyx and _cuda_emu (as fastscale._cuda) in sys.modules.  Must
    run before anything probes the backends (fastscale._backends caches its answers)."""
    if "fastscale._backends" in sys.modules and sys.modules["fastscale._backends"]._status:
        raise RuntimeError("emulated GPU: fastscale's backends were probed before install()")
    emu = load_cuda_emu()
    sys.modules["cupy"] = _MODULE
    sys.modules["cupy.cuda"] = _MODULE.cuda
    sys.modules["cupy.cuda.runtime"] = _runtime
    sys.modules["cupyx"] = _CUPYX
    sys.modules["fastscale._cuda"] = emu
    # The least natural schedule by default (blocks and threads in reverse order).
    emu.emu_set_schedule(int(os.environ.get("FASTSCALE_EMU_SCHEDULE", "1")), 0)
    return emu
