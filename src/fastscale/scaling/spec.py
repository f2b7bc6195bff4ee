"""Sweep specifications: TOML or Python, validated, expanded into runs with stable ids."""
from __future__ import annotations

import ast
import copy
import hashlib
import itertools
import json
import os
from dataclasses import dataclass, field
from typing import Any

DESIGNS = ("grid", "ladder", "one_factor")
PROTOCOLS = ("converged", "single_pass")
ENGINES = ("local", "dask")
AXES = ("n_train", "embed_dim", "hidden", "vocab_size")
MODEL_AXES = ("embed_dim", "hidden", "vocab_size")
TRAIN_DEFAULTS = {"batch_size": 64, "lr": 1e-3, "max_epochs": 30, "patience": 3, "maxlen": None}
DATA_DEFAULTS = {"source": "imdb", "path": None, "n_val": 5000, "n_test": None, "data_seed": 0,
                 # synthetic teacher (known noise): vocabulary, documents, lengths, signal scale
                 "synthetic_vocab": 2000, "synthetic_docs": 30000, "synthetic_length": 60, "synthetic_scale": 4.0}
EXECUTION_DEFAULTS = {"engine": "local", "address": None, "workers": None, "max_retries": 2}


# ----------------------------------------------------------------------------------------
# Scaling policies: "embed_dim // 2", parsed, never eval'd
# ----------------------------------------------------------------------------------------
_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.FloorDiv: lambda a, b: a // b}


class Policy:
    """An integer expression over axis names: names, integer constants, + - * // and
    parentheses.  Anything else (calls, attributes, floats, /, **) is rejected at parse time."""

    def __init__(self, text: str, axis: str = "?"):
        self.text = text
        self.axis = axis
        try:
            tree = ast.parse(text, mode="eval")
        except SyntaxError as e:
            raise ValueError(f"scaling policy for {axis!r}: cannot parse {text!r}: {e.msg}") from None
        self.names: set[str] = set()
        self._check(tree.body)
        self.tree = tree.body

    def _check(self, node):
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            self._check(node.left)
            self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            self._check(node.operand)
        elif isinstance(node, ast.Name):
            if node.id not in AXES:
                raise ValueError(f"scaling policy for {self.axis!r}: unknown name {node.id!r} in {self.text!r}; "
                                 f"allowed: {', '.join(AXES)}")
            self.names.add(node.id)
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            pass
        else:
            raise ValueError(f"scaling policy for {self.axis!r}: {ast.dump(node)[:60]} is not allowed in {self.text!r}; "
                             "use axis names, integer constants and + - * //")

    def __call__(self, env: dict[str, int]) -> int:
        def ev(node):
            if isinstance(node, ast.BinOp):
                b = ev(node.right)
                if isinstance(node.op, ast.FloorDiv) and b == 0:
                    raise ValueError(f"scaling policy {self.text!r}: division by zero")
                return _OPS[type(node.op)](ev(node.left), b)
            if isinstance(node, ast.UnaryOp):
                return -ev(node.operand)
            if isinstance(node, ast.Name):
                return int(env[node.id])
            return int(node.value)

        return ev(self.tree)

    def __repr__(self):
        return f"Policy({self.text!r})"


