"""Fuzz every public op on every CPU backend (issue 7, point 1).

Each example starts from a *valid* call (small random shapes, float32/float64, int32/int64)
and applies 0-3 mutations drawn from a catalogue: any NumPy dtype (numeric, bool, object,
strings, datetime, non-native byte order), None / Python scalars / lists instead of arrays,
0-d / empty / extra or missing axes / disagreeing shapes, huge-but-cheap broadcasts (zero
strides, far more than 2**31 elements), NaN / inf / negative / huge ids / int64 beyond
int32, non-contiguous / Fortran / read-only / misaligned (a byte buffer offset by 1)
layouts, and wrong keyword values.  The same call is made on every CPU backend and must:

* raise only TypeError, ValueError or IndexError (MemoryError only when a huge broadcast
  had to be copied or an integer of 2**25 or more asked for a huge output: NumPy's documented
  answer, made immediate by an RLIMIT_AS cap), or succeed;
* raise the same exception type on every backend, and agree on the result when it succeeds
  (values compared unless NaN / inf / huge values were injected);
* leave every input unchanged, read-only arrays always, and outputs / in-place parameters
  untouched when it raises (no partial write before an error);
* never crash (run under tools/sanitize.sh for memory errors) and never hang (a
  faulthandler watchdog kills a call that takes more than WATCHDOG_S seconds);
* emit no warning (pytest turns RuntimeWarning into an error; the fuzz catches all).

Default run: EXAMPLES examples per op (``FASTSCALE_FUZZ_EXAMPLES`` overrides).  Long run:
``HYPOTHESIS_PROFILE=long pytest -m slow tests/fuzz`` (10,000 examples per op).
"""
from __future__ import annotations

import atexit
import contextlib
import faulthandler
import os
import tempfile
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastscale as fs
from fastscale import _backends

CPU = [b for b in ("cpp", "numba", "numpy") if _backends.status(b) is None]
WATCHDOG_S = 120
_SAN = os.environ.get("FASTSCALE_SANITIZE_RUN") == "1"
EXAMPLES = int(os.environ.get("FASTSCALE_FUZZ_EXAMPLES", "60" if _SAN else "200"))
LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"

ALLOWED = (TypeError, ValueError, IndexError)
# Every dtype a user can put in an array: all numeric kinds, bool, object, strings, bytes,
# datetime / timedelta, non-native byte order.
DTYPES = [
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64, np.longdouble, np.complex64, np.complex128, np.clongdouble,
    object, "U3", "S3", "M8[s]", "m8[ns]", ">f4", ">f8", ">i4", ">i8", "<f4", "<i8",
]
BAD_SCALARS = [None, 0, 1, -1, 2**31, 2**63, 2**70, -(2**63), 0.5, -0.0, float("nan"), float("inf"),
               -float("inf"), 1e308, True, False, "mean", "sum", "", "relu", [1, 2], (3,), b"x",
               np.float32(0.5), np.int64(3), np.int32(-1), np.bool_(True), np.array(1), np.array([1.0]),
               object(), 1 + 2j]
# One axis of one argument becomes this long (zero strides): past int32 and uint32 indexing,
# yet small enough (<= 2**34 elements after broadcasting) that a backend walking it, as the
# numpy id checks do, finishes in seconds.  A copy of it is refused by the address-space cap
# (MemoryError) instead of filling the machine's memory.
HUGE = [2**31 + 3, 2**32 + 1]
HUGE_MAX_ELEMENTS = 2**34
# Address space the fuzz may use beyond what the process held before it (RLIMIT_AS):
# enough for every legitimate small call, far too little for a copy of a huge broadcast.
AS_HEADROOM = 3 << 30


# ---------------------------------------------------------------------------- valid calls
def _floats(draw, shape, dtype, lo=-2.0, hi=2.0):
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).uniform(lo, hi, shape).astype(dtype)


def _ids(draw, shape, V, itype):
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(0, max(V, 1), shape).astype(itype)


def _fdt(draw):
    return draw(st.sampled_from([np.float32, np.float64]))


def _idt(draw):
    return draw(st.sampled_from([np.int32, np.int64]))


def _dim(draw, lo=0, hi=5):
    return draw(st.integers(lo, hi))


