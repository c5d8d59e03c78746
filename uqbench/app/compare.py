"""``uqbench compare`` / ``report`` / ``evaluate``: plan cells, run them, write the results folder.

Everything a user can get wrong is checked before the first cell trains: methods,
benchmark and its data files, ``--samples``, ``--set``, ``--ood``, the output folder.
Each finished cell is written at once (arrays, checkpoint, then its store row), and a
re-run of the same command skips the cells the store already holds.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from uqbench.app.options import config_as_dict, dump_json, now_iso, parse_seeds, parse_sets
from uqbench.app.outputs import (
    CONFIG_NAME,
    STORE_NAME,
    atomic_write_text,
    prepare_out_dir,
    read_config,
    render,
    save_outcome,
)
from uqbench.app.progress import CellProgress
from uqbench.app.runner import CellSpec, cached_benchmark
from uqbench.app.store import ResultsStore
from uqbench.environment import machine, package_versions, resolve_device
from uqbench.errors import UserError
from uqbench.registry import load_method


def _parse_ood(items: list[str]) -> tuple[tuple[str, str], ...]:
    from uqbench.data.ood import parse_ood_option

    return tuple(parse_ood_option(item) for item in items)


def plan_cells(args: argparse.Namespace) -> tuple[list[CellSpec], dict]:
    """The cells of a compare command and the resolved config of each method."""
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UserError(
            "--methods is empty; e.g. --methods hypergan,mcdropout (see `uqbench list`)"
        )
    if len(set(methods)) != len(methods):
        raise UserError(f"--methods {args.methods}: a method is listed twice")
    if args.samples < 1:
        raise UserError(f"--samples {args.samples}: the number of sampled networks must be >= 1")
    if args.memory_budget_mb < 16:
        raise UserError("--memory-budget-mb must be at least 16")
    seeds = parse_seeds(args.seeds)
    overrides = parse_sets(args.set, methods)
    classes = {m: load_method(m) for m in methods}
    from uqbench.data.registry import BENCHMARKS

    if args.benchmark not in BENCHMARKS:
        raise UserError(
            f"unknown benchmark {args.benchmark!r}; known: {', '.join(sorted(BENCHMARKS))}"
        )
    configs = {
        m: config_as_dict(classes[m].make_config(overrides[m], benchmark=args.benchmark))
        for m in methods
    }
    device = resolve_device(args.device)
    ood = _parse_ood(args.ood)
    specs = [
        CellSpec(
            method=m,
            benchmark=args.benchmark,
            seed=s,
            config=configs[m],
            n_samples=args.samples,
            data_root=args.data_root,
            extra_ood=ood,
            device=device,
            memory_budget=args.memory_budget_mb * 2**20,
        )
        for m in methods
        for s in seeds
    ]
    return specs, configs


def compare(args: argparse.Namespace, *, command_line: str) -> None:
    """Train and evaluate every (method, seed) cell, then write and print the table."""
    specs, configs = plan_cells(args)
    out_dir = prepare_out_dir(Path(args.out or f"runs/{args.benchmark}"))
    data = cached_benchmark(specs[0].benchmark, specs[0].data_root, specs[0].extra_ood)
    torch.set_num_threads(torch.get_num_threads())
    resolved = {
        "command": command_line,
        "started": now_iso(),
        "benchmark": args.benchmark,
        "task": data.task.kind,
        "methods": configs,
        "seeds": sorted({s.seed for s in specs}),
        "samples": args.samples,
        "executor": args.executor,
        "device": specs[0].device,
        "data_sources": data.sources,
        "ood": [list(p) for p in specs[0].extra_ood],
        "cells": [s.file_stem for s in specs],
        "versions": package_versions(),
        "machine": machine(),
    }
    atomic_write_text(out_dir / CONFIG_NAME, dump_json(resolved) + "\n")
    with ResultsStore(out_dir / STORE_NAME) as store:
        todo = []
        for spec in specs:
            if store.is_finished(spec.method, spec.benchmark, spec.seed, spec.config_hash):
                print(f"skipping {spec.label}: already finished in {out_dir / STORE_NAME}")
            else:
                todo.append(spec)
        with CellProgress(len(todo)) as progress:

            def on_result(outcome) -> None:
                save_outcome(out_dir, outcome, store)
                progress.cell_done(outcome.spec, outcome.metrics)

            if args.executor == "ray":
                from uqbench.app.executors import run_ray

                run_ray(todo, on_result, address=args.ray_address)
            else:
                from uqbench.app.executors import run_local

                run_local(todo, on_result, progress.for_cell)
        records = _records_for(store, specs)
    markdown = render(out_dir, records, data.task.kind)
    print(markdown)
    print(
        f"\nwrote {out_dir}/table.md, table.csv, {CONFIG_NAME}, figures/, cells/, checkpoints/, {STORE_NAME}"
    )


def _records_for(store: ResultsStore, specs: list[CellSpec]):
    wanted = {(s.method, s.benchmark, s.seed, s.config_hash) for s in specs}
    return [r for r in store.records() if (r.method, r.benchmark, r.seed, r.config_hash) in wanted]


def report(out_dir: Path, *, all_cells: bool = False, baseline: str | None = None) -> None:
    """Re-render table.md, table.csv and figures from a results folder's store.

    By default the cells of the last ``compare`` into ``out_dir`` (its config.json);
    ``all_cells``: every finished cell, e.g. after commands with different seeds or methods
    (refused when the store holds two configs of one method and seed: they would be pooled).
    ``baseline``: also write differences.md, every method minus ``baseline`` with paired
    bootstrap intervals (:mod:`uqbench.evaluation.intervals`).
    """
    config = read_config(out_dir)
    store_path = out_dir / STORE_NAME
    if not store_path.exists():
        raise UserError(
            f"{out_dir} holds no {STORE_NAME}; run `uqbench compare --out {out_dir}` first"
        )
    with ResultsStore(store_path) as store:
        records = store.records()
    stems = set(config.get("cells", []))
    chosen = (
        records
        if all_cells
        else [r for r in records if f"{r.method}-{r.benchmark}-s{r.seed}-{r.config_hash}" in stems]
        or records
    )
    seen: dict[tuple[str, str, int], str] = {}
    for r in chosen:
        other = seen.setdefault((r.method, r.benchmark, r.seed), r.config_hash)
        if other != r.config_hash:
            raise UserError(
                f"{store_path} holds two configs of {r.method} seed {r.seed} ({other}, {r.config_hash}); "
                "drop --all, or report them from separate --out folders"
            )
    if not chosen:
        raise UserError(f"{store_path} holds no finished cell yet")
    differences = None
    if baseline is not None:  # --baseline: method - baseline with bootstrap intervals
        from uqbench.app.outputs import load_arrays
        from uqbench.evaluation.intervals import baseline_report

        cells = {(r.method, r.seed): load_arrays(out_dir, r) for r in chosen}
        differences = baseline_report(cells, baseline)
    print(render(out_dir, chosen, config.get("task", "classification")))
    if differences is not None:
        atomic_write_text(out_dir / "differences.md", differences + "\n")
        print("\n" + differences)


def evaluate_checkpoint(args: argparse.Namespace) -> None:
    """Load a cell's checkpoint and score it on a benchmark (default: its own) without retraining."""
    from uqbench.app.outputs import long_table
    from uqbench.app.runner import build_sampler
    from uqbench.app.store import CellRecord
    from uqbench.evaluation.harness import evaluate
    from uqbench.evaluation.tables import to_markdown

    path = Path(args.checkpoint)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; look in <out>/checkpoints/")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        spec_dict, state = saved["spec"], saved["state"]
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise UserError(
            f"{path} is not a uqbench checkpoint ({type(exc).__name__}); pass a file from <out>/checkpoints/"
        ) from None
    benchmark = args.benchmark or spec_dict["benchmark"]
    spec = CellSpec(
        method=spec_dict["method"],
        benchmark=benchmark,
        seed=args.seed,
        config=spec_dict["config"],
        n_samples=args.samples or spec_dict["n_samples"],
        data_root=args.data_root,
        extra_ood=_parse_ood(args.ood),
        device=resolve_device(args.device),
        memory_budget=args.memory_budget_mb * 2**20,
    )
    if spec.n_samples < 1:
        raise UserError(f"--samples {spec.n_samples}: the number of sampled networks must be >= 1")
    data = cached_benchmark(spec.benchmark, spec.data_root, spec.extra_ood)
    sampler = build_sampler(spec, data)
    try:
        sampler.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise UserError(
            f"checkpoint was trained on {spec_dict['benchmark']}, whose network does not fit "
            f"{benchmark} ({type(exc).__name__}); evaluate on a benchmark with the same target"
        ) from None
    result = evaluate(
        sampler, data, n_samples=spec.n_samples, seed=spec.seed, memory_budget=spec.memory_budget
    )
    record = CellRecord(
        spec.method,
        benchmark,
        spec.seed,
        spec.config_hash,
        result.metrics,
        spec.config,
        str(path),
        None,
        [],
    )
    print(to_markdown(long_table([record])))
    print(json.dumps(result.metrics, indent=2, sort_keys=True))
