"""One tuning trial: fit a config on the training split, score it on the validation split.

This is the part of ``uqbench tune`` that runs wherever the executor puts it (the tune
process, a worker process, a Ray task). It never touches the Optuna study: the driver
asks for the trial's values and tells the result; the worker gets a plain
:class:`TrialSpec` and hands back a plain :class:`TrialOutcome`.

Budget and pruning act through the ``progress(step, total, **metrics)`` callback that
every method's ``fit`` calls:

- the fit-time cap: when the fit has run longer than ``max_fit_s`` at a progress call —
  or, where the fit reports nothing for that long, when an alarm rings at ``max_fit_s``
  — :class:`FitTimeExceeded` stops it, and the trial is recorded as pruned with that
  reason (it used its share of the budget without producing a result);
- pruning: when the method reports the objective's validation number under the key
  ``val_<objective>`` (``val_nll``, ``val_acc``, ``val_ece``, ``val_brier``, ``val_rmse``),
  it is an intermediate value at ``step``; Optuna's ``MedianPruner`` stops the trial when
  its best value so far is worse than the median of the finished trials at that step.
  The worker runs the pruner against a snapshot of the study's finished trials taken when
  the trial was dispatched (trials finishing meanwhile are not seen), so no worker needs
  the study's storage.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from uqbench.data.benchmark import BenchmarkData
from uqbench.errors import FitDiverged, UserError
from uqbench.functional import DEFAULT_MEMORY_BUDGET
from uqbench.sampler import WeightSampler

TrialState = Literal["complete", "pruned", "fail"]


class FitTimeExceeded(Exception):
    """Raised from the progress callback when a trial's fit runs past its time cap."""


class _Pruned(Exception):
    """Raised from the progress callback when the pruner stops a hopeless trial."""


@dataclass(frozen=True)
class PruneSettings:
    """Optuna ``MedianPruner`` settings plus the study's finished trials to compare against."""

    direction: Literal["minimize", "maximize"]
    key: str
    n_startup_trials: int = 5
    n_warmup_steps: int = 1
    interval_steps: int = 1
    #: ``optuna.trial.FrozenTrial`` of every COMPLETE trial at dispatch time.
    finished: tuple[Any, ...] = ()


@dataclass(frozen=True)
class TrialSpec:
    """Everything a worker needs to run one trial (picklable; no study, no storage)."""

    number: int
    method_cls: type[WeightSampler]
    config: dict[str, Any]
    metric: str
    seed: int = 0
    n_samples: int = 100
    device: str = "cpu"
    max_fit_s: float | None = None
    threads: int | None = None
    prune: PruneSettings | None = None
    memory_budget: int = DEFAULT_MEMORY_BUDGET


@dataclass
class TrialOutcome:
    """What a trial hands back: its state, objective value, validation metrics, timings."""

    number: int
    state: TrialState
    value: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    #: ``step -> value`` of the ``val_<objective>`` numbers the method reported.
    intermediate: dict[int, float] = field(default_factory=dict)
    fit_s: float = 0.0
    reason: str = ""


def validation_view(data: BenchmarkData) -> BenchmarkData:
    """The benchmark as tuning may see it: train, and the validation split in the place of
    the test set, with no OOD sets. Built field by field, so neither ``data.test`` nor
    ``data.ood`` is ever read."""
    if data.val is None:
        raise UserError(
            f"benchmark {data.name} has no validation split; tune on a benchmark with one"
        )
    return BenchmarkData(
        name=data.name,
        task=data.task,
        make_target=data.make_target,
        train=data.train,
        test=data.val,
        ood={},
        val=data.val,
        train_range=data.train_range,
        sources={k: v for k, v in data.sources.items() if k in ("train", "val")},
    )


def run_shared_trial(spec: TrialSpec) -> TrialOutcome:
    """:func:`run_trial` on the pool's shared validation view (the task a pool runs)."""
    from uqbench.app.pool import shared_value

    data = shared_value()
    if data is None:
        raise RuntimeError("a trial ran in a pool without the benchmark's validation view")
    return run_trial(spec, data)