def _offsets(draw, B, N, itype):
    cuts = sorted(draw(st.lists(st.integers(0, N), min_size=max(B - 1, 0), max_size=max(B - 1, 0))))
    return np.array([0] + cuts + [N], dtype=itype) if B > 0 else np.array([N], dtype=itype) * 0


def gen_embedding(draw):
    V, D, fd = _dim(draw, 1), _dim(draw), _fdt(draw)
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    return ["weight", "ids"], dict(weight=_floats(draw, (V, D), fd), ids=_ids(draw, shape, V, _idt(draw)))


def gen_embedding_backward(draw):
    V, D, fd = _dim(draw, 1), _dim(draw), _fdt(draw)
    shape = tuple(draw(st.lists(st.integers(0, 4), max_size=3)))
    a = dict(dout=_floats(draw, shape + (D,), fd), ids=_ids(draw, shape, V, _idt(draw)), num_embeddings=V)
    sparse = draw(st.booleans())
    if sparse:
        a["sparse"] = True
    elif draw(st.booleans()):
        a["out"] = _floats(draw, (V, D), fd)
    return ["dout", "ids", "num_embeddings"], a


def gen_masked_mean_pool(draw):
    B, T, D, fd = _dim(draw), _dim(draw), _dim(draw), _fdt(draw)
    mask = _ids(draw, (B, T), 2, np.int8).astype(bool)
    return ["x", "mask"], dict(x=_floats(draw, (B, T, D), fd), mask=mask)


def gen_masked_mean_pool_backward(draw):
    B, T, D, fd = _dim(draw), _dim(draw), _dim(draw), _fdt(draw)
    a = dict(dout=_floats(draw, (B, D), fd), mask=_ids(draw, (B, T), 2, np.int8).astype(bool))
    if draw(st.booleans()):
        a["out"] = _floats(draw, (B, T, D), fd)
    return ["dout", "mask"], a


def _bag_args(draw, V, it):
    B = _dim(draw)
    if draw(st.booleans()):
        N = _dim(draw, 0, 12)
        ids, offsets = _ids(draw, (N,), V, it), _offsets(draw, B, N, _idt(draw))
    else:
        ids, offsets = _ids(draw, (B, _dim(draw)), V, it), None
    a = dict(ids=ids, offsets=offsets, mode=draw(st.sampled_from(["sum", "mean"])))
    if draw(st.booleans()):
        a["padding_idx"] = draw(st.integers(0, V - 1))
    return B, a


def gen_embedding_bag(draw):
    V, D, fd = _dim(draw, 1), _dim(draw), _fdt(draw)
    B, a = _bag_args(draw, V, _idt(draw))
    a["weight"] = _floats(draw, (V, D), fd)
    if a["mode"] == "sum" and draw(st.booleans()):
        a["per_sample_weights"] = _floats(draw, a["ids"].shape, fd)
    return ["weight", "ids", "offsets"], a


def gen_embedding_bag_backward(draw):
    V, D, fd = _dim(draw, 1), _dim(draw), _fdt(draw)
    B, a = _bag_args(draw, V, _idt(draw))
    B = a["ids"].shape[0] if a["offsets"] is None else a["offsets"].shape[0] - 1
    a.update(dout=_floats(draw, (B, D), fd), num_embeddings=V)
    if a["mode"] == "sum" and draw(st.booleans()):
        a["per_sample_weights"] = _floats(draw, a["ids"].shape, fd)
    if draw(st.booleans()):
        a["sparse"] = True
    elif draw(st.booleans()):
        a["out"] = _floats(draw, (V, D), fd)
    return ["dout", "ids", "offsets"], a


ACTS = [None, "linear", "relu", "sigmoid", "tanh"]


def gen_dense_forward(draw):
    B, I, O, fd = _dim(draw), _dim(draw), _dim(draw), _fdt(draw)
    a = dict(x=_floats(draw, (B, I), fd), weight=_floats(draw, (I, O), fd), activation=draw(st.sampled_from(ACTS)))
    a["bias"] = _floats(draw, (O,), fd) if draw(st.booleans()) else None
    return ["x", "weight", "bias", "activation"], a


