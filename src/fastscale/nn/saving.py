"""One-file model format: weights, optimizer state, tokenizer, config; atomic and checksummed.

Layout (all integers little-endian)::

    8 bytes   magic  b"FSCALE\\x00\\x01"
    4 bytes   format version (uint32)
    8 bytes   header length H (uint64)
    H bytes   header: UTF-8 JSON (config, compile settings, training counters, tokenizer JSON,
              metadata, and the table of arrays: name, dtype, shape, offset, nbytes)
    8 bytes   payload length P (uint64)
    P bytes   payload: the arrays' raw C-order bytes, each at a 64-byte aligned offset
    32 bytes  sha256 of every byte before it

The file is written to a temporary file in the same folder, fsynced, renamed over the target
(``os.replace``) and the folder fsynced, so a crash leaves either the old file or the new one.
Reading checks, in order: the magic (not a fastscale model), the version (written by a newer
fastscale), the lengths (truncated or trailing data) and the checksum (corrupted); each raises
``ValueError`` naming the file.

A model on the GPU is written from host copies of its arrays (one device-to-host copy each);
``load_model`` rebuilds it on the host (NumPy) unless asked for ``device="gpu"``.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile

import numpy as np

from .._checks import to_identifier
from . import _device
from . import metrics as _metrics

MAGIC = b"FSCALE\x00\x01"
FORMAT_VERSION = 1
_ALIGN = 64
_PREFIX = len(MAGIC) + 4 + 8
_DTYPES = {"float32", "float64", "int32", "int64"}


def save_model(model, path, *, include_optimizer=True) -> None:
    """Write ``model`` to ``path`` (see the module docstring).  ``include_optimizer=False``
    (Keras's option) leaves out the optimizer's state: a file a third the size for Adam,
    loaded compiled with the same optimizer settings but fresh moments and step 0."""
    from .. import __version__
    from .model import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"save_model: expected a Sequential, got {type(model).__name__}")
    path = os.fspath(path)
    arrays: dict[str, np.ndarray] = {}
    if model.built:
        for layer in model.layers:
            for k, p in layer.params.items():
                arrays[f"weights/{layer.name}/{k}"] = _device.to_host(p)
    compile_cfg = None
    if model.compiled:
        opt = model.optimizer
        state = opt.get_state() if include_optimizer else {"step": 0, "slots": {}}
        for key, slots in state["slots"].items():
            for sname, a in slots.items():
                arrays[f"optimizer/{key}/{sname}"] = _device.to_host(a)
        compile_cfg = {
            "optimizer": {**to_identifier(opt), "step": state["step"],
                          "slots": {k: sorted(v) for k, v in state["slots"].items()}},
            "loss": to_identifier(model.loss),
            "metrics": [m.name if m.name in _metrics.NAMES and type(m).__module__ == _metrics.__name__
                        else _unsupported_metric(m) for m in model.metrics],
            "fuse": model._fuse,
        }
    tok = model.tokenizer
    header = {
        "format": "fastscale.model",
        "format_version": FORMAT_VERSION,
        "fastscale_version": __version__,
        "model": {"class_name": "Sequential", "config": model.get_config()},
        "built": model.built,
        "input_shape": None if model._input_shape is None else list(model._input_shape),
        "compile": compile_cfg,
        "seed": model._seed,
        "epochs_done": model._epochs_done,
        "tokenizer": None,  # written below, by _dump_header
        "metadata": model.metadata,
    }
    table, offset = [], 0
    for name, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.name not in _DTYPES:
            raise TypeError(f"save_model: array {name!r} has unsupported dtype {a.dtype}")
        offset = -(-offset // _ALIGN) * _ALIGN
        table.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "offset": offset, "nbytes": a.nbytes})
        offset += a.nbytes
    header["arrays"] = table
    try:
        hbytes = _dump_header(header, tok).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise TypeError(f"save_model: model.metadata / config must be JSON-serialisable: {e}") from None
    payload_len = offset

    directory = os.path.dirname(os.path.abspath(path))
    _remove_orphans(directory, os.path.basename(path))
    # The writer's pid is in the name, so a later save can tell an orphan (its writer was
    # killed) from another live process's save in progress.
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.{os.getpid()}.", suffix=".tmp", dir=directory)
    except OSError as e:  # name the user's path, not our temporary file's
        raise type(e)(e.errno, f"save_model: cannot write {path!r}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            h = hashlib.sha256()

            def put(b):
                h.update(b)
                f.write(b)

            put(MAGIC + struct.pack("<IQ", FORMAT_VERSION, len(hbytes)))
            put(hbytes)
            put(struct.pack("<Q", payload_len))
            pos = 0
            for entry, a in zip(table, arrays.values()):
                if entry["offset"] > pos:
                    put(b"\x00" * (entry["offset"] - pos))
                put(memoryview(np.ascontiguousarray(a)).cast("B"))
                pos = entry["offset"] + entry["nbytes"]
            f.write(h.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def _dump_header(header, tok):
    """``json.dumps(header, sort_keys=True, allow_nan=False)`` with ``header["tokenizer"] =
    tok.to_json()``.  The tokenizer's JSON (megabytes of vocabulary) is written as a JSON
    string by the tokenizer itself when it can (``_json_literal``: no second escaping pass
    over it) and placed last, where sort_keys puts "tokenizer"."""
    if tok is None:
        return json.dumps(header, sort_keys=True, allow_nan=False)
    rest = {k: v for k, v in header.items() if k != "tokenizer"}
    literal = tok._json_literal() if hasattr(tok, "_json_literal") else None
    if literal is None or not rest or max(rest) >= "tokenizer":
        return json.dumps({**rest, "tokenizer": tok.to_json()}, sort_keys=True, allow_nan=False)
    return json.dumps(rest, sort_keys=True, allow_nan=False)[:-1] + ', "tokenizer": ' + literal + "}"


def _unsupported_metric(m):
    raise TypeError(f"save_model: custom metric {type(m).__name__} cannot be saved; use one of {sorted(_metrics.NAMES)}")


def _remove_orphans(directory, name):
    """Delete temporary files of earlier saves to `name` whose writing process is gone."""
    prefix = f".{name}."
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    for entry in entries:
        if not (entry.startswith(prefix) and entry.endswith(".tmp")):
            continue
        pid = entry[len(prefix) :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        try:
            os.unlink(os.path.join(directory, entry))
        except OSError:
            pass


def _alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(directory):
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def read_file(path):
    """``(header dict, {name: read-only array})`` after every check; ValueError naming the file otherwise."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"load_model: no such file: {path!r}") from None
    where = f"load_model: {path!r}"
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        if len(data) < len(MAGIC) and MAGIC.startswith(data) and data:
            raise ValueError(f"{where} is truncated ({len(data)} bytes): not a complete fastscale model file")
        raise ValueError(f"{where} is not a fastscale model file (bad magic bytes)")
    if len(data) < _PREFIX:
        raise ValueError(f"{where} is truncated ({len(data)} bytes)")
    version, hlen = struct.unpack_from("<IQ", data, len(MAGIC))
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{where} was written by a newer fastscale (model format version {version}; this fastscale reads "
            f"up to {FORMAT_VERSION}); upgrade fastscale to load it"
        )
    if version < 1:
        raise ValueError(f"{where}: invalid model format version {version}")
    if _PREFIX + hlen + 8 + 32 > len(data):
        raise ValueError(f"{where} is truncated ({len(data)} bytes; the header alone needs {_PREFIX + hlen + 40})")
    (plen,) = struct.unpack_from("<Q", data, _PREFIX + hlen)
    expected = _PREFIX + hlen + 8 + plen + 32
    if len(data) < expected:
        raise ValueError(f"{where} is truncated ({len(data)} bytes, expected {expected})")
    if len(data) > expected:
        raise ValueError(f"{where} has {len(data) - expected} bytes of trailing data (expected {expected} bytes): corrupted")
    if hashlib.sha256(memoryview(data)[:-32]).digest() != data[-32:]:
        raise ValueError(f"{where} is corrupted: sha256 checksum mismatch")
    try:
        header = json.loads(data[_PREFIX : _PREFIX + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # checksum matched, so the writer was broken
        raise ValueError(f"{where}: unreadable header: {e}") from None
    if header.get("format") != "fastscale.model":
        raise ValueError(f"{where} is not a fastscale model file (header format {header.get('format')!r})")
    base = _PREFIX + hlen + 8
    arrays = {}
    for e in header["arrays"]:
        if e["dtype"] not in _DTYPES or e["offset"] + e["nbytes"] > plen:
            raise ValueError(f"{where}: array table entry {e['name']!r} is invalid")
        a = np.frombuffer(data, dtype=e["dtype"], count=int(np.prod(e["shape"], dtype=np.int64)), offset=base + e["offset"])
        arrays[e["name"]] = a.reshape(e["shape"])  # read-only views; load_model copies them into place
    return header, arrays


def load_model(path, compile=True, device=None):
    """Rebuild a :class:`Sequential` saved with ``model.save(path)``: architecture, weights, and
    (``compile=True``) optimizer, loss, metrics and optimizer state, so ``fit`` resumes exactly;
    the tokenizer comes back as ``model.tokenizer``.

    The model comes back on the host (NumPy arrays, compiled with ``device=None``: CuPy inputs
    still move it to the GPU), whatever device it was saved from; ``device="gpu"`` puts it on
    the GPU (as ``compile(device="gpu")``), ``"cpu"`` pins it to the host."""
    from .. import optim
    from . import layers as L
    from .model import Sequential

    _device.check_device(device, "load_model")
    xp = np if device is None else _device.module_for(device, "load_model")  # fail before reading
    header, arrays = read_file(path)
    where = f"load_model: {os.fspath(path)!r}"
    try:
        cfg = header["model"]["config"]
        model = Sequential([L.from_config(l["class_name"], l["config"]) for l in cfg["layers"]], name=cfg["name"],
                           dtype=cfg["dtype"])
        model._seed = header["seed"]
        model._epochs_done = int(header["epochs_done"])
        model.metadata = header.get("metadata") or {}
        if header["built"]:
            model.build(tuple(header["input_shape"]))
            for layer in model.layers:
                for k, p in layer.params.items():
                    p[...] = arrays[f"weights/{layer.name}/{k}"]
        c = header["compile"]
        if compile and c is not None:
            oc = c["optimizer"]
            opt = optim.get({"class_name": oc["class_name"], "config": oc["config"]})
            model.compile(optimizer=opt, loss={"class_name": c["loss"]["class_name"], "config": c["loss"]["config"]},
                          metrics=c["metrics"], fuse=c.get("fuse", True))
            slots = {k: {s: arrays[f"optimizer/{k}/{s}"] for s in names} for k, names in oc["slots"].items()}
            opt.set_state({"step": int(oc["step"]), "slots": slots})
    except (KeyError, TypeError) as e:
        raise ValueError(f"{where}: inconsistent model file ({type(e).__name__}: {e})") from None
    model._device = device
    model._place(xp)
    if header.get("tokenizer") is not None:
        from .. import text  # only when a tokenizer was saved: the model itself needs no text code

        model.tokenizer = text.tokenizer_from_json(header["tokenizer"])
    return model
