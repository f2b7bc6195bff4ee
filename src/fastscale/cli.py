"""The ``fastscale`` command: info (more subcommands arrive with the training stack)."""
from __future__ import annotations

import argparse
import os
import platform
import sys


def _info(args) -> int:
    import numpy as np

    import fastscale
    from fastscale import _backends

    print(f"fastscale {fastscale.__version__}  (python {platform.python_version()}, numpy {np.__version__}, {platform.machine()})")
    print("backends:")
    for name, reason in fastscale.backends().items():
        print(f"  {name:6s} {'available' if reason is None else 'unavailable: ' + reason}")
    if _backends.status("cpp") is None:
        info = _backends.module("cpp").info()
        print(
            f"cpp build: {info['compiler']}, SIMD {info['isa']} (detected {info['isa_detected']}), "
            f"OpenMP {info['openmp']}, {info['num_threads']} threads of {info['num_procs']} processors"
        )
    if _backends.status("cuda") is None:
        info = _backends.module("cuda").info()
        print(f"cuda build: {info}")
    print(f"FASTSCALE_BACKEND={os.environ.get('FASTSCALE_BACKEND', '')!r}")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fastscale", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="backends, SIMD level, threads, CUDA build")
    p.set_defaults(func=_info)
    from .scaling.cli import add_parser as _add_sweep  # argparse only: fit/train load lazily
    _add_sweep(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
