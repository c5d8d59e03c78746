"""``uqbench tune``: an equal-budget hyperparameter search on a benchmark's validation split.

One Optuna study per (method, benchmark, objective), stored in ``<out>/study.sqlite``:

- the search space is the method's ``Config`` (:func:`uqbench.configs.search_space`);
  a knob fixed with ``--set`` is not searched;
- a trial's config is: the method's defaults, its built-in preset for the benchmark,
  ``--set``, then the values the TPE sampler suggested; it is fitted on the training
  split with ``val=`` the validation split and scored on the validation split only, by
  the shared harness (:mod:`uqbench.app.tune_trial`); the test set and the OOD sets are
  never read;
- every trial of a study uses the same fit seed and evaluation seed, so trials differ by
  their config alone;
- the budget is ``trials`` finished trials (complete or pruned) and a cap on each fit's
  time; a trial stopped by the cap is pruned, with the reason recorded;
- pruning (Optuna's ``MedianPruner``) acts on the validation numbers a method reports
  through ``progress(step, total, **metrics)`` under the key ``val_<objective>``
  (``val_nll``, ``val_acc``, ``val_ece``, ``val_brier``; ``val_rmse`` for regression); a
  method that reports none is never pruned;
- a trial whose config the method refuses (its ``check_together``), whose fit diverged
  or whose validation score is not finite fails, with the reason; failed trials do not
  count, and the study stops with an error after ``max(trials, 3)`` failures;
- the study resumes: a trial left running by a tune process that died (``kill -9``) is
  marked failed, does not count, and the study goes on until ``trials`` trials finished;
- the driver alone asks and tells the study; workers (processes or Ray tasks) only fit
  and score (:mod:`uqbench.app.pool`, the pools ``compare`` runs its cells on).

Outputs in ``<out>``: ``study.sqlite``, ``trials.csv`` and ``trials.md`` (one row per trial)
and the presets file (default ``<out>/presets/<benchmark>.json``) whose entry for the
method holds the best trial's tuned knobs, how they were found and the budget, which
``uqbench compare --presets FILE`` applies.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from uqbench.app.lock import OutputLock
from uqbench.app.options import parse_sets
from uqbench.app.pool import Pool, make_pool
from uqbench.app.presets import read_presets, write_method_entry
from uqbench.app.tune_trial import (
    PruneSettings,
    TrialOutcome,
    TrialSpec,
    run_shared_trial,
    validation_view,
)
from uqbench.configs import Choice, IntRange, LogUniform, Space, Uniform, search_space
from uqbench.data.benchmark import BenchmarkData
from uqbench.errors import UserError
from uqbench.functional import DEFAULT_MEMORY_BUDGET
from uqbench.sampler import WeightSampler

STUDY_FILE = "study.sqlite"
TRIALS_CSV = "trials.csv"
TRIALS_MD = "trials.md"

#: ``--objective`` -> (harness metric, direction), per task. Validation metrics only.
OBJECTIVES: dict[str, dict[str, tuple[str, Literal["minimize", "maximize"]]]] = {
    "classification": {
        "nll": ("nll", "minimize"),
        "acc": ("acc", "maximize"),
        "ece": ("ece", "minimize"),
        "brier": ("brier", "minimize"),
    },
    "regression": {"nll": ("gnll", "minimize"), "rmse": ("rmse", "minimize")},
}


@dataclass(frozen=True)
class TuneRequest:
    """One ``uqbench tune`` invocation, as a library call.

    ``method``: a registered name or a :class:`WeightSampler` subclass (e.g. one's own,
    not registered); ``benchmark``: a registered name or a loaded :class:`BenchmarkData`
    with a validation split (``val``); its ``test`` and ``ood`` are never read.
    ``overrides``: knob -> value as ``--set`` gives it (a string, cast to the knob's type)
    or already typed; these knobs are fixed and not searched. ``max_fit_s``: cap on each
    trial's fit time (None: no cap). ``jobs``: trials at once. ``pruner``: ``median``
    (Optuna's MedianPruner on the ``val_<objective>`` numbers a method reports through
    ``progress``) or ``none``; it never acts on a report before ``prune_warmup_steps``
    (default 1: a report at step 0 scores the untrained network, which says nothing
    about the config). ``cores``: threads shared by the concurrent local trials
    (default: the cores this process may use). ``command``: recorded in the presets file.
    """

    method: str | type[WeightSampler]
    benchmark: str | BenchmarkData
    trials: int
    objective: str = "nll"
    out: str | os.PathLike[str] | None = None
    executor: Literal["local", "ray"] = "local"
    jobs: int = 1
    max_fit_s: float | None = None
    seed: int = 0
    overrides: Mapping[str, Any] = field(default_factory=dict)
    presets_file: str | os.PathLike[str] | None = None
    samples: int = 100
    device: str = "auto"
    data_root: str | None = None
    ray_address: str | None = None
    cores: int | None = None
    pruner: Literal["median", "none"] = "median"
    prune_startup_trials: int = 5
    prune_warmup_steps: int = 1
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    command: str | None = None
    verbose: bool = True


@dataclass
class TuneResult:
    """A finished study: every trial, the best one, and where the files are."""

    trials: pd.DataFrame
    best_params: dict[str, Any]
    best_value: float
    best_trial: int
    objective: str
    direction: str
    out_dir: Path
    study_path: Path
    presets_path: Path
    threads_per_trial: int | None = None


@dataclass(frozen=True)
class _Plan:
    """A checked request: everything resolved before anything is written."""

    request: TuneRequest
    method: str
    benchmark: str
    cls: type[WeightSampler]
    base_config: dict[str, Any]
    space: dict[str, Space]
    metric: str
    direction: Literal["minimize", "maximize"]
    data: BenchmarkData
    device: str
    out_dir: Path
    presets_path: Path
    overrides: dict[str, Any]

    @property
    def study_name(self) -> str:
        return f"{self.method}-{self.benchmark}-{self.request.objective}"

    @property
    def settings(self) -> dict[str, Any]:
        """What a resumed study must share with the one on disk (else trials would mix)."""
        r = self.request
        return {
            "method": self.method,
            "benchmark": self.benchmark,
            "objective": r.objective,
            "set": {k: _jsonable(v) for k, v in sorted(self.overrides.items())},
            "max_fit_s": r.max_fit_s,
            "seed": r.seed,
            "samples": r.samples,
            "space": {k: _describe(v) for k, v in self.space.items()},
        }


def plan(request: TuneRequest) -> _Plan:
    """Check every input and load the benchmark; raise a one-line UserError on bad input.

    Nothing is written here, so a refused command leaves ``--out`` untouched.
    """
    from uqbench import registry
    from uqbench.environment import resolve_device

    r = request
    if isinstance(r.method, type) and not issubclass(r.method, WeightSampler):
        raise UserError(f"{r.method.__name__} is not a WeightSampler subclass; pass a method")
    cls = r.method if isinstance(r.method, type) else registry.load_method(r.method)
    method = cls.name
    benchmark = r.benchmark.name if isinstance(r.benchmark, BenchmarkData) else r.benchmark
    if isinstance(r.trials, bool) or not isinstance(r.trials, int) or r.trials < 1:
        raise UserError(f"--trials {r.trials}: the number of trials must be an integer >= 1")
    if isinstance(r.jobs, bool) or not isinstance(r.jobs, int) or r.jobs < 1:
        raise UserError(f"--jobs {r.jobs}: the number of trials at once must be >= 1")
    if r.max_fit_s is not None and not (math.isfinite(r.max_fit_s) and r.max_fit_s > 0):
        raise UserError(f"--max-fit-s {r.max_fit_s}: the fit-time cap must be a number > 0")
    if r.cores is not None and r.cores < 1:
        raise UserError(f"cores {r.cores}: the thread budget must be >= 1")
    if r.prune_warmup_steps < 0:
        raise UserError(f"--prune-warmup-steps {r.prune_warmup_steps}: give a step >= 0")
    if r.samples < 1:
        raise UserError(f"--samples {r.samples}: the number of sampled networks must be >= 1")
    if r.executor not in ("local", "ray"):
        raise UserError(f"--executor {r.executor}: use local or ray")
    if r.pruner not in ("median", "none"):
        raise UserError(f"pruner {r.pruner!r}: use 'median' or 'none'")
    known_objectives = sorted({o for per_task in OBJECTIVES.values() for o in per_task})
    if r.objective not in known_objectives:
        raise UserError(
            f"--objective {r.objective} is not a validation metric; "
            f"use one of {', '.join(known_objectives)}"
        )
    space = _search_space(cls)
    if not space:
        raise UserError(
            f"method {method} declares no search space (no setting(..., search=...) in its "
            "Config); add ranges to its Config to tune it"
        )
    base = _base_config(cls, benchmark, r.overrides)
    overrides = {k: getattr(base, k) for k in r.overrides}
    space = {k: v for k, v in space.items() if k not in overrides}
    if not space:
        raise UserError(
            f"every searched knob of {method} is fixed by --set; nothing is left to tune"
        )
    if isinstance(r.benchmark, str):
        from uqbench.data.registry import BENCHMARKS

        if benchmark not in BENCHMARKS:
            raise UserError(
                f"unknown benchmark {benchmark!r}; known: {', '.join(sorted(BENCHMARKS))}"
            )
    device = resolve_device(r.device)
    out_dir = Path(r.out if r.out is not None else f"runs/tune-{benchmark}-{method}")
    presets_path = (
        Path(r.presets_file)
        if r.presets_file is not None
        else out_dir / "presets" / f"{benchmark}.json"
    )
    if presets_path.exists():  # refuse now, not after the trials ran
        existing = read_presets(presets_path)
        if existing.benchmark != benchmark:
            raise UserError(
                f"presets file {presets_path} holds {existing.benchmark}'s presets, not "
                f"{benchmark}'s; pass another --presets-file"
            )
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; choose a folder")
    if isinstance(r.benchmark, BenchmarkData):
        data = r.benchmark
    else:
        from uqbench.data.registry import load_benchmark

        data = load_benchmark(benchmark, data_root=r.data_root)
    if data.val is None:
        raise UserError(
            f"benchmark {benchmark} has no validation split; tune on a benchmark with one"
        )
    per_task = OBJECTIVES[data.task.kind]
    if r.objective not in per_task:
        raise UserError(
            f"--objective {r.objective} is not a validation metric of the {data.task.kind} "
            f"benchmark {benchmark}; use one of {', '.join(per_task)}"
        )
    metric, direction = per_task[r.objective]
    return _Plan(
        request=r,
        method=method,
        benchmark=benchmark,
        cls=cls,
        base_config=_config_dict(base),
        space=space,
        metric=metric,
        direction=direction,
        data=data,
        device=device,
        out_dir=out_dir,
        presets_path=presets_path,
        overrides=overrides,
    )


def _base_config(cls: type[WeightSampler], benchmark: str, overrides: Mapping[str, Any]) -> Any:
    """Defaults, the built-in preset for the benchmark, then the fixed knobs: strings are
    cast like ``--set`` values, typed values are used as they are; an unknown knob is a
    UserError naming the known ones."""
    from uqbench.data.registry import presets_name

    strings = {k: v for k, v in overrides.items() if isinstance(v, str)}
    typed = {k: v for k, v in overrides.items() if not isinstance(v, str)}
    base = cls.make_config(strings, benchmark=presets_name(benchmark))
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(typed) - known)
    if unknown:
        raise UserError(
            f"{cls.name} has no setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}"
        )
    return dataclasses.replace(base, **typed) if typed else base


def tune(request: TuneRequest) -> TuneResult:
    """Run (or resume) the study until ``request.trials`` trials finished; write the trials
    table and the method's presets entry; return them."""
    p = plan(request)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        p.out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"--out {p.out_dir}: cannot write there ({exc.strerror}); choose a writable folder"
        ) from None
    with OutputLock(p.out_dir, "uqbench tune"):
        study_path = p.out_dir / STUDY_FILE
        storage = optuna.storages.RDBStorage(f"sqlite:///{study_path.resolve()}")
        previous = _existing_trials(storage, p.study_name)
        study = optuna.create_study(
            storage=storage,
            study_name=p.study_name,
            direction=p.direction,
            load_if_exists=True,
            # Seeded, and re-seeded by the history's length: a resumed study does not
            # replay the suggestions it already ran.
            sampler=optuna.samplers.TPESampler(
                seed=_sampler_seed(request.seed, previous), constant_liar=True
            ),
        )
        _check_settings(study, p, study_path)
        _fail_abandoned(study, p.request.verbose)
        view = validation_view(p.data)
        executor = make_pool(
            p.request.executor,
            p.request.jobs,
            shared=view,
            cores=p.request.cores,
            ray_address=p.request.ray_address,
            gpu=p.device.startswith("cuda"),
        )
        threads = executor.threads
        try:
            _run(study, p, executor)
        finally:
            executor.close()
            frame = trials_frame(study)  # also when stopped: the table says how far it got
            _write_tables(p.out_dir, frame)
        return _finish(study, p, frame, study_path, threads)


