"""``compare`` / ``report`` / ``evaluate``: plan cells, run them, write the results folder.

Everything a caller can get wrong is checked before the first cell trains and before
anything in the output folder changes: methods, benchmark and its data files, samples
(and the memory they need), seeds, settings and presets (every cell's config is built and
its sampler constructed), OOD sets, the output folder, its store and its config.json.
Then the folder is locked, and each finished cell is written at once (arrays,
checkpoint, then its store row). A re-run skips the cells the store already holds,
unless the data a cell read changed or its files are gone (it says which). A cell that
fails is recorded as failed with its reason; the other cells still run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from uqbench.app.checkpoints import load_checkpoint
from uqbench.app.datafiles import FileHashes, data_files_of, why_changed
from uqbench.app.executors import CellFailure
from uqbench.app.lock import OutputLock
from uqbench.app.options import config_as_dict, now_iso
from uqbench.app.outputs import (
    CONFIG_NAME,
    FAILURES_NAME,
    STORE_NAME,
    append_failure_log,
    atomic_write_text,
    check_out_dir,
    load_arrays,
    long_table,
    prepare_out_dir,
    read_config,
    render,
    save_outcome,
    write_config,
)
from uqbench.app.progress import CellProgress
from uqbench.app.requests import (
    CompareRequest,
    CompareResult,
    EvaluateRequest,
    EvaluateResult,
    FailedCell,
    RequestError,
)
from uqbench.app.runner import CellOutcome, CellSpec, build_sampler, cached_benchmark
from uqbench.app.store import CellRecord, ResultsStore
from uqbench.data.benchmark import BenchmarkData
from uqbench.environment import machine, package_versions, resolve_device
from uqbench.errors import UserError
from uqbench.registry import discover, load_method

#: Seeds are 32-bit: numpy's and torch's generators would map s and s + 2**32 alike.
SEED_LIMIT = 2**32
MIN_MEMORY_BUDGET_MB = 16


# --- checking a request -------------------------------------------------------------------
def _method_list(methods: str | Sequence[str]) -> list[str]:
    names = methods.split(",") if isinstance(methods, str) else list(methods)
    if not all(isinstance(m, str) for m in names):
        raise RequestError("methods", methods, "expected method names (strings)")
    names = [m.strip() for m in names if m.strip()]
    if not names:
        raise RequestError(
            "methods",
            methods,
            "name at least one method, e.g. hypergan,mcdropout (see `uqbench list`)",
        )
    if len(set(names)) != len(names):
        raise RequestError("methods", ",".join(names), "a method is listed twice")
    return names


def check_count(name: str, value: Any, *, low: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise RequestError(name, value, f"{what} must be a whole number >= {low}")
    return value


def check_seeds(seeds: Sequence[int]) -> list[int]:
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise RequestError("seeds", seeds, "give at least one seed, e.g. 0")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < SEED_LIMIT:
            raise RequestError(
                "seeds", s, f"a seed must be a whole number in [0, 2**32 = {SEED_LIMIT})"
            )
    if len(set(seeds)) != len(seeds):
        raise RequestError(
            "seeds",
            ",".join(map(str, seeds)),
            "a seed is listed twice (it would train the same cell twice)",
        )
    return seeds


def _check_ood(ood: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    from uqbench.data.ood import parse_ood_option

    return tuple(parse_ood_option(f"{name}={path}") for name, path in dict(ood).items())


def _check_ood_limit(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise RequestError("ood_limit", value, "give a whole number of OOD images >= 1")
    return value


def _check_timeout(value: float | None) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (math.isfinite(value) and value > 0)
    ):
        raise RequestError(
            "cell_timeout_s", value, "a cell's time limit must be a number of seconds > 0"
        )
    return float(value)


def _check_benchmark(name: str) -> None:
    from uqbench.data.registry import BENCHMARKS

    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r}; known: {', '.join(sorted(BENCHMARKS))}")


def _presets_file(presets: str | Path | None, benchmark: str) -> Path | None:
    """The presets file a compare applies: the given one, the benchmark's built-in tuned
    presets when none is given, or none for ``--presets none``."""
    from uqbench.app.presets import NO_PRESETS, built_in_presets

    if presets is None:
        return built_in_presets(benchmark)
    return None if str(presets) == NO_PRESETS else Path(presets)


def _presets_overrides(path: Path | None, benchmark: str) -> dict[str, dict[str, Any]]:
    """Each method's tuned settings from a presets file (empty without one), checked
    against every registered method's config fields."""
    if path is None:
        return {}
    from uqbench.app.presets import check_presets, read_presets

    presets = read_presets(path)
    known = {
        name: {f.name for f in dataclasses.fields(info.cls.Config)}
        for name, info in discover().items()
        if info.cls is not None
    }
    check_presets(presets, benchmark, known, path)
    return {m: presets.config_of(m) for m in presets.methods}


