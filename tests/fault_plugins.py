"""Samplers that fail on purpose, registered as plugins by ``tests/test_faults.py``.

Each is a small deep ensemble (2 members, 2 epochs) whose ``fit`` or ``state_dict``
breaks one way; ``fast-ensemble`` is the healthy one beside them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import ClassVar

import torch

from uqbench.baselines.ensemble import DeepEnsemble, EnsembleConfig
from uqbench.configs import at_least, positive, setting
from uqbench.training import check_finite


@dataclass
class FastConfig(EnsembleConfig):
    members: int = setting(2, check=at_least(1))
    epochs: int = setting(2, check=at_least(1))
    batch_size: int = setting(32, check=at_least(1))
    lr: float = setting(0.01, check=positive)


class FastEnsemble(DeepEnsemble):
    """A 2-member ensemble trained for 2 epochs (healthy)."""

    name: ClassVar[str] = "fast-ensemble"
    Config: ClassVar[type] = FastConfig
    presets: ClassVar[dict] = {}


class RaisingFit(FastEnsemble):
    """fit raises an ordinary exception (a plugin's bug)."""

    name: ClassVar[str] = "raising-fit"

    def fit(self, train, *, seed, val=None, progress=None) -> None:
        raise RuntimeError("plugin bug: fit exploded")


class DivergingFit(FastEnsemble):
    """fit's loss becomes NaN at step 3."""

    name: ClassVar[str] = "diverging-fit"

    def fit(self, train, *, seed, val=None, progress=None) -> None:
        check_finite(self.name, {"nll": torch.tensor(float("nan"))}, 3)


class HangingFit(FastEnsemble):
    """fit never returns."""

    name: ClassVar[str] = "hanging-fit"

    def fit(self, train, *, seed, val=None, progress=None) -> None:
        time.sleep(3600)


class ThreadsFit(FastEnsemble):
    """fit fails with the number of torch threads it ran on (to see a cell's share)."""

    name: ClassVar[str] = "threads-fit"

    def fit(self, train, *, seed, val=None, progress=None) -> None:
        raise RuntimeError(f"fit ran on {torch.get_num_threads()} torch threads")


class FunctionState(FastEnsemble):
    """state_dict holds a function, which torch.load(weights_only=True) refuses."""

    name: ClassVar[str] = "function-state"

    def state_dict(self) -> dict:
        return {**super().state_dict(), "hook": len}


ENTRY_POINTS = {
    cls.name: f"fault_plugins:{cls.__name__}"
    for cls in (FastEnsemble, RaisingFit, DivergingFit, HangingFit, ThreadsFit, FunctionState)
}
