"""One cell = one (method, benchmark, seed, config): fit, evaluate, return everything.

``run_cell`` runs wherever the executor puts it (this process or a Ray worker) and
returns plain data; the driver alone writes files and the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from uqbench.app.checkpoints import state_bytes
from uqbench.app.store import cell_stem
from uqbench.data.benchmark import BenchmarkData
from uqbench.functional import DEFAULT_MEMORY_BUDGET
from uqbench.measure import peak_memory_mb, reset_peak_memory
from uqbench.registry import load_method
from uqbench.sampler import Progress, WeightSampler

STORE_VERSION = 1


@dataclass(frozen=True)
class CellSpec:
    """Everything that determines a cell's result (and its config hash), plus where to run it."""

    method: str
    benchmark: str
    seed: int
    config: dict[str, Any]
    n_samples: int = 100
    data_root: str | None = None
    extra_ood: tuple[tuple[str, str], ...] = ()
    device: str = "cpu"
    memory_budget: int = DEFAULT_MEMORY_BUDGET
    #: Every OOD set cut to this many images (None: all of them).
    ood_limit: int | None = None

    @property
    def config_hash(self) -> str:
        """Hash of what changes results (not the device or the memory budget)."""
        key = {
            "version": STORE_VERSION,
            "method": self.method,
            "benchmark": self.benchmark,
            "config": self.config,
            "n_samples": self.n_samples,
            "ood": [list(p) for p in self.extra_ood],
        }
        if self.ood_limit is not None:  # absent otherwise: earlier stores keep their keys
            key["ood_limit"] = self.ood_limit
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.method}/{self.benchmark}/seed{self.seed}"

    @property
    def file_stem(self) -> str:
        return cell_stem(self.method, self.benchmark, self.seed, self.config_hash)


@dataclass
class CellOutcome:
    """What a finished cell hands back to the driver."""

    spec: CellSpec
    metrics: dict[str, float]
    arrays: dict[str, np.ndarray]
    state: dict
    history: list = field(default_factory=list)


@lru_cache(maxsize=4)
def cached_benchmark(
    name: str,
    data_root: str | None,
    extra_ood: tuple[tuple[str, str], ...],
    ood_limit: int | None = None,
) -> BenchmarkData:
    """Load a benchmark once per process (cells of one run share it)."""
    from uqbench.data.registry import load_benchmark

    return load_benchmark(
        name, data_root=data_root, extra_ood=dict(extra_ood) or None, ood_limit=ood_limit
    )


def build_sampler(spec: CellSpec, data: BenchmarkData) -> WeightSampler:
    """A fresh sampler for ``spec`` on ``data``'s target, initialised from the cell's seed."""
    cls = load_method(spec.method)
    torch.manual_seed(spec.seed)
    target = data.make_target()
    config = cls.Config(**spec.config)
    return cls(target, config, task=data.task, device=spec.device)


def run_cell(spec: CellSpec, progress: Progress | None = None) -> CellOutcome:
    """Fit and evaluate one cell; measures fit_s, sample_eval_s, params and peak_mb."""
    from uqbench.evaluation.harness import evaluate

    data = cached_benchmark(spec.benchmark, spec.data_root, spec.extra_ood, spec.ood_limit)
    reset_peak_memory(spec.device)
    sampler = build_sampler(spec, data)
    start = time.perf_counter()
    sampler.fit(data.train, seed=spec.seed, val=data.val, progress=progress)
    fit_s = time.perf_counter() - start
    evaluation = evaluate(
        sampler, data, n_samples=spec.n_samples, seed=spec.seed, memory_budget=spec.memory_budget
    )
    metrics = dict(evaluation.metrics)
    metrics["fit_s"] = fit_s
    metrics["params"] = float(sampler.num_stored_parameters())
    metrics["peak_mb"] = peak_memory_mb(spec.device)
    state = sampler.state_dict()
    state_bytes(state, owner=spec.method)  # fails the cell now, not a later `evaluate`
    return CellOutcome(
        spec=spec,
        metrics=metrics,
        arrays=evaluation.arrays,
        state=state,
        history=list(getattr(sampler, "history", []) or []),
    )


def spec_as_dict(spec: CellSpec) -> dict[str, Any]:
    """JSON-friendly form of a spec (stored beside each checkpoint)."""
    out = dataclasses.asdict(spec)
    out["extra_ood"] = [list(p) for p in spec.extra_ood]
    return out
