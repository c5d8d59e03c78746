"""The ``uqbench`` command: compare, list, report, evaluate, tune.

User mistakes surface as ``uqbench: error: <one line>`` and exit status 2, before any
training starts where they can be checked up front; finished cells are never lost.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from uqbench.app.options import command_line
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
    compare.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="override a method's config, e.g. hypergan.beta=10",
    )
    compare.add_argument("--out", default=None, help="output folder (default runs/<benchmark>)")
    compare.add_argument("--executor", choices=("local", "ray"), default="local")
    compare.add_argument("--ray-address", default=None, help="address of an existing Ray cluster")
    _add_data_args(compare)
    compare.add_argument(
        "--memory-budget-mb",
        type=int,
        default=1024,
        help="activation memory budget of one batched forward pass",
    )

    sub.add_parser("list", help="methods (built-in and plugins) and benchmarks")

    report = sub.add_parser("report", help="re-render tables and figures from a results folder")
    report.add_argument("dir")
    report.add_argument(
        "--all",
        action="store_true",
        dest="all_cells",
        help="every finished cell in the store, not only those of the last compare command",
    )

    evaluate = sub.add_parser("evaluate", help="re-score a saved checkpoint without retraining")
    evaluate.add_argument("checkpoint")
    evaluate.add_argument("--benchmark", default=None, help="default: the checkpoint's benchmark")
    evaluate.add_argument("--samples", type=int, default=None)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--memory-budget-mb", type=int, default=1024)
    _add_data_args(evaluate)
    _add_tune_parser(sub)
    return parser


def _add_tune_parser(sub: argparse._SubParsersAction) -> None:
    """``uqbench tune``: Optuna search on the validation split (see uqbench.app.tune)."""
    tune = sub.add_parser("tune", help="tune a method's search space on the validation split")
    tune.add_argument("--method", required=True)
    tune.add_argument("--benchmark", required=True)
    tune.add_argument("--trials", type=int, required=True, help="finished trials wanted")
    tune.add_argument(
        "--objective", default="nll", help="validation metric: nll (default), acc, ece, brier"
    )
    tune.add_argument("--out", default=None, help="default runs/tune-<benchmark>-<method>")
    tune.add_argument("--executor", choices=("local", "ray"), default="local")
    tune.add_argument("--ray-address", default=None, help="address of an existing Ray cluster")
    tune.add_argument("--jobs", type=int, default=1, help="trials at once (cores // jobs each)")
    tune.add_argument("--max-fit-s", type=float, default=None, help="cap on each trial's fit")
    tune.add_argument("--seed", type=int, default=0, help="fit, evaluation and sampler seed")
    tune.add_argument("--pruner", choices=("median", "none"), default="median")
    tune.add_argument("--samples", type=int, default=100, help="networks per validation score")
    tune.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="fix a knob (not searched), e.g. hypergan.steps=2000",
    )
    tune.add_argument("--presets-file", default=None, help="default <out>/presets/<benchmark>.json")
    tune.add_argument("--data-root", default=None, help="folder searched first for data files")
    tune.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="folder searched first for data files")
    p.add_argument(
        "--ood",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="extra OOD set: an IDX image file (gz or not) or an image folder",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compare":
            from uqbench.app.compare import compare

            compare(args, command_line=command_line(argv))
        elif args.command == "list":
            list_everything()
        elif args.command == "report":
            from uqbench.app.compare import report

            report(Path(args.dir), all_cells=args.all_cells)
        elif args.command == "evaluate":
            from uqbench.app.compare import evaluate_checkpoint

            evaluate_checkpoint(args)
        elif args.command == "tune":
            from uqbench.app.tune import tune_command

            tune_command(args, command_line=command_line(argv))
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


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