def _describe_presets(path: Path | None, given: str | Path | None) -> str | None:
    """How config.json names the presets applied: the file given, or the built-in one as
    ``built-in:<file name>`` with its SHA-256 prefix (the packaged file can change with
    the installed version); None when none was applied."""
    if path is None:
        return None
    if given is not None:
        return str(given)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return f"built-in:{path.name} (sha256 {digest})"


def _available_memory_bytes() -> int | None:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_samples_memory(n: int, data: BenchmarkData, device: str) -> None:
    """Refuse ``n`` sampled networks whose weights and predictions cannot fit in memory.

    Estimate: ``n`` weight sets (float32, drawn and copied to the device) plus, for every
    test and OOD point, ``n`` per-network outputs kept as float32 log-probabilities and
    float64 probabilities (what the harness holds to score them).
    """
    params = sum(p.numel() for p in data.make_target().parameters())
    points = len(data.test) + sum(len(x) for x in data.ood.values())
    outputs = data.task.num_classes if data.task.is_classification else 2
    needed = n * (8 * params + 12 * points * outputs)
    available = _available_memory_bytes()
    if available is not None and needed > available:
        raise RequestError(
            "samples",
            n,
            f"{n} sampled networks need about {needed / 2**30:.1f} GiB for their weights and "
            f"predictions, but {available / 2**30:.1f} GiB is available; use fewer",
        )
    if device.startswith("cuda") and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        if n * 4 * params > free:
            raise RequestError(
                "samples",
                n,
                f"{n} weight sets need {n * 4 * params / 2**30:.1f} GiB on {device}, "
                f"{free / 2**30:.1f} GiB is free; use fewer",
            )


class _Plan:
    """A checked compare: its cells, configs, loaded data and output folder."""

    def __init__(self, request: CompareRequest) -> None:
        r = request
        self.methods = _method_list(r.methods)
        self.samples = check_count(
            "samples", r.samples, low=1, what="the number of sampled networks"
        )
        self.memory_budget_mb = check_count(
            "memory_budget_mb",
            r.memory_budget_mb,
            low=MIN_MEMORY_BUDGET_MB,
            what="the memory budget (MiB)",
        )
        self.seeds = check_seeds(r.seeds)
        self.timeout = _check_timeout(r.cell_timeout_s)
        if r.executor not in ("local", "ray"):
            raise RequestError("executor", r.executor, "use 'local' or 'ray'")
        # Cells at once: local default 1 (this process); Ray default one per cluster CPU.
        self.jobs = (
            None
            if r.jobs is None and r.executor == "ray"
            else check_count("jobs", 1 if r.jobs is None else r.jobs, low=1, what="cells at once")
        )
        if r.executor == "ray":
            from uqbench.app.executors import check_ray

            check_ray(r.ray_address)
        sets = {str(m): dict(v) for m, v in dict(r.sets).items()}
        for method in sets:
            if method not in self.methods:
                raise RequestError(
                    "sets", method, f"{method!r} is not among the methods {','.join(self.methods)}"
                )
        self.ood = _check_ood(r.ood)
        self.ood_limit = _check_ood_limit(r.ood_limit)
        _check_benchmark(r.benchmark)
        self.benchmark = r.benchmark
        presets_file = _presets_file(r.presets, r.benchmark)
        tuned = _presets_overrides(presets_file, r.benchmark)
        self.presets = _describe_presets(presets_file, r.presets)
        self.classes = {m: load_method(m) for m in self.methods}
        from uqbench.data.registry import presets_name

        self.configs = {
            m: config_as_dict(
                self.classes[m].make_config(
                    {**tuned.get(m, {}), **sets.get(m, {})}, benchmark=presets_name(r.benchmark)
                )
            )
            for m in self.methods
        }
        self.device = resolve_device(r.device)
        self.out_dir = Path(r.out or f"runs/{r.benchmark}")
        check_out_dir(self.out_dir)
        self.data_root = None if r.data_root is None else str(r.data_root)
        cached_benchmark.cache_clear()  # files may have changed since an earlier call
        self.data = cached_benchmark(r.benchmark, self.data_root, self.ood, self.ood_limit)
        self.specs = [
            CellSpec(
                method=m,
                benchmark=r.benchmark,
                seed=s,
                config=self.configs[m],
                n_samples=self.samples,
                data_root=self.data_root,
                extra_ood=self.ood,
                device=self.device,
                memory_budget=self.memory_budget_mb * 2**20,
                ood_limit=self.ood_limit,
            )
            for m in self.methods
            for s in self.seeds
        ]
        for m in self.methods:  # the method's own checks of its config, before any fit
            first = next(s for s in self.specs if s.method == m)
            build_sampler(dataclasses.replace(first, device="cpu"), self.data)
        check_samples_memory(self.samples, self.data, self.device)
        self.executor = r.executor
        self.ray_address = r.ray_address
        self.command = r.command or f"python: uqbench.compare({r!r})"
        if (self.out_dir / STORE_NAME).exists():
            ResultsStore(self.out_dir / STORE_NAME, readonly=True).close()
        self.previous = read_config(self.out_dir) if (self.out_dir / CONFIG_NAME).exists() else {}