# ----------------------------------------------------------------------------------------
# SweepSpec
# ----------------------------------------------------------------------------------------
@dataclass
class SweepSpec:
    name: str
    axes: dict[str, Any]
    design: str = "grid"
    protocol: str = "converged"
    seeds: list[int] = field(default_factory=lambda: [0])
    train: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    execution: dict[str, Any] = field(default_factory=dict)
    base: dict[str, int] = field(default_factory=dict)   # one_factor: the centre point

    def __post_init__(self):
        self.train = {**TRAIN_DEFAULTS, **(self.train or {})}
        self.data = {**DATA_DEFAULTS, **(self.data or {})}
        self.execution = {**EXECUTION_DEFAULTS, **(self.execution or {})}
        self.seeds = [int(s) for s in self.seeds]
        self.validate()

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict) -> "SweepSpec":
        d = copy.deepcopy(d)
        d.pop("meta", None)  # written into sweep.toml by the runner: versions, host, data
        known = {"name", "axes", "design", "protocol", "seeds", "train", "data", "execution", "base"}
        extra = set(d) - known
        if extra:
            raise ValueError(f"sweep spec: unknown keys {sorted(extra)}; known: {sorted(known)}")
        if "name" not in d or "axes" not in d:
            raise ValueError("sweep spec: 'name' and [axes] are required")
        return cls(**d)

    @classmethod
    def from_toml(cls, path) -> "SweepSpec":
        import tomllib

        with open(path, "rb") as f:
            return cls.from_dict(tomllib.load(f))

    @classmethod
    def load(cls, obj) -> "SweepSpec":
        if isinstance(obj, SweepSpec):
            return obj
        if isinstance(obj, dict):
            return cls.from_dict(obj)
        return cls.from_toml(obj)

    def to_dict(self) -> dict:
        return {"name": self.name, "design": self.design, "protocol": self.protocol, "seeds": list(self.seeds),
                "axes": copy.deepcopy(self.axes), "base": dict(self.base), "train": dict(self.train),
                "data": dict(self.data), "execution": dict(self.execution)}

    # -- validation ----------------------------------------------------------------------
    def validate(self):
        if not isinstance(self.name, str) or not self.name or "/" in self.name:
            raise ValueError(f"sweep spec: 'name' must be a non-empty string without '/', got {self.name!r}")
        if self.design not in DESIGNS:
            raise ValueError(f"sweep spec: 'design' must be one of {DESIGNS}, got {self.design!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"sweep spec: 'protocol' must be one of {PROTOCOLS}, got {self.protocol!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"sweep spec: 'seeds' must be a non-empty list of distinct integers, got {self.seeds}")
        unknown = set(self.axes) - set(AXES)
        if unknown:
            raise ValueError(f"sweep spec: unknown axes {sorted(unknown)}; known: {AXES}")
        for a in AXES:
            if a not in self.axes:
                raise ValueError(f"sweep spec: axis {a!r} is missing (a list of integers or a policy string)")
        self.policies: dict[str, Policy] = {}
        for a, v in self.axes.items():
            if isinstance(v, str):
                self.policies[a] = Policy(v, a)
            elif isinstance(v, int) and not isinstance(v, bool):
                self.axes[a] = [v]
            elif not (isinstance(v, list) and v and all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v)):
                raise ValueError(f"sweep spec: axis {a!r} must be a non-empty list of positive integers or a policy "
                                 f"string, got {v!r}")
        if "n_train" in self.policies:
            raise ValueError("sweep spec: 'n_train' must be a list (a data axis takes no model policy)")
        self._policy_order()
        t = self.train
        if not (isinstance(t["batch_size"], int) and t["batch_size"] > 0):
            raise ValueError(f"sweep spec: train.batch_size must be a positive integer, got {t['batch_size']!r}")
        if not (isinstance(t["lr"], (int, float)) and 0 < t["lr"] < 10):
            raise ValueError(f"sweep spec: train.lr must be in (0, 10), got {t['lr']!r}")
        for k in ("max_epochs", "patience"):
            if not (isinstance(t[k], int) and t[k] >= 1):
                raise ValueError(f"sweep spec: train.{k} must be an integer >= 1, got {t[k]!r}")
        if t["maxlen"] is not None and not (isinstance(t["maxlen"], int) and t["maxlen"] > 0):
            raise ValueError(f"sweep spec: train.maxlen must be a positive integer or absent, got {t['maxlen']!r}")
        src = self.data["source"]
        if not (src in ("imdb", "synthetic") or (isinstance(src, str) and src.startswith("tsv:") and len(src) > 4)):
            raise ValueError(f"sweep spec: data.source must be imdb, synthetic or tsv:PATH, got {src!r}")
        ex = self.execution
        if ex["engine"] not in ENGINES:
            raise ValueError(f"sweep spec: execution.engine must be one of {ENGINES}, got {ex['engine']!r}")
        if not (isinstance(ex["max_retries"], int) and ex["max_retries"] >= 0):
            raise ValueError(f"sweep spec: execution.max_retries must be an integer >= 0, got {ex['max_retries']!r}")
        if self.design == "ladder":
            lens = {a: len(self.axes[a]) for a in MODEL_AXES if a not in self.policies and len(self.axes[a]) > 1}
            if len(set(lens.values())) > 1:
                raise ValueError(f"sweep spec: a ladder zips its list-valued model axes, which must have equal "
                                 f"lengths; got {lens}")
        for a, v in self.base.items():
            if a not in AXES or a in self.policies:
                raise ValueError(f"sweep spec: base.{a} is not a list-valued axis")

    def _policy_order(self) -> list[str]:
        order, seen, stack = [], set(), set()

        def visit(a):
            if a in seen:
                return
            if a in stack:
                raise ValueError(f"sweep spec: scaling policies refer to each other in a cycle through {a!r}")
            stack.add(a)
            for n in self.policies[a].names if a in self.policies else ():
                visit(n)
            stack.discard(a)
            seen.add(a)
            if a in self.policies:
                order.append(a)

        for a in AXES:
            visit(a)
        return order

    # -- expansion -----------------------------------------------------------------------
    def _resolve(self, point: dict[str, int]) -> dict[str, int]:
        env = dict(point)
        for a in self._policy_order():
            v = self.policies[a](env)
            if v < 1:
                raise ValueError(f"sweep spec: policy {a} = {self.policies[a].text!r} gives {v} at {point}")
            env[a] = v
        return {a: int(env[a]) for a in AXES}

    def points(self) -> list[dict[str, int]]:
        """The distinct configurations (without seeds), in a stable order."""
        lists = {a: v for a, v in self.axes.items() if a not in self.policies}
        if self.design == "grid":
            names = list(lists)
            raw = [dict(zip(names, combo)) for combo in itertools.product(*(lists[a] for a in names))]
        elif self.design == "ladder":
            # One size knob: the list-valued model axes move together (zipped; single values
            # broadcast), policies derive the rest, and every rung meets every n_train.
            model = [a for a in MODEL_AXES if a in lists]
            k = max(len(lists[a]) for a in model) if model else 1
            rungs = [{a: (lists[a][i] if len(lists[a]) > 1 else lists[a][0]) for a in model} for i in range(k)]
            raw = [{"n_train": n, **r} for r in rungs for n in lists["n_train"]]
        else:  # one_factor: vary one axis at a time around the base point
            base = {a: self.base.get(a, v[0]) for a, v in lists.items()}
            raw = [dict(base)]
            for a, vals in lists.items():
                for v in vals:
                    if v != base[a]:
                        raw.append({**base, a: v})
        out, seen = [], set()
        for p in raw:
            r = self._resolve(p)
            key = tuple(r[a] for a in AXES)
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def runs(self, data_fingerprint: str) -> list[dict]:
        """Every run: resolved config + seed + run_id."""
        out = []
        for p in self.points():
            for s in self.seeds:
                cfg = resolved_config(self, p, s)
                cfg["run_id"] = run_id(cfg, data_fingerprint)
                out.append(cfg)
        return out


