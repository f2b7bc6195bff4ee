"""Running a sweep: the driver, the engines (local process pool, dask), records, resume.

The driver is the only writer of ``runs.jsonl``: each attempt is appended as one JSON line,
flushed and fsynced as it finishes, so a SIGKILL of the driver loses only runs in flight
(they have no record and are run again by ``--resume``) and never a finished one.  Workers
get the run config and the path of the tokenized data (mmapped once per process); a
remote dask cluster gets the data scattered instead.
"""
from __future__ import annotations

import datetime as _dt
import importlib
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
import traceback
from collections import deque
from typing import Any, Callable

import numpy as np

from .data import SweepData, load_cached, prepare
from .spec import SweepSpec, to_toml

OK, FAILED, DIVERGED = "ok", "failed", "diverged"
FINAL_STATUSES = (OK, DIVERGED)  # a diverged run is a result (same seed -> same divergence)
DEFAULT_TRAIN = "fastscale.scaling.train:train_classifier"


class Diverged(RuntimeError):
    """Raised by a train function when the loss became non-finite."""


# ----------------------------------------------------------------------------------------
# Sizes and analytic FLOPs
# ----------------------------------------------------------------------------------------
def count_params(cfg: dict) -> dict:
    """Embedding(V, d) -> pool -> Dense(h, relu) -> Dense(1, sigmoid)."""
    V, d, h = cfg["vocab_size"], cfg["embed_dim"], cfg["hidden"]
    emb = V * d
    non = d * h + h + h + 1
    return {"params_total": emb + non, "params_embedding": emb, "params_nonembedding": non}


def analytic_flops(cfg: dict, tokens_seen: int, examples_seen: int, steps: int) -> dict:
    """Training FLOPs of this model (not 6N: most parameters are embedding rows read L times).

    Per example: forward L*d (pool) + 2*d*h + 2*h; backward L*d (scatter into the rows) +
    4*d*h + 4*h (two GEMMs per dense layer); i.e. about 2*L*d + 6*d*h.  Dense Adam touches every
    parameter: about 12*N per step.
    """
    d, h = cfg["embed_dim"], cfg["hidden"]
    n = count_params(cfg)["params_total"]
    fwd = tokens_seen * d + examples_seen * (2 * d * h + 2 * h)
    bwd = tokens_seen * d + examples_seen * (4 * d * h + 4 * h)
    opt = 12 * n * steps
    return {"flops_forward": float(fwd), "flops_backward": float(bwd), "flops_optimizer": float(opt),
            "flops_total": float(fwd + bwd + opt)}


# ----------------------------------------------------------------------------------------
# Worker side
# ----------------------------------------------------------------------------------------
def _resolve_train_fn(fn):
    if callable(fn):
        return fn
    mod, _, name = (fn or DEFAULT_TRAIN).partition(":")
    return getattr(importlib.import_module(mod), name)


def _init_worker(threads: int = 1):
    # One kernel thread per worker: with 2 workers on 2 cores, more threads only fight.
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    try:
        import fastscale

        fastscale.set_num_threads(threads)
    except Exception:  # noqa: BLE001 - a train function need not use fastscale kernels
        pass
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:
        pass


_WORKER_READY = [False]


def execute_run(cfg: dict, data_ref, train_fn=None, threads: int = 1) -> dict:
    """Train one run; never raises for a training error (returns status failed/diverged)."""
    if not _WORKER_READY[0]:
        _init_worker(threads)
        _WORKER_READY[0] = True
    t0 = time.time()
    out: dict[str, Any] = {"started": _now(), "host": socket.gethostname(), "pid": os.getpid()}
    try:
        data = load_cached(data_ref) if isinstance(data_ref, str) else data_ref
        fn = _resolve_train_fn(train_fn)
        res = fn(cfg, data)
        if not isinstance(res, dict):
            raise TypeError(f"train function returned {type(res).__name__}, expected a dict of metrics")
        out.update(res)
        status = DIVERGED if res.get("diverged") or not _finite(res.get("test_loss")) else OK
        out["status"] = status
        if status == DIVERGED and not out.get("error"):
            out["error"] = "non-finite loss"
    except Diverged as e:
        out.update(status=DIVERGED, error=f"Diverged: {e}")
    except BaseException as e:  # noqa: BLE001 - recorded, retried by the driver
        if isinstance(e, KeyboardInterrupt):
            raise
        out.update(status=FAILED, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-2000:])
    out["wall_run"] = time.time() - t0
    out["finished"] = _now()
    try:
        from fastscale import _backends

        out.setdefault("backend", next((b for b in ("cpp", "numba", "numpy") if _backends.status(b) is None), "numpy"))
    except Exception:  # noqa: BLE001
        out.setdefault("backend", "unknown")
    return out


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