def gen_dense_backward(draw):
    B, I, O, fd = _dim(draw), _dim(draw), _dim(draw), _fdt(draw)
    act = draw(st.sampled_from(ACTS))
    a = dict(dout=_floats(draw, (B, O), fd), x=_floats(draw, (B, I), fd), weight=_floats(draw, (I, O), fd),
             out=_floats(draw, (B, O), fd, 0.0, 1.0), activation=act)
    if act in (None, "linear") and draw(st.booleans()):
        a["out"] = None
    if draw(st.booleans()):
        a["need_dx"] = draw(st.booleans())
    return ["dout", "x", "weight", "out", "activation"], a


def gen_bce_with_logits(draw):
    fd = _fdt(draw)
    shape = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    return ["logits", "targets"], dict(logits=_floats(draw, shape, fd, -30, 30), targets=_floats(draw, shape, fd, 0, 1))


def _hyper(draw):
    h = dict(step=draw(st.integers(1, 10**6)))
    for k, s in (("lr", st.floats(0, 1)), ("beta1", st.floats(0, 0.999)), ("beta2", st.floats(0, 0.9999)),
                 ("eps", st.floats(1e-12, 1)), ("weight_decay", st.floats(0, 1)), ("decoupled", st.booleans()),
                 ("eps_placement", st.sampled_from(["keras", "torch"]))):
        if draw(st.booleans()):
            h[k] = draw(s)
    return h


def gen_adam_step(draw):
    fd = _fdt(draw)
    shape = tuple(draw(st.lists(st.integers(0, 5), max_size=3)))
    a = dict(param=_floats(draw, shape, fd), grad=_floats(draw, shape, fd), m=_floats(draw, shape, fd),
             v=_floats(draw, shape, fd, 0, 1), **_hyper(draw))
    return ["param", "grad", "m", "v"], a


def gen_sparse_adam_step(draw):
    V, D, fd = _dim(draw, 1, 8), _dim(draw), _fdt(draw)
    rows = np.array(sorted(draw(st.sets(st.integers(0, V - 1), max_size=V))), dtype=_idt(draw))
    a = dict(param=_floats(draw, (V, D), fd), rows=rows, values=_floats(draw, (rows.shape[0], D), fd),
             m=_floats(draw, (V, D), fd), v=_floats(draw, (V, D), fd, 0, 1), **_hyper(draw))
    return ["param", "rows", "values", "m", "v"], a


def adam_step_sparse_grad(param, rows, values, m, v, num_embeddings, **kw):
    """adam_step with a SparseRows gradient, its parts as separate arguments to mutate."""
    return fs.adam_step(param, fs.SparseRows(rows, values, num_embeddings), m, v, **kw)


def gen_adam_step_sparse_grad(draw):
    names, a = gen_sparse_adam_step(draw)
    a["num_embeddings"] = a["param"].shape[0]
    return names + ["num_embeddings"], a


def adam_step_multi(p0, g0, m0, v0, p1, g1, m1, v1, **kw):
    """The multi-tensor adam_step over two tensors, each array a separate argument to mutate."""
    return fs.adam_step([p0, p1], [g0, g1], [m0, m1], [v0, v1], **kw)


def gen_adam_step_multi(draw):
    _, a = gen_adam_step(draw)
    _, b = gen_adam_step(draw)
    b = {k: b[k] for k in ("param", "grad", "m", "v")}
    if b["param"].dtype != a["param"].dtype:
        b = {k: x.astype(a["param"].dtype) for k, x in b.items()}
    names = ["p0", "g0", "m0", "v0", "p1", "g1", "m1", "v1"]
    args = dict(zip(names, [a.pop(k) for k in ("param", "grad", "m", "v")] + list(b.values())), **a)
    return names, args


