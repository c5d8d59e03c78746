"""What a loaded benchmark hands to the harness and to every sampler."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn
from torch.utils.data import TensorDataset

from uqbench.sampler import Task


@dataclass
class BenchmarkData:
    """One benchmark, loaded into memory.

    Images are float32 ``[N, C, H, W]`` scaled to [0, 1]; labels int64 ``[N]``.
    Regression inputs are float32 ``[N, 1]`` and targets float32 ``[N]``.
    ``ood`` maps each out-of-distribution set's name to its inputs (same preprocessing).
    ``train_range`` (regression) is the input interval the training data covers; test
    points outside it count as ``std_out``.
    """

    name: str
    task: Task
    make_target: Callable[[], nn.Module]
    train: TensorDataset
    test: TensorDataset
    ood: dict[str, Tensor] = field(default_factory=dict)
    #: Validation split (disjoint from train and test): every choice a method or a tuner
    #: makes is made on it. None only for benchmarks without one.
    val: TensorDataset | None = None
    train_range: tuple[float, float] | None = None
    #: Where each part came from (paths or "generated"), recorded with every run.
    sources: dict[str, str] = field(default_factory=dict)