def _run(study: Any, p: _Plan, executor: Pool) -> None:
    """Keep ``executor.capacity`` trials in flight until ``trials`` trials finished."""
    from optuna.trial import TrialState

    r = p.request
    running: dict[int, Any] = {}
    failures = 0
    try:
        while True:
            finished = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
            while finished + len(running) < r.trials and len(running) < executor.capacity:
                trial = study.ask()
                params = {k: _suggest(trial, k, space) for k, space in p.space.items()}
                trial.set_user_attr("pid", os.getpid())
                try:
                    config = _trial_config(p, params)
                except UserError as exc:  # a combination the method's Config refuses
                    _tell_failed(study, trial, f"invalid config: {exc}", r.verbose)
                    failures = _count_failure(failures, r.trials, str(exc))
                    continue
                executor.submit(
                    trial.number,
                    run_shared_trial,
                    TrialSpec(
                        number=trial.number,
                        method_cls=p.cls,
                        config=config,
                        metric=p.metric,
                        seed=r.seed,
                        n_samples=r.samples,
                        device=p.device,
                        max_fit_s=r.max_fit_s,
                        threads=executor.threads,
                        prune=_prune_settings(study, p),
                        memory_budget=r.memory_budget,
                    ),
                )
                running[trial.number] = trial
            if not running:
                return
            number, outcome = executor.next_done()
            trial = running.pop(number)
            if isinstance(outcome, BaseException):
                _tell_failed(study, trial, f"error: {type(outcome).__name__}: {outcome}", False)
                raise outcome
            _tell(study, trial, outcome, r.verbose)
            if outcome.state == "fail":
                failures = _count_failure(failures, r.trials, outcome.reason)
    finally:
        for trial in running.values():  # stopped by an error or Ctrl-C: not left RUNNING
            _tell_failed(study, trial, "stopped: the tune process was interrupted", False)