# --- provenance ---------------------------------------------------------------------------
def _provenance(plan: _Plan, data_files: dict[str, str], started: str) -> dict:
    """config.json of this compare, accumulated onto the folder's earlier invocations."""
    prev = plan.previous
    invocations = list(prev.get("invocations", []))
    if not invocations and "command" in prev:  # a folder written before invocations were kept
        invocations.append({k: prev.get(k) for k in ("command", "started", "cells")})
    invocations.append(
        {
            "command": plan.command,
            "started": started,
            "finished": None,
            "cells": [s.file_stem for s in plan.specs],
            "failed": [],
        }
    )
    data = plan.data
    return {
        "command": plan.command,
        "started": started,
        "benchmark": plan.benchmark,
        "task": data.task.kind,
        "methods": plan.configs,
        "seeds": sorted(plan.seeds),
        "samples": plan.samples,
        "executor": plan.executor,
        "jobs": plan.jobs,
        "device": plan.device,
        "presets": plan.presets,
        "data_sources": data.sources,
        "split_info": dict(getattr(data, "split_info", {}) or {}),
        "data_files": data_files,
        "ood": [list(p) for p in plan.ood],
        "ood_limit": plan.ood_limit,
        "cells": [s.file_stem for s in plan.specs],
        "cell_provenance": dict(prev.get("cell_provenance", {})),
        "invocations": invocations,
        "versions": package_versions(),
        "machine": machine(),
    }


def _cell_provenance(
    spec: CellSpec, plan: _Plan, data_files: dict[str, str], status: str, error: str | None
) -> dict:
    return {
        "method": spec.method,
        "benchmark": spec.benchmark,
        "seed": spec.seed,
        "config": spec.config,
        "config_hash": spec.config_hash,
        "n_samples": spec.n_samples,
        "ood": [list(p) for p in spec.extra_ood],
        "ood_limit": spec.ood_limit,
        "split_info": dict(getattr(plan.data, "split_info", {}) or {}),
        "data_files": data_files,
        "command": plan.command,
        "status": status,
        "error": error,
        "at": now_iso(),
    }


# --- compare ------------------------------------------------------------------------------
def _why_recompute(
    store: ResultsStore, out_dir: Path, spec: CellSpec, data_files: dict[str, str]
) -> tuple[bool, str | None]:
    """``(run, reason)``: whether ``spec`` must run, and why a stored cell is not reused."""
    row = store.get(spec.method, spec.benchmark, spec.seed, spec.config_hash)
    if row is None:
        return True, None
    if row.status != "finished":
        return True, f"it failed before ({row.error})"
    if row.data_files is not None:
        changed = why_changed(row.data_files, data_files)
        if changed:
            return True, changed
    if row.arrays:
        try:
            load_arrays(out_dir, row)
        except UserError:
            return True, f"its {row.arrays} is missing or unreadable"
    if row.checkpoint and not (out_dir / row.checkpoint).is_file():
        return True, f"its {row.checkpoint} is missing"
    return False, None


