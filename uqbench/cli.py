"""The ``uqbench`` command: compare, list, report, evaluate.

User mistakes surface as ``uqbench: error: <one line>`` and exit status 2, before any
training starts where they can be checked up front; finished cells are never lost.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from uqbench.data.registry import DEFAULT_BENCHMARK
from uqbench.errors import UserError

DEFAULT_METHODS = "hypergan,mcdropout"


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line with exit status 2 (its own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"uqbench: error: {message} (see `uqbench {self.prog.split()[-1]} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="uqbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compare = sub.add_parser("compare", help="train, evaluate and tabulate methods on a benchmark")
    compare.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method names")
    compare.add_argument("--benchmark", default=DEFAULT_BENCHMARK)
    compare.add_argument("--seeds", default="0", help="comma-separated integer seeds")
    compare.add_argument("--samples", type=int, default=100, help="sampled networks per evaluation")
    compare.add_argument("--set", action="append", default=[], metavar="METHOD.KEY=VALUE",
                         help="override a method's config, e.g. hypergan.beta=10")
    compare.add_argument("--out", default=None, help="output folder (default runs/<benchmark>)")
    compare.add_argument("--executor", choices=("local", "ray"), default="local")
    compare.add_argument("--ray-address", default=None, help="address of an existing Ray cluster")
    _add_data_args(compare)
    compare.add_argument("--memory-budget-mb", type=int, default=1024,
                         help="activation memory budget of one batched forward pass")

    sub.add_parser("list", help="methods (built-in and plugins) and benchmarks")

    report = sub.add_parser("report", help="re-render tables and figures from a results folder")
    report.add_argument("dir")
    report.add_argument(
        "--all", action="store_true", dest="all_cells",
        help="every finished cell in the store, not only those of the last compare command",
    )

    evaluate = sub.add_parser("evaluate", help="re-score a saved checkpoint without retraining")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--benchmark", default=None, help="default: the checkpoint's benchmark")
    evaluate.add_argument("--samples", type=int, default=None)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--memory-budget-mb", type=int, default=1024)
    _add_data_args(evaluate)
    return parser


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="folder searched first for data files")
    p.add_argument("--ood", action="append", default=[], metavar="NAME=PATH",
                   help="extra OOD set: an IDX image file (gz or not) or an image folder")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compare":
            from uqbench.compare import compare

            compare(args, command_line=_command_line(argv))
        elif args.command == "list":
            list_everything()
        elif args.command == "report":
            from uqbench.compare import report

            report(Path(args.dir), all_cells=args.all_cells)
        elif args.command == "evaluate":
            from uqbench.compare import evaluate_checkpoint

            evaluate_checkpoint(args)
    except UserError as exc:
        print(f"uqbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("uqbench: interrupted; finished cells are kept in the results store", file=sys.stderr)
        return 130
    return 0


def list_everything() -> None:
    """Print every method with the package it comes from (and import failures), then benchmarks."""
    from uqbench.data.registry import list_benchmarks
    from uqbench.registry import discover

    print("methods:")
    for name, info in sorted(discover().items()):
        if info.error is None:
            doc = (info.cls.__doc__ or "").strip().splitlines()
            print(f"  {name:<12} {info.package:<16} {doc[0] if doc else ''}")
        else:
            print(f"  {name:<12} {info.package:<16} FAILED TO IMPORT: {info.error}")
    print("benchmarks:")
    for name, description in list_benchmarks():
        print(f"  {name:<16} {description}")


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r}: expected comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds:
        raise UserError("--seeds is empty; give at least one integer, e.g. --seeds 0")
    return seeds


def parse_sets(items: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["hypergan.beta=10"]`` -> ``{"hypergan": {"beta": "10"}}``; checks the method is compared."""
    out: dict[str, dict[str, str]] = {m: {} for m in methods}
    for item in items:
        key, sep, value = item.partition("=")
        method, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise UserError(f"--set {item!r}: expected METHOD.KEY=VALUE, e.g. --set hypergan.beta=10")
        if method not in out:
            raise UserError(f"--set {item!r}: {method!r} is not among --methods {','.join(methods)}")
        out[method][name] = value
    return out


def config_as_dict(config: object) -> dict:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)  # type: ignore[arg-type]


def _command_line(argv: Sequence[str] | None) -> str:
    parts = list(argv) if argv is not None else sys.argv[1:]
    return "uqbench " + " ".join(shlex.quote(p) for p in parts)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _dump(obj: object) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