def _count_failure(failures: int, trials: int, reason: str) -> int:
    failures += 1
    if failures >= max(trials, 3):
        raise UserError(
            f"{failures} trials failed (last: {reason}); narrow the search space or fix the "
            "--set values"
        )
    return failures


def _tell(study: Any, trial: Any, outcome: TrialOutcome, verbose: bool) -> None:
    from optuna.trial import TrialState

    for step, value in sorted(outcome.intermediate.items()):
        trial.report(value, step)
    trial.set_user_attr("fit_s", outcome.fit_s)
    trial.set_user_attr("metrics", outcome.metrics)
    if outcome.reason:
        trial.set_user_attr("reason", outcome.reason)
    if outcome.state == "complete":
        study.tell(trial, outcome.value)
    elif outcome.state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)
    if verbose:
        shown = f"{outcome.value:.4g}" if outcome.value is not None else outcome.reason
        print(
            f"trial {outcome.number}: {outcome.state}, {shown} (fit {outcome.fit_s:.1f} s) "
            f"{json.dumps(trial.params, default=str)}",
            file=sys.stderr,
        )


def _tell_failed(study: Any, trial: Any, reason: str, verbose: bool) -> None:
    from optuna.trial import TrialState

    trial.set_user_attr("reason", reason)
    study.tell(trial, state=TrialState.FAIL)
    if verbose:
        print(f"trial {trial.number}: fail, {reason}", file=sys.stderr)


