"""`python -m benchmarks NAME [options]`: run one benchmark, print its table, save its JSON.

A benchmark is any module in this package that defines ``add_arguments(parser)`` and
``run(args) -> Report``; its module name is the benchmark's name.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path

NOT_BENCHMARKS = {"harness", "__main__"}


def discover() -> dict[str, str]:
    here = Path(__file__).resolve().parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in NOT_BENCHMARKS)
    return {name: f"benchmarks.{name}" for name in names}


def _load(module_name: str):
    """The benchmark module, or the reason it cannot run in this environment (a missing package)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return f"unavailable here: {exc}"
    if not (hasattr(module, "run") and hasattr(module, "add_arguments")):
        return None
    return module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    benchmarks = discover()
    # Import only the benchmark asked for, so one benchmark's optional packages never block another.
    chosen = {argv[0]: benchmarks[argv[0]]} if argv and argv[0] in benchmarks else benchmarks
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="name", metavar="NAME", required=True)
    modules = {}
    for name, module_name in chosen.items():
        module = _load(module_name)
        if module is None:
            continue
        if isinstance(module, str):
            sub.add_parser(name, help=module)
            continue
        modules[name] = module
        p = sub.add_parser(name, help=(module.__doc__ or name).strip().splitlines()[0])
        p.add_argument("--threads", type=int, default=None, help="torch threads (default: env or all cores)")
        module.add_arguments(p)
    args = parser.parse_args(argv)
    if args.name not in modules:
        parser.error(f"benchmark {args.name!r} is {_load(chosen[args.name])}")

    from muq_model.runtime import configure_threads

    configure_threads(args.threads)
    report = modules[args.name].run(args)
    print(report.table())
    print(f"saved {report.save()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