# ----------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------
def read_records(path: str) -> list[dict]:
    """Every attempt in runs.jsonl; a line cut short by a killed driver is skipped."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def latest_by_run(records: list[dict]) -> dict[str, dict]:
    """The final word on each run: its ok/diverged record if any, else its last attempt."""
    out: dict[str, dict] = {}
    for r in records:
        rid = r.get("run_id")
        if rid is None:
            continue
        prev = out.get(rid)
        if prev is not None and prev.get("status") in FINAL_STATUSES and r.get("status") not in FINAL_STATUSES:
            continue
        out[rid] = r
    return out


class RecordWriter:
    """Append-only JSON lines, flushed and fsynced per record (only the driver writes)."""

    def __init__(self, path: str):
        self.path = path
        # A driver killed mid-write can leave a partial last line: start on a fresh line.
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, "rb") as f:
                f.seek(-1, os.SEEK_END)
                last = f.read(1)
            if last != b"\n":
                with open(path, "ab") as f:
                    f.write(b"\n")
        self.f = open(path, "a", encoding="utf-8")

    def write(self, rec: dict):
        self.f.write(json.dumps(rec, sort_keys=True, default=_json_default) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self):
        self.f.close()


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _git_sha() -> str | None:
    try:
        here = os.path.dirname(os.path.abspath(__file__))
        r = subprocess.run(["git", "-C", here, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return r.stdout.strip() or None
    except Exception:  # noqa: BLE001
        return None


def environment() -> dict:
    import fastscale

    return {"fastscale_version": fastscale.__version__, "git_sha": _git_sha(), "host": socket.gethostname(),
            "python": platform.python_version(), "numpy": np.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count()}


# ----------------------------------------------------------------------------------------
# Progress
# ----------------------------------------------------------------------------------------
class Progress:
    """runs done / failed / pending with an ETA; redraws one line on a terminal, else prints a
    line per finished run."""

    def __init__(self, total: int, already: int, stream=None, enabled: bool = True, cost_left: float | None = None):
        self.total, self.done, self.failed, self.diverged = total, already, 0, 0
        self.start, self.finished_here = time.time(), 0
        # ETA by estimated cost, not run count: runs go longest first, so counting runs
        # would overestimate the time left.
        self.cost_left, self.cost_done = cost_left, 0.0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()

    def line(self) -> str:
        pending = self.total - self.done - self.failed - self.diverged
        el = time.time() - self.start
        if self.cost_left is not None and self.cost_done > 0:
            eta = el / self.cost_done * max(0.0, self.cost_left)
        else:
            eta = (el / self.finished_here * pending) if self.finished_here else float("nan")
        width = 24
        frac = (self.total - pending) / self.total if self.total else 1.0
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        eta_s = "?" if not math.isfinite(eta) else _fmt_time(eta)
        return (f"[{bar}] {self.total - pending}/{self.total}  done {self.done}  failed {self.failed}  "
                f"diverged {self.diverged}  pending {pending}  elapsed {_fmt_time(el)}  ETA {eta_s}")

    def update(self, status: str, note: str = "", cost: float = 0.0):
        self.finished_here += 1
        if self.cost_left is not None:
            self.cost_done += cost
            self.cost_left -= cost
        if status == OK:
            self.done += 1
        elif status == DIVERGED:
            self.diverged += 1
        else:
            self.failed += 1
        self.show(note)

    def retry(self, note: str):
        if self.enabled:
            self._emit(f"retrying: {note}")

    def show(self, note: str = ""):
        if not self.enabled:
            return
        self._emit(self.line() + (f"  {note}" if note and not self.tty else ""))

    def _emit(self, s):
        if self.tty:
            self.stream.write("\r\x1b[K" + s)
        else:
            self.stream.write(s + "\n")
        self.stream.flush()

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _fmt_time(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


# ----------------------------------------------------------------------------------------
# Engines
# ----------------------------------------------------------------------------------------
class _LocalEngine:
    """A spawn-context process pool; a pool broken by a dying worker is rebuilt."""

    name = "local"

    def __init__(self, workers: int, threads: int):
        self.workers, self.threads = workers, threads
        self.pool = None
        self.owner = {}  # future -> the pool that runs it

    def _pool(self):
        if self.pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: the driver may hold OpenMP / BLAS threads, which fork breaks.
            self.pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        return self.pool

    @property
    def slots(self):
        return self.workers

    def submit(self, cfg, data_ref, train_fn):
        from concurrent.futures.process import BrokenProcessPool

        try:
            fut = self._pool().submit(execute_run, cfg, data_ref, train_fn, self.threads)
        except BrokenProcessPool:  # a worker died since the last submit: start a fresh pool
            self._drop()
            fut = self._pool().submit(execute_run, cfg, data_ref, train_fn, self.threads)
        self.owner[fut] = self.pool
        return fut

    def _drop(self):
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def wait(self, futs):
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(futs, return_when=FIRST_COMPLETED)
        return done

    def result(self, fut):
        from concurrent.futures.process import BrokenProcessPool

        owner = self.owner.pop(fut, None)
        try:
            return fut.result()
        except BrokenProcessPool as e:
            if owner is self.pool:
                self._drop()  # rebuild on the next submit (unless that already happened)
            return {"status": FAILED, "error": f"worker process died: {e}"}
        except Exception as e:  # noqa: BLE001 - e.g. an unpicklable result
            return {"status": FAILED, "error": f"{type(e).__name__}: {e}"}

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


class _DaskEngine:
    name = "dask"

    def __init__(self, workers: int, threads: int, address: str | None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise RuntimeError("the dask engine needs dask distributed: pip install 'fastscale[dask]' "
                               "(or pip install \"dask[distributed]\")") from None
        self.threads = threads
        self.cluster = None
        if address:
            self.client = Client(address)
        else:
            self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None)
            self.client = Client(self.cluster)
        self.remote = bool(address)
        self._scattered = None

    @property
    def slots(self):
        n = sum(w.get("nthreads", 1) for w in self.client.scheduler_info().get("workers", {}).values())
        return max(1, n)

    def data_ref(self, data: SweepData, folder: str):
        if not self.remote:
            return folder
        if self._scattered is None:  # a remote cluster may not see our disk: ship the arrays
            full = SweepData({k: np.asarray(v) for k, v in data.arrays.items()}, data.meta)
            self._scattered = self.client.scatter(full, broadcast=True)
        return self._scattered

    def submit(self, cfg, data_ref, train_fn):
        # pure=False: two attempts of one run are separate tasks; retries are the driver's.
        return self.client.submit(execute_run, cfg, data_ref, train_fn, self.threads, pure=False)

    def wait(self, futs):
        from distributed import wait

        res = wait(list(futs), return_when="FIRST_COMPLETED")
        return res.done

    def result(self, fut):
        try:
            return fut.result()
        except Exception as e:  # noqa: BLE001 - KilledWorker, lost connection, ...
            return {"status": FAILED, "error": f"{type(e).__name__}: {e}"}

    def close(self):
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()


# ----------------------------------------------------------------------------------------
# The driver
# ----------------------------------------------------------------------------------------
def run_sweep(spec, out: str, *, engine: str | None = None, address: str | None = None, resume: bool = False,
              train_fn: Callable | str | None = None, workers: int | None = None, threads: int = 1,
              progress: bool = True, stream=None) -> dict:
    """Run every run of ``spec`` not yet recorded ok; returns counts by final status.

    ``train_fn(config, data) -> dict`` trains one run (default: the fastscale classifier,
    ``fastscale.scaling.train:train_classifier``); it must be importable by worker processes
    (a module-level function or a ``"module:function"`` string).
    """
    spec = SweepSpec.load(spec)
    ex = spec.execution
    engine = engine or ex["engine"]
    address = address or ex.get("address")
    if address and engine != "dask":
        engine = "dask"
    workers = int(workers or ex.get("workers") or min(2, os.cpu_count() or 1))
    # Workers inherit this: idle OpenMP threads that spin starve the other worker's kernels
    # on shared cores (see fastscale.cli); a user's own choice wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.makedirs(out, exist_ok=True)
    runs_path = os.path.join(out, "runs.jsonl")
    if os.path.exists(runs_path) and os.path.getsize(runs_path) > 0 and not resume:
        raise FileExistsError(f"{runs_path} already has runs: pass resume=True (--resume) to continue that sweep, "
                              "or choose a new --out")

    data_dir = os.path.join(out, "data")
    data = prepare(spec, cache_dir=data_dir)
    runs = spec.runs(data.fingerprint)
    max_n = max(r["n_train"] for r in runs)
    if max_n > data.meta["n_pool"]:
        raise ValueError(f"n_train={max_n} exceeds the training pool of {data.meta['n_pool']} examples")
    env = environment()
    _write_spec(spec, out, env, data, len(runs))

    prior = latest_by_run(read_records(runs_path))
    todo = [r for r in runs if prior.get(r["run_id"], {}).get("status") not in FINAL_STATUSES]
    # Longest runs first (cost ~ examples x width): the pool then ends on short runs
    # instead of one worker finishing the biggest model alone.
    todo.sort(key=lambda r: -_cost(r))
    already = len(runs) - len(todo)
    prog = Progress(len(runs), already, stream=stream, enabled=progress, cost_left=float(sum(map(_cost, todo))))
    prog.show("resuming" if already else "")
    writer = RecordWriter(runs_path)
    eng = (_DaskEngine(workers, threads, address) if engine == "dask" else _LocalEngine(workers, threads))
    data_ref = eng.data_ref(data, data_dir) if engine == "dask" else data_dir
    fn_ref = train_fn if train_fn is not None else DEFAULT_TRAIN
    max_retries = int(ex["max_retries"])
    counts = {OK: 0, FAILED: 0, DIVERGED: 0, "skipped": already}
    pending = deque(todo)
    attempts: dict[str, int] = {}
    in_flight: dict[Any, dict] = {}
    try:
        while pending or in_flight:
            while pending and len(in_flight) < eng.slots:
                cfg = pending.popleft()
                attempts[cfg["run_id"]] = attempts.get(cfg["run_id"], 0) + 1
                in_flight[eng.submit(cfg, data_ref, fn_ref)] = cfg
            for fut in eng.wait(list(in_flight)):
                cfg = in_flight.pop(fut)
                res = eng.result(fut)
                n_att = attempts[cfg["run_id"]]
                rec = _make_record(cfg, res, data, env, eng.name, n_att)
                retry = rec["status"] == FAILED and n_att <= max_retries
                rec["will_retry"] = retry
                writer.write(rec)
                if retry:
                    pending.append(cfg)
                    prog.retry(f"{cfg['run_id']} attempt {n_att} failed: {rec.get('error', '')[:120]}")
                else:
                    counts[rec["status"]] += 1
                    prog.update(rec["status"], f"{cfg['run_id']} {rec['status']} "
                                f"n_train={cfg['n_train']} d={cfg['embed_dim']} seed={cfg['seed']}", cost=_cost(cfg))
    finally:
        writer.close()
        eng.close()
        prog.close()
    return counts


def _cost(cfg: dict) -> float:
    """Relative cost of a run for scheduling and the ETA: examples x (embedding + hidden width)
    plus a fixed per-run overhead worth ~6,000 examples (small sets train more epochs; measured
    on the IMDB ladder: 2.5 s per run at n_train=1,000, 9 s at 20,000)."""
    return (cfg["n_train"] + 6000) * (cfg["embed_dim"] + cfg["hidden"] + 8)


def _write_spec(spec: SweepSpec, out: str, env: dict, data: SweepData, n_runs: int):
    d = spec.to_dict()
    d["meta"] = {**{k: v for k, v in env.items() if v is not None}, "data_fingerprint": data.fingerprint,
                 "n_runs": n_runs, "written": _now(), **{f"data_{k}": v for k, v in data.meta.items()
                                                        if isinstance(v, (int, float, str))}}
    tmp = os.path.join(out, "sweep.toml.tmp")
    with open(tmp, "w") as f:
        f.write(to_toml(d))
    os.replace(tmp, os.path.join(out, "sweep.toml"))


def _make_record(cfg: dict, res: dict, data: SweepData, env: dict, engine: str, attempt: int) -> dict:
    rec = {"run_id": cfg["run_id"], "status": res.get("status", FAILED), "error": res.get("error"),
           "attempt": attempt, "engine": engine, "fastscale_version": env["fastscale_version"],
           "git_sha": env["git_sha"], "driver_host": env["host"], "data_fingerprint": data.fingerprint,
           "data_source": data.meta["source"]}
    rec.update({k: cfg[k] for k in cfg if k != "run_id"})
    rec.update(count_params(cfg))
    for k, v in res.items():
        if k not in ("status", "error"):
            rec[k] = v
    if "tokens_seen" in res and "examples_seen" in res:
        rec.update(analytic_flops(cfg, res["tokens_seen"], res["examples_seen"], res.get("steps", 0)))
        secs = res.get("wall_train_steps") or res.get("wall_train")  # training steps, not validation
        if secs:
            rec["tokens_per_s"] = res["tokens_seen"] / secs
    return rec


# ----------------------------------------------------------------------------------------
# Plan and status
# ----------------------------------------------------------------------------------------
def plan(spec, *, out: str | None = None, flops_per_s: float | None = None) -> dict:
    """Runs, FLOPs and an estimated time; trains nothing (reads and tokenizes the data once)."""
    spec = SweepSpec.load(spec)
    data = prepare(spec, cache_dir=os.path.join(out, "data") if out else None)
    runs = spec.runs(data.fingerprint)
    off = data.arrays["pool_offsets"]
    workers = int(spec.execution.get("workers") or min(2, os.cpu_count() or 1))
    lo_f, hi_f = 0.0, 0.0
    t = spec.train
    max_ep = 1 if spec.protocol == "single_pass" else t["max_epochs"]
    min_ep = 1 if spec.protocol == "single_pass" else min(t["max_epochs"], t["patience"] + 1)
    for r in runs:
        lens = np.diff(np.asarray(off[: r["n_train"] + 1]))
        if r["maxlen"]:
            lens = np.minimum(lens, r["maxlen"])
        tok, n = int(lens.sum()), r["n_train"]
        steps = math.ceil(n / r["batch_size"])
        lo_f += analytic_flops(r, tok * min_ep, n * min_ep, steps * min_ep)["flops_total"]
        hi_f += analytic_flops(r, tok * max_ep, n * max_ep, steps * max_ep)["flops_total"]
    # Effective training throughput of one worker (one core); measured from a previous sweep
    # when one is given, else ~8 GFLOP/s: analytic FLOPs per second measured for this model
    # (d=128, n_train=20000) on one AVX-512 core of the development machine, rounded down.
    rate = flops_per_s or _measured_rate(out) or 8.0e9
    return {"name": spec.name, "design": spec.design, "protocol": spec.protocol, "runs": len(runs),
            "configurations": len(runs) // len(spec.seeds), "seeds": len(spec.seeds), "workers": workers,
            "flops_min": lo_f, "flops_max": hi_f, "flops_per_s_per_worker": rate,
            "est_seconds_min": lo_f / rate / workers, "est_seconds_max": hi_f / rate / workers,
            "data": {k: v for k, v in data.meta.items() if isinstance(v, (int, float, str))}}


def _measured_rate(out: str | None) -> float | None:
    if not out:
        return None
    recs = [r for r in read_records(os.path.join(out, "runs.jsonl")) if r.get("status") == OK and r.get("wall_train")]
    if not recs:
        return None
    return sum(r["flops_total"] for r in recs) / sum(r["wall_train"] for r in recs)


def status(out: str) -> dict:
    """Counts of the sweep in ``out``: planned, ok, failed, diverged, pending, attempts."""
    import tomllib

    with open(os.path.join(out, "sweep.toml"), "rb") as f:
        d = tomllib.load(f)
    meta = d.pop("meta", {})
    recs = read_records(os.path.join(out, "runs.jsonl"))
    latest = latest_by_run(recs)
    c = {OK: 0, FAILED: 0, DIVERGED: 0}
    for r in latest.values():
        c[r["status"]] = c.get(r["status"], 0) + 1
    total = int(meta.get("n_runs", len(latest)))
    return {"name": d.get("name"), "planned": total, "ok": c[OK], "failed": c[FAILED], "diverged": c[DIVERGED],
            "pending": max(0, total - c[OK] - c[DIVERGED] - c[FAILED]), "attempts": len(recs),
            "wall_train_total_s": sum(r.get("wall_train") or 0.0 for r in latest.values())}