def _existing_trials(storage: Any, name: str) -> int:
    try:
        return len(storage.get_all_trials(storage.get_study_id_from_name(name), deepcopy=False))
    except KeyError:
        return 0


def _sampler_seed(seed: int, previous: int) -> int:
    return int(np.random.SeedSequence([seed, previous]).generate_state(1)[0])


def _check_settings(study: Any, p: _Plan, path: Path) -> None:
    stored = study.user_attrs.get("settings")
    wanted = json.loads(json.dumps(p.settings))
    if stored is None:
        study.set_user_attr("settings", wanted)
    elif stored != wanted:
        diff = sorted(k for k in wanted if stored.get(k) != wanted[k])
        raise UserError(
            f"{path} holds a study of {p.study_name} with other {', '.join(diff)}; "
            "resume it with the same flags or choose another --out"
        )


def _fail_abandoned(study: Any, verbose: bool) -> None:
    """Mark failed the trials a dead tune process left RUNNING (we hold the lock, so no
    live process is running any)."""
    from optuna.trial import TrialState

    for frozen in study.get_trials(states=(TrialState.RUNNING,)):
        study.tell(frozen.number, state=TrialState.FAIL)
        if verbose:
            pid = frozen.user_attrs.get("pid", "?")
            print(
                f"trial {frozen.number}: fail, left running by a tune process (pid {pid}) "
                "that died",
                file=sys.stderr,
            )


