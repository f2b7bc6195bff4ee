"""Argument checks with one message format for every op and backend.

TypeError: not an array, wrong dtype, numpy mixed with cupy, dtypes that disagree.
ValueError: wrong ndim, shapes that disagree, bad offsets, bad hyperparameters, read-only outputs.
IndexError: an id outside [0, V), with its value and position.
Every message starts with the op name and names the argument, what was expected and what came.
"""
from __future__ import annotations

import contextlib
import math
import numbers
import threading

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
INDEXES = (np.dtype(np.int32), np.dtype(np.int64))


def _cupy_ndarray():
    import sys

    cp = sys.modules.get("cupy")
    return cp.ndarray if cp is not None else None


def is_cupy(a) -> bool:
    """True for a CuPy array (CuPy is never imported here: no CuPy module, no CuPy array)."""
    if type(a) is np.ndarray:
        return False
    cp_nd = _cupy_ndarray()
    return cp_nd is not None and isinstance(a, cp_nd)


def module_of(a):
    """numpy, or cupy for a CuPy array."""
    return xp_of(is_cupy(a))


def _describe(x) -> str:
    if isinstance(x, np.ndarray):
        return f"numpy.ndarray of dtype {x.dtype} and shape {x.shape}"
    t = type(x)
    return f"{t.__module__}.{t.__qualname__}" if t.__module__ != "builtins" else t.__qualname__


def array_kind(op: str, **arrays) -> bool:
    """Check every non-None argument is a numpy or cupy array, all of one kind.

    Returns True for cupy arrays, False for numpy arrays.
    """
    for a in arrays.values():  # fast path (every training step): plain numpy arrays only
        if a is not None and type(a) is not np.ndarray:
            break
    else:
        return False
    cp_nd = _cupy_ndarray()
    kinds: dict[str, bool] = {}
    for name, a in arrays.items():
        if a is None:
            continue
        if isinstance(a, np.ndarray):
            kinds[name] = False
        elif cp_nd is not None and isinstance(a, cp_nd):
            kinds[name] = True
        else:
            raise TypeError(f"{op}: argument '{name}' must be a numpy or cupy array, got {_describe(a)}")
    if len(set(kinds.values())) > 1:
        np_names = [n for n, k in kinds.items() if not k]
        cp_names = [n for n, k in kinds.items() if k]
        raise TypeError(
            f"{op}: arrays must all be numpy or all be cupy, got numpy {np_names} and cupy {cp_names} "
            "(fastscale never moves data between host and device)"
        )
    return any(kinds.values())


def xp_of(is_cupy: bool):
    if is_cupy:
        import cupy

        return cupy
    return np


def _need_array(op: str, name: str, a):
    # array_kind() skips None (optional arguments); a required one that is None lands here.
    if not hasattr(a, "dtype") or not hasattr(a, "ndim"):
        raise TypeError(f"{op}: argument '{name}' must be a numpy or cupy array, got {_describe(a)}")


def check_float(op: str, name: str, a, ndim: int | None = None, dtype=None):
    """A float32/float64 array; with `dtype`, exactly that dtype (mixed dtypes are a TypeError)."""
    _need_array(op, name, a)
    if a.dtype not in FLOATS:
        raise TypeError(f"{op}: argument '{name}' must have dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{op}: argument '{name}' must have dtype {np.dtype(dtype)} like the other arrays, got {a.dtype}")
    if ndim is not None:
        check_ndim(op, name, a, ndim)


def check_index(op: str, name: str, a, ndim=None):
    """An int32/int64 index array."""
    _need_array(op, name, a)
    if a.dtype not in INDEXES:
        raise TypeError(f"{op}: argument '{name}' must have dtype int32 or int64, got {a.dtype}")
    if ndim is not None:
        check_ndim(op, name, a, ndim)


def check_bool(op: str, name: str, a, ndim=None):
    _need_array(op, name, a)
    if a.dtype != np.bool_:
        raise TypeError(f"{op}: argument '{name}' must have dtype bool, got {a.dtype}")
    if ndim is not None:
        check_ndim(op, name, a, ndim)


def check_ndim(op: str, name: str, a, ndim):
    allowed = ndim if isinstance(ndim, tuple) else (ndim,)
    if a.ndim not in allowed:
        want = " or ".join(f"{n}-D" for n in allowed)
        raise ValueError(f"{op}: argument '{name}' must be {want}, got {a.ndim}-D with shape {tuple(a.shape)}")