# op name -> (function, generator, arguments updated in place / written as outputs)
OPS = {
    "embedding": (fs.embedding, gen_embedding, ()),
    "embedding_backward": (fs.embedding_backward, gen_embedding_backward, ("out",)),
    "masked_mean_pool": (fs.masked_mean_pool, gen_masked_mean_pool, ()),
    "masked_mean_pool_backward": (fs.masked_mean_pool_backward, gen_masked_mean_pool_backward, ("out",)),
    "embedding_bag": (fs.embedding_bag, gen_embedding_bag, ()),
    "embedding_bag_backward": (fs.embedding_bag_backward, gen_embedding_bag_backward, ("out",)),
    "dense_forward": (fs.dense_forward, gen_dense_forward, ()),
    "dense_backward": (fs.dense_backward, gen_dense_backward, ()),
    "bce_with_logits": (fs.bce_with_logits, gen_bce_with_logits, ()),
    "adam_step": (fs.adam_step, gen_adam_step, ("param", "m", "v")),
    "sparse_adam_step": (fs.sparse_adam_step, gen_sparse_adam_step, ("param", "m", "v")),
    "adam_step(SparseRows)": (adam_step_sparse_grad, gen_adam_step_sparse_grad, ("param", "m", "v")),
    "adam_step(multi-tensor)": (adam_step_multi, gen_adam_step_multi, ("p0", "m0", "v0", "p1", "m1", "v1")),
}


# ---------------------------------------------------------------------------- mutations
# Each mutation is (kind, argument name, parameters) with every random choice drawn up
# front, so the same call can be rebuilt identically for each backend.
KINDS = ["dtype", "none", "scalar", "list", "zero_d", "add_axis", "drop_axis", "empty", "grow", "noncontig",
         "fortran", "readonly", "misaligned", "huge", "values", "kwarg", "missing"]


@st.composite
def mutation(draw, names):
    kind = draw(st.sampled_from(KINDS))
    name = draw(st.sampled_from(names))
    if kind == "dtype":
        p = draw(st.sampled_from(DTYPES))
    elif kind == "scalar" or kind == "kwarg":
        p = draw(st.sampled_from(BAD_SCALARS))
    elif kind == "huge":
        p = (draw(st.sampled_from(HUGE)), draw(st.integers(0, 3)))
    elif kind == "values":
        p = (draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from(
            [float("nan"), float("inf"), -float("inf"), -1, -2, 2**31 - 1, 2**31, 2**32 + 1, 2**62, -(2**63),
             3.4e38, 1e300, -1e-45, 0])))
    elif kind in ("add_axis", "drop_axis", "empty", "grow"):
        p = draw(st.integers(0, 3))
    else:
        p = None
    return kind, name, p


def _bytes_view(a, offset):
    """A C-contiguous copy of ``a`` whose data starts ``offset`` bytes into a byte buffer."""
    buf = np.zeros(a.nbytes + 16, np.uint8)
    v = buf[offset : offset + a.nbytes].view(a.dtype).reshape(a.shape)
    v[...] = a
    return v


def apply(kind, value, p):
    """The mutated value, or the value unchanged when the mutation does not apply."""
    a = value
    if kind == "none":
        return None
    if kind == "scalar" or kind == "kwarg":
        return p
    if not isinstance(a, np.ndarray):
        if kind == "values" and isinstance(a, int) and not isinstance(a, bool):
            v = p[1]
            return v if isinstance(v, float) and v != v or abs(v) == float("inf") else int(v)
        return a
    if kind == "dtype":
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return a.astype(p)
        except (TypeError, ValueError, OverflowError):
            return np.zeros(a.shape, p)
    if kind == "list":
        return a.tolist()
    if kind == "zero_d":
        return np.asarray(a.reshape(-1)[0] if a.size else np.zeros((), a.dtype)[()], dtype=a.dtype)
    if kind == "add_axis":
        return np.expand_dims(a, min(p, a.ndim))
    if kind == "drop_axis":
        if a.ndim <= 1:
            return a.reshape(-1)[:1].reshape(()) if a.size else np.zeros((), a.dtype)
        return a.reshape((a.shape[0] * a.shape[1],) + a.shape[2:])
    if kind in ("empty", "grow"):
        if a.ndim == 0:
            return a
        ax = p % a.ndim
        shape = list(a.shape)
        shape[ax] = 0 if kind == "empty" else shape[ax] + 1
        out = np.zeros(shape, a.dtype)
        sl = tuple(slice(0, min(s, t)) for s, t in zip(a.shape, shape))
        out[sl] = a[sl]
        return out
    if kind == "noncontig":
        if a.ndim == 0:
            return a
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if kind == "fortran":
        return np.asfortranarray(a)
    if kind == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if kind == "misaligned":
        if a.dtype.itemsize <= 1 or a.dtype.hasobject:
            return a
        return _bytes_view(a, 1)
    if kind == "huge":
        n, ax = p
        if a.size == 0:
            return a
        shape = list(a.shape) or [1]
        shape[ax % len(shape)] = n
        src = a.reshape(-1)[:1].reshape((1,) * len(shape))
        if int(np.prod(shape, dtype=object)) > HUGE_MAX_ELEMENTS:
            return a
        try:
            return np.broadcast_to(src, tuple(shape))
        except ValueError:
            return a
    if kind == "values":
        if a.size == 0 or a.dtype.kind not in "fiub":
            return a
        seed, v = p
        b = a.copy()
        k = np.random.default_rng(seed).integers(0, b.size)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                b.reshape(-1)[k] = v
            except (OverflowError, ValueError):
                b.reshape(-1)[k] = np.array(v).astype(b.dtype)
        return b
    return a


