"""Pieces every method's training loop shares: tensors out of a dataset, minibatches, the task
loss, learning-rate schedules, independent seed streams and the divergence check."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from uqbench.errors import FitDiverged
from uqbench.sampler import Task


def as_tensors(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of a whole in-memory dataset (TensorDataset fast path, else stacked items)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(xs), torch.as_tensor(ys)


def minibatches(
    n_examples: int, batch_size: int, generator: torch.Generator, *, drop_last: bool = True
) -> Iterator[Tensor]:
    """Index tensors of one shuffled epoch."""
    order = torch.randperm(n_examples, generator=generator)
    stop = n_examples - (n_examples % batch_size if drop_last and n_examples >= batch_size else 0)
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def task_loss(outputs: Tensor, y: Tensor, task: Task) -> Tensor:
    """Mean negative log-likelihood per network: ``outputs [n, B, ...]``, ``y [B]`` -> ``[n]``.

    classification: cross-entropy of the logits.
    regression: Gaussian NLL (constant dropped) with the mean in output 0 and either the
    task's fixed ``noise_std`` or, when heteroscedastic, log-variance in output 1.
    """
    n, b = outputs.shape[:2]
    if task.is_classification:
        flat = F.cross_entropy(outputs.reshape(n * b, -1), y.repeat(n), reduction="none")
        return flat.view(n, b).mean(1)
    mean, log_var = regression_outputs(outputs, task)
    target = y.view(1, b).to(mean.dtype)
    return (0.5 * (log_var + (target - mean) ** 2 / log_var.exp())).mean(1)


def regression_outputs(outputs: Tensor, task: Task) -> tuple[Tensor, Tensor]:
    """``(mean, log_var)`` each ``[n, B]`` from regression outputs ``[n, B, 1 or 2]``."""
    mean = outputs[..., 0]
    if task.heteroscedastic:
        log_var = outputs[..., 1].clamp(-10.0, 10.0)
    else:
        log_var = torch.full_like(mean, 2 * math.log(task.noise_std))
    return mean, log_var


def seeded_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def derive_seeds(seed: int, purposes: Sequence[str]) -> dict[str, int]:
    """Independent 63-bit seeds, one per purpose (e.g. ``("init", "data", "noise")``).

    Spawned from ``numpy.random.SeedSequence(seed)`` keyed by each purpose's name, so the
    streams of one seed never coincide with the streams of another seed (``seed + 1`` for
    the data order would replay the next seed's noise).
    """
    out = {}
    for purpose in purposes:
        key = int.from_bytes(purpose.encode(), "little")
        state = np.random.SeedSequence([seed, key]).generate_state(2, dtype=np.uint32)
        out[purpose] = int(state[0]) << 31 ^ int(state[1])
    return out


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rate at ``step`` of ``total``.

    ``constant``: 1. ``cosine``: half a cosine from 1 at step 0 to 0 at ``total``.
    """
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / max(total, 1)))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; use 'cosine' or 'constant'")


def check_finite(method: str, losses: dict[str, Tensor | float], step: int) -> None:
    """Raise :class:`FitDiverged` naming the first non-finite loss and the step."""
    for name, value in losses.items():
        number = float(value.detach().sum()) if isinstance(value, Tensor) else float(value)
        if not math.isfinite(number):
            raise FitDiverged(
                f"{method}: the {name} loss became {number} at step {step}; the fit diverged "
                "(lower the learning rates or check the data)"
            )