def _prune_settings(study: Any, p: _Plan) -> PruneSettings | None:
    from optuna.trial import TrialState

    r = p.request
    if r.pruner == "none":
        return None
    return PruneSettings(
        direction=p.direction,
        key=f"val_{r.objective}",
        n_startup_trials=r.prune_startup_trials,
        n_warmup_steps=r.prune_warmup_steps,
        finished=tuple(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))),
    )


def _suggest(trial: Any, name: str, space: Space) -> Any:
    if isinstance(space, LogUniform):
        return trial.suggest_float(name, space.low, space.high, log=True)
    if isinstance(space, Uniform):
        return trial.suggest_float(name, space.low, space.high)
    if isinstance(space, IntRange):
        return trial.suggest_int(name, space.low, space.high, log=space.log)
    if isinstance(space, Choice):
        options = list(space.options)
        if all(o is None or isinstance(o, bool | int | float | str) for o in options):
            return trial.suggest_categorical(name, options)
        # Optuna stores only plain values: choose by position, return the option itself.
        index = trial.suggest_categorical(name, [str(i) for i in range(len(options))])
        return options[int(index)]
    raise TypeError(f"unknown search range {space!r} for {name}")


def _search_space(cls: type[WeightSampler]) -> dict[str, Space]:
    try:
        return search_space(cls.Config)
    except TypeError:  # a plugin whose Config is not a dataclass has no search space
        return {}


def _trial_config(p: _Plan, params: dict[str, Any]) -> dict[str, Any]:
    values = dict(params)
    for name, space in p.space.items():
        if isinstance(space, Choice) and not all(
            o is None or isinstance(o, bool | int | float | str) for o in space.options
        ):
            values[name] = space.options[int(params[name])]
    config = dataclasses.replace(p.cls.Config(**p.base_config), **values)
    return _config_dict(config)


def _config_dict(config: Any) -> dict[str, Any]:
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _describe(space: Space) -> dict[str, Any]:
    return {"kind": type(space).__name__, **_jsonable(dataclasses.asdict(space))}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def trials_frame(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, value, fit_s, each tuned knob, validation metrics,
    and why a trial was pruned or failed."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        metrics = t.user_attrs.get("metrics", {})
        row: dict[str, Any] = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value if t.state.name in ("COMPLETE", "PRUNED") else None,
            "fit_s": t.user_attrs.get("fit_s"),
        }
        row.update(t.params)
        row.update({f"val_{k}": v for k, v in metrics.items()})
        abandoned = "left running by a tune process that died" if t.state.name == "FAIL" else ""
        row["reason"] = t.user_attrs.get("reason", abandoned)
        rows.append(row)
    return pd.DataFrame(rows)