def build(base, positional, muts):
    """A fresh (args, kwargs) for one backend: copies of the valid call, then the mutations."""
    vals = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in base.items()}
    # Huge broadcasts last: any other mutation of one would copy it.
    for kind, name, p in sorted(muts, key=lambda m: m[0] == "huge"):
        if kind == "missing":
            vals.pop(name, None)
            continue
        vals[name] = apply(kind, vals.get(name), p)
    if all(n in vals for n in positional):
        return [vals.pop(n) for n in positional], vals
    return [], vals  # an argument is missing: pass the rest by keyword


def _snapshot(v):
    if not isinstance(v, np.ndarray):
        return None
    if any(s == 0 for s in v.strides) and v.size > 2**20:
        v = v.base if v.base is not None and v.base.size < 2**20 else None  # a huge broadcast
        if v is None:
            return None
    return (v, v.tobytes() if not v.dtype.hasobject else list(v.reshape(-1)))


def _same(snap):
    v, saved = snap
    return v.tobytes() == saved if not v.dtype.hasobject else all(a is b for a, b in zip(v.reshape(-1), saved))


def _result_arrays(res):
    if res is None:
        return []
    if isinstance(res, (tuple, list)):
        out = []
        for r in res:
            out += _result_arrays(r)
        return out
    if isinstance(res, float):
        return [np.float64(res)]
    return [res]


# A hung call is killed by faulthandler (exit status 1); pytest captures fd 2, so the
# traceback and the call that hung go to this file instead.
WATCHDOG_LOG = os.path.join(tempfile.gettempdir(), f"fastscale-fuzz-watchdog-{os.getpid()}.txt")
_watchdog_file = None


def _close_watchdog():
    """A normal exit: nothing hung, so the file has nothing to keep (a hang exits through
    faulthandler, which skips this and leaves the file to read)."""
    _watchdog_file.close()
    with contextlib.suppress(OSError):
        os.remove(WATCHDOG_LOG)


def _call(fn, args, kwargs, backend, where=""):
    global _watchdog_file
    if _watchdog_file is None:
        _watchdog_file = open(WATCHDOG_LOG, "w")
        atexit.register(_close_watchdog)
    _watchdog_file.seek(0)
    _watchdog_file.truncate()
    _watchdog_file.write(f"fuzz call running for more than {WATCHDOG_S} s: {where}\n")
    _watchdog_file.flush()
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True, file=_watchdog_file)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            return fn(*args, **kwargs, backend=backend), None
    except BaseException as e:  # noqa: BLE001 - classified by the caller
        return None, e
    finally:
        faulthandler.cancel_dump_traceback_later()


def _is_big(p):
    if isinstance(p, tuple):
        return any(_is_big(q) for q in p)
    # 2**25 and up: a table size that large may need a dense (V, D) output past the 3 GB
    # address-space cap (the long run drew num_embeddings = 2**31 - 1: 8 GB at D = 1).
    return isinstance(p, (int, np.integer)) and not isinstance(p, bool) and abs(int(p)) >= 2**25


