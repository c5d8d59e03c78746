"""Pieces every method's training loop shares: tensors out of a dataset, minibatches, the task loss."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

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