def check_shape(op: str, name: str, a, shape: tuple, what: str = ""):
    """`a.shape` must equal `shape`; `what` says where the expected shape comes from."""
    if tuple(a.shape) != tuple(shape):
        src = f" ({what})" if what else ""
        raise ValueError(f"{op}: argument '{name}' must have shape {tuple(shape)}{src}, got {tuple(a.shape)}")


def check_writeable(op: str, name: str, a):
    if not getattr(a.flags, "writeable", True):  # cupy arrays are always writeable
        raise ValueError(f"{op}: argument '{name}' is updated in place and must be writeable")
    if not a.flags.c_contiguous:
        raise ValueError(f"{op}: argument '{name}' is updated in place and must be C-contiguous")
    if not getattr(a.flags, "aligned", True):  # a view into a byte buffer at an odd offset
        raise ValueError(f"{op}: argument '{name}' is updated in place and must be aligned to its dtype")


def check_no_overlap(op: str, **arrays):
    """In-place arguments must not share memory (an update would read what it just wrote)."""
    items = [(n, a) for n, a in arrays.items() if a is not None]
    for i, (na, a) in enumerate(items):
        xp = np if isinstance(a, np.ndarray) else xp_of(True)
        for nb, b in items[i + 1 :]:
            # Disjoint address ranges (the usual case) settle it cheaply; the exact test only
            # runs when the ranges interleave.
            if xp.may_share_memory(a, b) and xp.shares_memory(a, b):
                raise ValueError(f"{op}: arguments '{na}' and '{nb}' must not share memory")