def compare(request: CompareRequest) -> CompareResult:
    """Train and evaluate every (method, seed) cell, write the results folder, and return
    the table of every finished cell of the request with the cells that failed."""
    plan = _Plan(request)
    out_dir = prepare_out_dir(plan.out_dir)
    with OutputLock(out_dir, plan.command):
        if (out_dir / CONFIG_NAME).exists():  # another command may have finished meanwhile
            plan.previous = read_config(out_dir)
        hashes = FileHashes(out_dir)
        data_files = hashes.of(data_files_of(plan.data, [p for _, p in plan.ood]))
        hashes.save()
        torch.set_num_threads(torch.get_num_threads())
        config = _provenance(plan, data_files, now_iso())
        write_config(out_dir, config)
        failed: list[FailedCell] = []
        ran: list[str] = []
        skipped: list[str] = []
        with ResultsStore(out_dir / STORE_NAME) as store:
            todo = []
            for spec in plan.specs:
                run, reason = _why_recompute(store, out_dir, spec, data_files)
                if not run:
                    print(f"skipping {spec.label}: already finished in {out_dir / STORE_NAME}")
                    skipped.append(spec.file_stem)
                    continue
                if reason:
                    print(f"recomputing {spec.label}: {reason}")
                todo.append(spec)
            with CellProgress(len(todo)) as progress:

                def on_result(outcome: CellOutcome) -> None:
                    save_outcome(out_dir, outcome, store, data_files)
                    config["cell_provenance"][outcome.spec.file_stem] = _cell_provenance(
                        outcome.spec, plan, data_files, "finished", None
                    )
                    write_config(out_dir, config)
                    ran.append(outcome.spec.file_stem)
                    progress.cell_done(outcome.spec, outcome.metrics)

                def on_failure(failure: CellFailure) -> None:
                    spec = failure.spec
                    store.record(
                        CellRecord(
                            spec.method,
                            spec.benchmark,
                            spec.seed,
                            spec.config_hash,
                            {},
                            spec.config,
                            None,
                            None,
                            [],
                            data_files=data_files,
                            status="failed",
                            error=failure.reason,
                        )
                    )
                    append_failure_log(
                        out_dir,
                        f"{spec.label} ({spec.file_stem}) {now_iso()}: {failure.reason}",
                        failure.traceback or failure.reason,
                    )
                    config["cell_provenance"][spec.file_stem] = _cell_provenance(
                        spec, plan, data_files, "failed", failure.reason
                    )
                    config["invocations"][-1]["failed"].append(spec.file_stem)
                    write_config(out_dir, config)
                    failed.append(
                        FailedCell(spec.method, spec.benchmark, spec.seed, failure.reason)
                    )
                    progress.cell_failed(spec, failure.reason)

                if plan.executor == "local" and plan.jobs == 1:
                    from uqbench.app.executors import run_local

                    run_local(
                        todo,
                        on_result,
                        progress.for_cell,
                        on_failure=on_failure,
                        timeout=plan.timeout,
                    )
                elif todo:
                    from uqbench.app.executors import run_pooled
                    from uqbench.app.pool import make_pool

                    pool = make_pool(
                        plan.executor,
                        plan.jobs,
                        ray_address=plan.ray_address,
                        gpu=plan.device.startswith("cuda"),
                    )
                    run_pooled(todo, on_result, pool, on_failure=on_failure, timeout=plan.timeout)
            records = _records_for(store, plan.specs)
        config["invocations"][-1]["finished"] = now_iso()
        write_config(out_dir, config)
        markdown = render(out_dir, records, plan.data.task.kind) if records else ""
    return CompareResult(
        table=long_table(records),
        markdown=markdown,
        out=out_dir,
        failed=failed,
        ran=ran,
        skipped=skipped,
    )


def _records_for(store: ResultsStore, specs: list[CellSpec]) -> list[CellRecord]:
    wanted = {(s.method, s.benchmark, s.seed, s.config_hash) for s in specs}
    return [r for r in store.records() if r.key in wanted]