def run_trial(spec: TrialSpec, data: BenchmarkData) -> TrialOutcome:
    """Fit ``spec.config`` on ``data.train`` (with ``val=data.val``) and score it on
    ``data.val`` with the shared harness. ``data`` must be a :func:`validation_view`.

    A time cap, the pruner, a diverged fit or an invalid config end the trial with state
    ``pruned`` or ``fail`` and a reason; any other exception is a bug and propagates.
    """
    from uqbench.evaluation.harness import evaluate

    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    _warm_up()
    watch = _Watch(spec)
    outcome = TrialOutcome(number=spec.number, state="complete")
    try:
        torch.manual_seed(spec.seed)
        sampler = spec.method_cls(
            data.make_target(),
            spec.method_cls.Config(**spec.config),
            task=data.task,
            device=spec.device,
        )
        watch.start()
        with _alarm_at(spec.max_fit_s):
            sampler.fit(data.train, seed=spec.seed, val=data.val, progress=watch)
        outcome.fit_s = watch.elapsed()
        if spec.max_fit_s is not None and outcome.fit_s > spec.max_fit_s:
            raise FitTimeExceeded(_over_cap(outcome.fit_s, spec.max_fit_s))
        scored = evaluate(
            sampler,
            data,
            n_samples=spec.n_samples,
            seed=spec.seed,
            memory_budget=spec.memory_budget,
        )
    except FitTimeExceeded as exc:
        outcome.state, outcome.reason = "pruned", f"max_fit_s: {exc}"
    except _Pruned as exc:
        outcome.state, outcome.reason = "pruned", f"median pruner: {exc}"
    except UserError as exc:  # a diverged fit, or a config the method refuses
        kind = "diverged" if isinstance(exc, FitDiverged) else "invalid config"
        outcome.state, outcome.reason = "fail", f"{kind}: {exc}"
    else:
        outcome.metrics = {
            k: float(v)
            for k, v in scored.metrics.items()
            if k in ("acc", "nll", "ece", "brier", "rmse", "gnll")
        }
        outcome.value = outcome.metrics[spec.metric]
        if not math.isfinite(outcome.value):
            outcome.state = "fail"
            outcome.reason = f"non-finite validation {spec.metric} ({outcome.value})"
            outcome.value = None
    finally:
        outcome.fit_s = outcome.fit_s or watch.elapsed()
        outcome.intermediate = dict(watch.intermediate)
    return outcome


_WARM = False


def _warm_up() -> None:
    """Pay torch's one-time lazy initialisation of its optimisers (seconds: the first
    optimiser a process builds imports the compiler stack) before any trial's clock
    starts, so the first trial of each process is not charged for it under the cap."""
    global _WARM
    if not _WARM:
        torch.optim.Adam([torch.zeros(1, requires_grad=True)])
        _WARM = True


@contextlib.contextmanager
def _alarm_at(cap: float | None) -> Iterator[None]:
    """Enforce the cap also where a fit reports no progress for long (one long phase, e.g.
    a full Hessian): a ``SIGALRM`` at ``1.1 × cap + 1`` seconds (a backstop: progress
    calls past the cap stop a fit first) raises :class:`FitTimeExceeded` in the fit.
    Only in a main thread on Unix, where signals can be handled; elsewhere the cap is
    checked at each ``progress`` call alone. The signal interrupts Python code between
    operations, so one long native operation still finishes first."""
    usable = (
        cap is not None
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return
    start = time.perf_counter()

    def _ring(signum: int, frame: Any) -> None:
        elapsed = time.perf_counter() - start
        raise FitTimeExceeded(f"{_over_cap(elapsed, cap)} (no progress call since the cap)")

    previous = signal.signal(signal.SIGALRM, _ring)
    signal.setitimer(signal.ITIMER_REAL, 1.1 * cap + 1.0)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _over_cap(elapsed: float, cap: float) -> str:
    return f"fit ran {elapsed:.2f} s, over the cap of {cap:g} s"


class _Watch:
    """The ``progress`` callback of a trial's fit: time cap, intermediate values, pruner."""

    def __init__(self, spec: TrialSpec) -> None:
        self.spec = spec
        self.intermediate: dict[int, float] = {}
        self._start: float | None = None
        self._trial = _snapshot_trial(spec.prune) if spec.prune is not None else None

    def start(self) -> None:
        self._start = time.perf_counter()

    def elapsed(self) -> float:
        return 0.0 if self._start is None else time.perf_counter() - self._start

    def __call__(self, step: int, total: int, **metrics: Any) -> None:
        cap = self.spec.max_fit_s
        if cap is not None and self.elapsed() > cap:
            raise FitTimeExceeded(f"{_over_cap(self.elapsed(), cap)} (step {step}/{total})")
        prune = self.spec.prune
        if prune is None or prune.key not in metrics:
            return
        value = float(metrics[prune.key])
        self.intermediate[int(step)] = value
        if self._trial is not None:
            self._trial.report(value, int(step))
            if self._trial.should_prune():
                raise _Pruned(f"{prune.key}={value:.4g} at step {step} is worse than the median")


def _snapshot_trial(prune: PruneSettings) -> Any:
    """A running trial in an in-memory study holding the finished trials, so Optuna's
    ``MedianPruner`` decides exactly as it would against the real study."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=prune.direction,
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=prune.n_startup_trials,
            n_warmup_steps=prune.n_warmup_steps,
            interval_steps=prune.interval_steps,
        ),
    )
    study.add_trials(list(prune.finished))
    return study.ask()