def _write_tables(out_dir: Path, frame: pd.DataFrame) -> None:
    from uqbench.app.outputs import atomic_write_text
    from uqbench.evaluation.tables import render_markdown

    atomic_write_text(out_dir / TRIALS_CSV, frame.to_csv(index=False))
    header = list(frame.columns)
    numeric = [pd.api.types.is_numeric_dtype(frame[c]) for c in header]
    rows = [[_cell(v) for v in row] for row in frame.itertuples(index=False)]
    atomic_write_text(out_dir / TRIALS_MD, render_markdown(header, rows, numeric) + "\n")


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _finish(
    study: Any, p: _Plan, frame: pd.DataFrame, study_path: Path, threads: int | None
) -> TuneResult:
    from optuna.trial import TrialState

    r = p.request
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        raise UserError(
            f"no trial of {p.study_name} completed ({len(frame)} trials, see "
            f"{p.out_dir / TRIALS_CSV}); raise --max-fit-s or narrow the search space"
        )
    best = study.best_trial
    states = frame["state"].value_counts().to_dict()
    entry = {
        "config": {
            k: _jsonable(v) for k, v in _trial_config(p, best.params).items() if k in p.space
        },
        "objective": r.objective,
        "metric": f"validation {p.metric}",
        "direction": p.direction,
        "best_value": best.value,
        "best_trial": best.number,
        "set": {k: _jsonable(v) for k, v in sorted(p.overrides.items())},
        "budget": {
            "trials": r.trials,
            "max_fit_s": r.max_fit_s,
            "sampler": "TPE",
            "seed": r.seed,
            "objective": r.objective,
            "jobs": r.jobs,
            "executor": r.executor,
            "threads_per_trial": threads,
            "pruner": "none"
            if r.pruner == "none"
            else f"median(n_startup_trials={r.prune_startup_trials}, "
            f"n_warmup_steps={r.prune_warmup_steps})",
            "samples": r.samples,
        },
        "trials": {s.lower(): int(n) for s, n in sorted(states.items())},
        "validation_size": len(p.data.val) if p.data.val is not None else 0,
        # Size, seed and index hash of the validation split, where the benchmark records them.
        "validation_split": _jsonable(getattr(p.data, "split_info", {}).get("val")),
        # Relative to the presets file, so a committed file does not name this machine.
        "study": os.path.relpath(study_path.resolve(), p.presets_path.resolve().parent),
        "command": r.command or _command_of(p),
    }
    write_method_entry(p.presets_path, p.benchmark, p.method, entry)
    return TuneResult(
        trials=frame,
        best_params=dict(entry["config"]),
        best_value=float(best.value),
        best_trial=best.number,
        objective=r.objective,
        direction=p.direction,
        out_dir=p.out_dir,
        study_path=study_path,
        presets_path=p.presets_path,
        threads_per_trial=threads,
    )


def _command_of(p: _Plan) -> str:
    """The CLI command equivalent to a library call (recorded beside the tuned values)."""
    r = p.request
    parts = [
        f"uqbench tune --method {p.method} --benchmark {p.benchmark} --trials {r.trials}",
        f"--objective {r.objective} --seed {r.seed} --jobs {r.jobs} --executor {r.executor}",
    ]
    if r.max_fit_s is not None:
        parts.append(f"--max-fit-s {r.max_fit_s:g}")
    parts += [f"--set {p.method}.{k}={v}" for k, v in sorted(r.overrides.items())]
    return " ".join(parts)


def tune_command(args: argparse.Namespace, *, command_line: str) -> TuneResult:
    """``uqbench tune``: build the request from the parsed flags, run it, print a summary."""
    overrides = parse_sets(args.set, [args.method])[args.method]
    result = tune(
        TuneRequest(
            method=args.method,
            benchmark=args.benchmark,
            trials=args.trials,
            objective=args.objective,
            out=args.out,
            executor=args.executor,
            jobs=args.jobs,
            max_fit_s=args.max_fit_s,
            seed=args.seed,
            overrides=overrides,
            presets_file=args.presets_file,
            samples=args.samples,
            device=args.device,
            data_root=args.data_root,
            ray_address=args.ray_address,
            pruner=args.pruner,
            prune_warmup_steps=args.prune_warmup_steps,
            command=command_line,
        )
    )
    print(
        f"best trial {result.best_trial}: validation {result.objective} "
        f"{result.best_value:.4g} with {json.dumps(result.best_params, default=str)}"
    )
    print(
        f"wrote {result.out_dir / TRIALS_CSV}, {result.out_dir / TRIALS_MD}, "
        f"{result.study_path} and {result.presets_path}"
    )
    return result
