"""The ``uqbench`` command: compare, list, report, evaluate, tune.

Each command parses its flags into the same request the library takes
(:mod:`uqbench.app.requests`) and calls the library. User mistakes surface as
``uqbench: error: <one line>`` and exit status 2, before any training starts and before
anything is written where they can be checked up front; a cell that fails is reported
by name, the others still run, and the command ends with exit status 1 and a summary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from uqbench.app.options import command_line, parse_seeds, parse_sets
from uqbench.app.requests import DEFAULT_METHODS, RequestError
from uqbench.data.registry import DEFAULT_BENCHMARK
from uqbench.errors import UserError

#: Exit status when every input was fine but some cells failed.
EXIT_CELLS_FAILED = 1
EXIT_USER_ERROR = 2

#: Request fields -> the flag a user typed.
_FLAGS = {"cell_timeout_s": "cell-timeout"}


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line with exit status 2 (its own convention)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USER_ERROR, f"uqbench: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="uqbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compare = sub.add_parser("compare", help="train, evaluate and tabulate methods on a benchmark")
    compare.add_argument(
        "--methods", default=",".join(DEFAULT_METHODS), help="comma-separated method names"
    )
    compare.add_argument("--benchmark", default=DEFAULT_BENCHMARK)
    compare.add_argument("--seeds", default="0", help="comma-separated seeds in [0, 2**32)")
    compare.add_argument("--samples", type=int, default=100, help="sampled networks per evaluation")
    compare.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="override a method's config, e.g. hypergan.beta=10",
    )
    compare.add_argument(
        "--presets",
        default=None,
        metavar="FILE",
        help="presets file from `uqbench tune`, applied after each method's own presets and "
        "before --set; default: the benchmark's built-in tuned presets where it has them "
        "(uqbench/app/tuned_presets); 'none' applies none",
    )
    compare.add_argument("--out", default=None, help="output folder (default runs/<benchmark>)")
    compare.add_argument("--executor", choices=("local", "ray"), default="local")
    compare.add_argument("--ray-address", default=None, help="address of an existing Ray cluster")
    compare.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="cells at once (cores // jobs threads each; default 1, on Ray one per CPU)",
    )
    _add_data_args(compare)
    compare.add_argument(
        "--memory-budget-mb",
        type=int,
        default=1024,
        help="activation memory budget of one batched forward pass",
    )
    compare.add_argument(
        "--cell-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="stop a cell (fit + evaluation) that runs longer; it counts as failed",
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
    report.add_argument(
        "--baseline",
        default=None,
        metavar="METHOD",
        help="add each method's difference to METHOD with 95%% paired bootstrap intervals",
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
    tune.add_argument(
        "--prune-warmup-steps",
        type=int,
        default=1,
        help="the pruner ignores reports before this step (default 1: not the untrained net)",
    )
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
    p.add_argument(
        "--ood-limit",
        type=int,
        default=None,
        metavar="N",
        help="score at most N images of each OOD set (a fixed random subset)",
    )
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")


def _parse_ood(items: Sequence[str]) -> dict[str, str]:
    from uqbench.data.ood import parse_ood_option

    out: dict[str, str] = {}
    for item in items:
        name, path = parse_ood_option(item)
        if name in out:
            raise UserError(f"--ood {name} is given twice; give each OOD set its own NAME")
        out[name] = path
    return out


def compare_request(args: argparse.Namespace, argv: Sequence[str] | None):
    from uqbench.app.requests import CompareRequest

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    return CompareRequest(
        methods=methods,
        benchmark=args.benchmark,
        seeds=parse_seeds(args.seeds),
        samples=args.samples,
        sets=parse_sets(args.set, methods),
        presets=args.presets,
        out=args.out,
        executor=args.executor,
        ray_address=args.ray_address,
        jobs=args.jobs,
        data_root=args.data_root,
        ood=_parse_ood(args.ood),
        ood_limit=args.ood_limit,
        device=args.device,
        memory_budget_mb=args.memory_budget_mb,
        cell_timeout_s=args.cell_timeout,
        command=command_line(argv),
    )


def evaluate_request(args: argparse.Namespace):
    from uqbench.app.requests import EvaluateRequest

    return EvaluateRequest(
        checkpoint=args.checkpoint,
        benchmark=args.benchmark,
        samples=args.samples,
        seed=args.seed,
        data_root=args.data_root,
        ood=_parse_ood(args.ood),
        ood_limit=args.ood_limit,
        device=args.device,
        memory_budget_mb=args.memory_budget_mb,
    )


def _message(exc: UserError) -> str:
    """The one-line message of a library error, naming the flag where one was wrong."""
    if isinstance(exc, RequestError):
        flag = _FLAGS.get(exc.field, exc.field.replace("_", "-"))
        value = ",".join(map(str, exc.value)) if isinstance(exc.value, list | tuple) else exc.value
        text = f"--{flag} {value}: {exc.problem}"
    else:
        text = str(exc)
    return " ".join(text.split())


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "compare":
            from uqbench.app.compare import FAILURES_NAME, compare

            result = compare(compare_request(args, argv))
            if result.markdown:
                print(result.markdown)
                print(
                    f"\nwrote {result.out}/table.md, table.csv, config.json, figures/, cells/, "
                    "checkpoints/, results.sqlite"
                )
            if result.failed:
                total = len(result.failed) + len(result.ran) + len(result.skipped)
                print(
                    f"uqbench: {len(result.failed)} of {total} cells failed "
                    f"(tracebacks in {result.out / FAILURES_NAME}):",
                    file=sys.stderr,
                )
                for cell in result.failed:
                    print(f"  {cell.label}: {cell.reason}", file=sys.stderr)
                return EXIT_CELLS_FAILED
        elif args.command == "list":
            list_everything()
        elif args.command == "report":
            from uqbench.app.compare import report

            print(report(Path(args.dir), all_cells=args.all_cells, baseline=args.baseline))
        elif args.command == "evaluate":
            import json

            from uqbench.app.compare import evaluate

            result = evaluate(evaluate_request(args))
            print(result.markdown)
            print(json.dumps(result.metrics, indent=2, sort_keys=True))
        elif args.command == "tune":
            from uqbench.app.tune import tune_command

            tune_command(args, command_line=command_line(argv))
    except UserError as exc:
        print(f"uqbench: error: {_message(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("uqbench: interrupted; finished cells are kept in the results store", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `uqbench list | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def list_everything() -> None:
    """Print every method with the package it comes from (and import failures), then
    benchmarks, in columns as wide as their longest entry."""
    from uqbench.data.registry import list_benchmarks
    from uqbench.registry import discover

    methods = sorted(discover().items())
    rows = []
    for name, info in methods:
        if info.error is None:
            doc = (info.cls.__doc__ or "").strip().splitlines()
            rows.append((name, info.package, doc[0] if doc else ""))
        else:
            rows.append((name, info.package, f"FAILED TO IMPORT: {info.error}"))
    benchmarks = list_benchmarks()
    name_w = max(len(n) for n in [r[0] for r in rows] + [b[0] for b in benchmarks])
    package_w = max((len(r[1]) for r in rows), default=0)
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None

    def show(line: str) -> None:
        print(line if width is None or len(line) <= width else line[: width - 1] + "…")

    print("methods:")
    for name, package, text in rows:
        show(f"  {name:<{name_w}}  {package:<{package_w}}  {text}")
    print("benchmarks:")
    for name, description in benchmarks:
        show(f"  {name:<{name_w}}  {description}")
    from uqbench.app.presets import built_in_presets, read_presets

    tuned = [(b, built_in_presets(b)) for b, _ in benchmarks]
    print("built-in tuned presets (compare applies them unless --presets is given):")
    for name, path in tuned:
        if path is not None:
            show(f"  {name:<{name_w}}  {', '.join(sorted(read_presets(path).methods))}")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