def report(out_dir: Path, *, all_cells: bool = False, baseline: str | None = None) -> str:
    """Re-render table.md, table.csv and figures from a results folder's store; returns
    the Markdown table (followed by the differences when ``baseline`` is given).

    By default the cells of the last ``compare`` into ``out_dir`` (its config.json);
    ``all_cells``: every finished cell, e.g. after commands with different seeds or methods
    (refused when the store holds two configs of one method and seed: they would be pooled).
    ``baseline``: also write differences.md, every method minus ``baseline`` with paired
    bootstrap intervals (:mod:`uqbench.evaluation.intervals`).
    """
    out_dir = Path(out_dir)
    config = read_config(out_dir)
    store_path = out_dir / STORE_NAME
    if not store_path.exists():
        raise UserError(f"{out_dir} holds no {STORE_NAME}; run `uqbench compare` into it first")
    with ResultsStore(store_path, readonly=True) as store:
        records = store.records()
    stems = set(config.get("cells", []))
    chosen = records if all_cells else [r for r in records if r.stem in stems] or records
    seen: dict[tuple[str, str, int], str] = {}
    for r in chosen:
        other = seen.setdefault((r.method, r.benchmark, r.seed), r.config_hash)
        if other != r.config_hash:
            raise UserError(
                f"{store_path} holds two configs of {r.method} seed {r.seed} "
                f"({other}, {r.config_hash}); drop --all, or report them from separate folders"
            )
    if not chosen:
        raise UserError(f"{store_path} holds no finished cell yet")
    differences = None
    if baseline is not None:  # method - baseline with paired bootstrap intervals
        from uqbench.evaluation.intervals import baseline_report

        cells = {(r.method, r.seed): load_arrays(out_dir, r) for r in chosen}
        differences = baseline_report(cells, baseline)
    with OutputLock(out_dir, "uqbench report"):
        markdown = render(out_dir, chosen, config.get("task", "classification"))
        if differences is None:
            return markdown
        atomic_write_text(out_dir / "differences.md", differences + "\n")
    return f"{markdown}\n\n{differences}"


# --- evaluate -----------------------------------------------------------------------------
_STATE_ERRORS = (RuntimeError, KeyError, ValueError, TypeError, IndexError, AttributeError)


def evaluate(request: EvaluateRequest) -> EvaluateResult:
    """Load a cell's checkpoint and score it on a benchmark (default: its own) without
    retraining."""
    from uqbench.evaluation.harness import evaluate as score
    from uqbench.evaluation.tables import to_markdown

    r = request
    if r.samples is not None:
        check_count("samples", r.samples, low=1, what="the number of sampled networks")
    budget = check_count(
        "memory_budget_mb",
        r.memory_budget_mb,
        low=MIN_MEMORY_BUDGET_MB,
        what="the memory budget (MiB)",
    )
    (seed,) = check_seeds([r.seed])
    ood = _check_ood(r.ood)
    ood_limit = _check_ood_limit(r.ood_limit)
    path = Path(r.checkpoint)
    spec_dict, state = load_checkpoint(path)
    benchmark = r.benchmark or spec_dict["benchmark"]
    _check_benchmark(benchmark)
    cls = load_method(spec_dict["method"])
    try:
        cls.Config(**spec_dict["config"])
    except TypeError as exc:
        raise UserError(
            f"{path}: its config does not fit {cls.name}'s settings ({exc}); it was written by "
            "another version of the method"
        ) from None
    spec = CellSpec(
        method=spec_dict["method"],
        benchmark=benchmark,
        seed=seed,
        config=spec_dict["config"],
        n_samples=r.samples if r.samples is not None else int(spec_dict["n_samples"]),
        data_root=None if r.data_root is None else str(r.data_root),
        extra_ood=ood,
        device=resolve_device(r.device),
        memory_budget=budget * 2**20,
        ood_limit=ood_limit if ood_limit is not None else spec_dict.get("ood_limit"),
    )
    cached_benchmark.cache_clear()
    data = cached_benchmark(spec.benchmark, spec.data_root, spec.extra_ood, spec.ood_limit)
    check_samples_memory(spec.n_samples, data, spec.device)
    sampler = build_sampler(spec, data)
    try:
        sampler.load_state_dict(state)
    except _STATE_ERRORS as exc:
        if benchmark != spec_dict["benchmark"]:
            raise UserError(
                f"checkpoint was trained on {spec_dict['benchmark']}, whose network does not fit "
                f"{benchmark} ({type(exc).__name__}); evaluate on a benchmark with the same target"
            ) from None
        first = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UserError(
            f"{path}: its state does not fit {spec.method} ({type(exc).__name__}: {first}); "
            "the file is damaged or from another version"
        ) from None
    result = score(
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
    table = long_table([record])
    return EvaluateResult(metrics=dict(result.metrics), table=table, markdown=to_markdown(table))


__all__ = ["FAILURES_NAME", "compare", "evaluate", "report"]