def resolved_config(spec: SweepSpec, point: dict, seed: int) -> dict:
    t = spec.train
    return {**point, "batch_size": t["batch_size"], "lr": float(t["lr"]), "max_epochs": t["max_epochs"],
            "patience": t["patience"], "maxlen": t["maxlen"], "protocol": spec.protocol, "seed": int(seed)}


def run_id(config: dict, data_fingerprint: str) -> str:
    """sha256 of the resolved config, seed and data fingerprint (first 16 hex digits)."""
    payload = {k: v for k, v in config.items() if k != "run_id"}
    blob = json.dumps({"config": payload, "data": data_fingerprint}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def to_toml(d: dict) -> str:
    """A small TOML writer for resolved specs (strings, numbers, bools, lists, one-level tables)."""
    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        raise TypeError(f"to_toml: cannot write {type(v).__name__}")

    lines, tables = [], []
    for k, v in d.items():
        if isinstance(v, dict):
            tables.append((k, v))
        elif v is not None:
            lines.append(f"{k} = {val(v)}")
    for k, t in tables:
        lines.append(f"\n[{k}]")
        for kk, vv in t.items():
            if isinstance(vv, dict):
                raise TypeError("to_toml: nested tables are not supported")
            if vv is not None:  # TOML has no null: absent means default
                lines.append(f"{kk} = {val(vv)}")
    return "\n".join(lines) + "\n"


def default_data_dir() -> str | None:
    """IMDB data directory: $FASTSCALE_IMDB_DIR, else the shared copy next to the project."""
    env = os.environ.get("FASTSCALE_IMDB_DIR")
    if env:
        return env
    here = os.path.dirname(os.path.abspath(__file__))
    for up in range(2, 7):
        cand = os.path.normpath(os.path.join(here, *[".."] * up, "shared", "data", "imdb"))
        if os.path.exists(os.path.join(cand, "train.tsv.gz")):
            return cand
    return None