def check_no_overlap_contiguous(op: str, names, arrays):
    """check_no_overlap for many C-contiguous arrays in O(n log n): their byte ranges, sorted,
    must not intersect (a multi-tensor update checks 4 arrays per tensor)."""
    spans = []
    for name, a in zip(names, arrays):
        if a.size == 0:
            continue
        start = a.__array_interface__["data"][0] if isinstance(a, np.ndarray) else a.data.ptr
        spans.append((start, start + a.nbytes, name))
    spans.sort()
    for (s0, e0, n0), (s1, e1, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise ValueError(f"{op}: arguments '{n0}' and '{n1}' must not share memory")


def scalar(op: str, name: str, value, *, lo=None, hi=None, lo_open=False, hi_open=False, integer=False):
    """A finite real (or integer) hyperparameter within [lo, hi] (open ends when asked)."""
    t = type(value)
    if t is int or (t is float and not integer):
        pass  # the common case, without the slower abstract-base-class checks below
    elif isinstance(value, bool) or not isinstance(value, numbers.Integral if integer else numbers.Real):
        kind = "an int" if integer else "a real number"
        raise TypeError(f"{op}: argument '{name}' must be {kind}, got {_describe(value)}")
    v = int(value) if integer else float(value)
    if not integer and not math.isfinite(v):
        raise ValueError(f"{op}: argument '{name}' must be finite, got {v!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{op}: argument '{name}' must be {'>' if lo_open else '>='} {lo}, got {v!r}")
    if hi is not None and (v >= hi if hi_open else v > hi):
        raise ValueError(f"{op}: argument '{name}' must be {'<' if hi_open else '<='} {hi}, got {v!r}")
    return v


def choice(op: str, name: str, value, choices):
    if not isinstance(value, (str, type(None))) or value not in choices:
        raise ValueError(f"{op}: argument '{name}' must be one of {list(choices)}, got {value!r}")
    return value


def _position(shape, flat: int):
    if len(shape) <= 1:
        return f"[{flat}]"
    return str(list(int(i) for i in np.unravel_index(flat, shape)))


def raise_bad_id(op: str, name: str, ids, flat: int, num_embeddings: int):
    value = int(ids.reshape(-1)[flat])
    raise IndexError(
        f"{op}: {name}{_position(tuple(ids.shape), flat)} = {value} is out of range [0, {num_embeddings})"
    )


# Inside ids_checked(), the adapters' ids / offsets checks pass over CuPy arrays unread.
_checked = threading.local()


@contextlib.contextmanager
def ids_checked():
    """For a loop of ops on slices of ids and offsets the caller has checked whole (the
    training stack on a GPU): each of the checks below would read a value back from the
    device and stall it, once per op and batch (the ``cupy`` backend's checks)."""
    _checked.depth = getattr(_checked, "depth", 0) + 1
    try:
        yield
    finally:
        _checked.depth -= 1


def _unread(a) -> bool:
    return bool(getattr(_checked, "depth", 0)) and is_cupy(a)


def check_ids_range(op: str, name: str, ids, num_embeddings: int):
    """IndexError for the first id outside [0, num_embeddings) (numpy / cupy pre-check)."""
    if ids.size == 0 or _unread(ids):
        return
    if int(ids.min()) < 0 or int(ids.max()) >= num_embeddings:
        flat = ids.reshape(-1)
        bad = (flat < 0) | (flat >= num_embeddings)
        raise_bad_id(op, name, ids, int(bad.argmax()), num_embeddings)


def raise_bad_offset(op: str, offsets, pos: int, n_ids: int):
    o = [int(v) for v in offsets[max(0, pos - 1) : pos + 1]]
    if pos == 0 and int(offsets[0]) != 0:
        why = f"offsets[0] must be 0, got {int(offsets[0])}"
    elif pos > 0 and int(offsets[pos]) < int(offsets[pos - 1]):
        why = f"offsets must not decrease, got offsets[{pos - 1}:{pos + 1}] = {o}"
    elif int(offsets[pos]) > n_ids:
        why = f"offsets[{pos}] = {int(offsets[pos])} is beyond len(ids) = {n_ids}"
    else:
        why = f"offsets[-1] must equal len(ids) = {n_ids}, got {int(offsets[pos])}"
    raise ValueError(f"{op}: bad 'offsets': {why}")


def check_offsets(op: str, offsets, n_ids: int):
    """CSR offsets (B+1,): start at 0, never decrease, end at len(ids) (numpy / cupy pre-check)."""
    if offsets.shape[0] < 1:
        raise ValueError(f"{op}: argument 'offsets' must have at least one entry (B+1 for B bags), got shape {tuple(offsets.shape)}")
    if _unread(offsets):
        return
    if int(offsets[0]) != 0:
        raise_bad_offset(op, offsets, 0, n_ids)
    # The first entry that decreases or passes len(ids), as the C++ and CUDA checks find it,
    # so every backend names the same position.
    d = (offsets[1:] < offsets[:-1]) | (offsets[1:] > n_ids)
    if d.size and bool(d.any()):
        raise_bad_offset(op, offsets, int(d.argmax()) + 1, n_ids)
    if int(offsets[-1]) != n_ids:
        raise_bad_offset(op, offsets, offsets.shape[0] - 1, n_ids)


def raise_status(op: str, status: int, ids, ids_name: str, num_embeddings: int, offsets=None):
    """Turn a kernel status (see csrc/cpu/common.h) into the op's uniform exception."""
    if status > 0:
        raise_bad_id(op, ids_name, ids, status - 1, num_embeddings)
    if status < 0:
        raise_bad_offset(op, offsets, -status - 1, ids.shape[0])


def contiguous(a):
    """C-contiguous, aligned view or copy (documented: non-contiguous inputs are copied once).

    Misaligned arrays (a view into a byte buffer at an odd offset) are copied too: a kernel
    reading a float through a misaligned pointer is undefined behaviour (UBSan flags it, and
    aligned vector loads would fault)."""
    if a.flags.c_contiguous and getattr(a.flags, "aligned", True):
        return a
    if isinstance(a, np.ndarray):
        return a.copy(order="C")  # (np.ascontiguousarray would return a misaligned array as is)
    import cupy

    return cupy.ascontiguousarray(a)


def to_identifier(obj) -> dict:
    """``{"class_name": ..., "config": obj.get_config()}``: what ``from_identifier`` reads back
    (how a saved model stores its layers, optimizer, loss, initializers, regularizers)."""
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def from_identifier(kind: str, identifier, base: type, by_name: dict):
    """Keras's ``get`` for optimizers, initializers, ...: ``identifier`` is an instance of
    ``base`` (returned as is), a name in ``by_name`` (any case) or ``{"class_name": ...,
    "config": {...}}``; anything else is a TypeError, an unknown name a ValueError, each
    naming ``kind``."""
    if isinstance(identifier, base):
        return identifier
    if isinstance(identifier, str):
        cls = by_name.get(identifier.lower())
        if cls is None:
            raise ValueError(f"{kind}: unknown name {identifier!r}; expected one of {sorted(by_name)}")
        return cls()
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls = by_name.get(str(identifier["class_name"]).lower())
        if cls is None:
            raise ValueError(f"{kind}: unknown class {identifier['class_name']!r}")
        return cls(**identifier.get("config", {}))
    article = "an" if base.__name__[0] in "AEIOU" else "a"
    raise TypeError(f"{kind}: expected {article} {base.__name__}, a name or a config dict, got {type(identifier).__name__}")