def run_example(op, data):
    fn, gen, inplace = OPS[op]
    positional, base = gen(data.draw)
    names = sorted(set(base) | {"out"} if "out" in inplace else set(base))
    muts = data.draw(st.lists(mutation(names), max_size=3), label="mutations")
    # A huge broadcast, or an integer argument of 2**25 or more (a table size, an id), may ask for
    # an allocation no machine has: then MemoryError is NumPy's documented answer.
    huge = any(k == "huge" or _is_big(p) for k, _, p in muts)
    injected = any(k in ("values", "dtype", "kwarg", "scalar") for k, _, _ in muts)
    outcomes = {}
    for backend in CPU:
        args, kwargs = build(base, positional, muts)
        named = dict(zip(positional, args), **kwargs)
        snaps = {n: _snapshot(v) for n, v in named.items()}
        where = f"{op}[{backend}] mutations={muts}"
        res, err = _call(fn, args, kwargs, backend, where)
        if err is not None:
            ok = isinstance(err, ALLOWED) or (huge and isinstance(err, MemoryError))
            assert ok, f"{where}: unexpected {type(err).__name__}: {err}"
            assert str(err).strip(), f"{where}: {type(err).__name__} without a message"
            for n, s in snaps.items():
                assert s is None or _same(s), f"{where}: '{n}' was written before {type(err).__name__}: {err}"
            outcomes[backend] = (type(err), str(err))
            continue
        for n, s in snaps.items():
            if s is None or n in inplace:
                continue
            assert _same(s), f"{where}: input '{n}' was modified"
        for n in inplace:
            v = named.get(n)
            if isinstance(v, np.ndarray):
                assert v.flags.writeable, f"{where}: succeeded with read-only in-place '{n}'"
        arrays = _result_arrays(res) + [named[n] for n in inplace if isinstance(named.get(n), np.ndarray)]
        outcomes[backend] = ("ok", arrays)
    # One behaviour on every backend (huge broadcasts excepted: a backend that copies
    # them runs out of memory where another one may first find a bad value).
    if huge:
        return
    kinds = {b: o[0] for b, o in outcomes.items()}
    assert len(set(kinds.values())) == 1, f"{op} mutations={muts}: backends disagree: " + "; ".join(
        f"{b}: {o[0].__name__ if o[0] != 'ok' else 'ok'} {o[1] if o[0] != 'ok' else ''}" for b, o in outcomes.items())
    if kinds[CPU[0]] == "ok" and not injected:
        ref = outcomes[CPU[0]][1]
        single = any(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in base.values())
        tol = 1e-4 if single else 1e-9
        for b in CPU[1:]:
            got = outcomes[b][1]
            assert len(got) == len(ref), f"{op}[{b}] mutations={muts}: {len(got)} results vs {len(ref)}"
            for r, g in zip(ref, got):
                if hasattr(r, "rows"):
                    continue
                r, g = np.asarray(r), np.asarray(g)
                assert r.shape == g.shape and r.dtype == g.dtype, f"{op}[{b}] mutations={muts}: {g.shape} {g.dtype} vs {r.shape} {r.dtype}"
                if r.dtype.kind == "f":
                    np.testing.assert_allclose(g, r, rtol=tol, atol=tol, err_msg=f"{op}[{b}] mutations={muts}")
                else:
                    np.testing.assert_array_equal(g, r, err_msg=f"{op}[{b}] mutations={muts}")


@pytest.fixture(autouse=True)
def _cap_address_space():
    """Cap RLIMIT_AS for one test, so a huge allocation is a MemoryError, not the OOM killer.

    Under tools/sanitize.sh ASan reserves terabytes of shadow memory, so the cap is left off
    there and ASan's own allocation limit (max_allocation_size_mb) does the same job.
    """
    import resource

    if _SAN:
        yield
        return
    with open("/proc/self/statm") as f:
        vm = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = vm + AS_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _fuzz_settings(n):
    return settings(max_examples=n, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@pytest.mark.skipif(not CPU, reason="no CPU backend")
@pytest.mark.parametrize("op", sorted(OPS))
def test_fuzz(op):
    @_fuzz_settings(EXAMPLES)
    @given(data=st.data())
    def run(data):
        run_example(op, data)

    run()


@pytest.mark.slow
@pytest.mark.parametrize("op", sorted(OPS))
def test_fuzz_long(op):
    """10,000 examples per op (HYPOTHESIS_PROFILE=long; otherwise 2,000)."""
    @_fuzz_settings(10_000 if LONG else 2_000)
    @given(data=st.data())
    def run(data):
        run_example(op, data)

    run()
