"""The Adam loop the deep ensemble and MC dropout share: K networks per step, one vmapped call.

Both baselines train stacked leaf tensors ``[M, *shape]`` (the ensemble's M members, or
MC dropout's one weight set with M = 1) with one ``torch.optim.Adam``. Each step, a
method-specific ``make_weights(params)`` expands them into K weight sets ``[K, *shape]``
(the members themselves, or K dropout-masked copies), and network k sees its own
minibatch ``x[index[k]]`` through :func:`uqbench.functional.stacked_forward_per_net`.
Adam is elementwise, so one Adam over stacked members is exactly M independent Adams,
and the summed per-member loss gives each member its own gradient.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor, nn
from torch.func import vmap

from uqbench.errors import UserError
from uqbench.functional import stacked_forward_per_net
from uqbench.sampler import Progress, Task
from uqbench.training import task_loss

#: Draws one epoch of index batches, each a LongTensor ``[K, b]`` of example indices.
EpochBatches = Callable[[], Iterator[Tensor]]


def initial_weights(target: nn.Module, seeds: list[int]) -> dict[str, Tensor]:
    """One freshly initialised weight set per seed, stacked: name -> ``[len(seeds), *shape]``.

    Each set is the target's own PyTorch initialisation (every submodule's
    ``reset_parameters``) drawn on the CPU under ``torch.manual_seed(seed)``, so the
    result does not depend on the device or on the global RNG state.
    """
    template = copy.deepcopy(target).to("cpu")
    sets: list[dict[str, Tensor]] = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for module in template.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
            sets.append({k: p.detach().clone() for k, p in template.named_parameters()})
    return {k: torch.stack([s[k] for s in sets]) for k in sets[0]}


def independent_batches(
    n_examples: int, generators: list[torch.Generator], batch_size: int
) -> Iterator[Tensor]:
    """One epoch of index batches ``[K, b]``, K = ``len(generators)``: network k shuffles the
    data with its own generator, so its data order does not depend on the others.

    ``b = min(batch_size, n_examples)``; the last incomplete batch is dropped.
    """
    b = min(batch_size, n_examples)
    orders = torch.stack([torch.randperm(n_examples, generator=g) for g in generators])
    for start in range(0, n_examples - b + 1, b):
        yield orders[:, start : start + b]


def sliced_batches(
    n_examples: int, n_slices: int, batch_size: int, generator: torch.Generator
) -> Iterator[Tensor]:
    """One epoch of index batches ``[n_slices, b]``: one shuffle, each minibatch cut into
    ``n_slices`` disjoint slices of ``b = min(batch_size, n_examples) // n_slices`` examples."""
    b = min(batch_size, n_examples) // n_slices
    if b < 1:
        raise UserError(
            f"cannot cut minibatches of {min(batch_size, n_examples)} examples into "
            f"{n_slices} slices; lower the number of masks per step or raise batch_size"
        )
    order = torch.randperm(n_examples, generator=generator)
    step = b * n_slices
    for start in range(0, n_examples - step + 1, step):
        yield order[start : start + step].view(n_slices, b)


def per_net_loss(outputs: Tensor, y: Tensor, task: Task) -> Tensor:
    """Task loss of each network on its own labels: ``outputs [K, b, ...]``, ``y [K, b]`` -> ``[K]``.

    :func:`uqbench.training.task_loss` (one label vector shared by all networks) vmapped
    over the networks.
    """
    return vmap(lambda out, target: task_loss(out.unsqueeze(0), target, task)[0])(outputs, y)


def train_with_adam(
    target: nn.Module,
    params: dict[str, Tensor],
    make_weights: Callable[[dict[str, Tensor]], dict[str, Tensor]],
    epoch_batches: EpochBatches,
    x: Tensor,
    y: Tensor,
    task: Task,
    *,
    epochs: int,
    lr: float,
    weight_decay: float,
    cosine: bool,
    reduction: Literal["sum", "mean"],
    progress: Progress | None = None,
) -> dict[str, float]:
    """Train the leaf tensors ``params`` in place with Adam; return the last epoch's metrics.

    Each step: ``w = make_weights(params)`` (``[K, *shape]``), outputs of network k on
    ``x[index[k]]``, loss = ``reduction`` ("sum" or "mean") over k of each network's
    task loss. ``weight_decay`` is Adam's L2 term (the Gaussian prior / dropout's weight
    decay); ``cosine`` anneals the learning rate to 0 over all steps.
    """
    batches = list(epoch_batches())
    total = max(1, epochs * len(batches))
    optimizer = torch.optim.Adam(list(params.values()), lr=lr, weight_decay=weight_decay)
    scheduler = (
        torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))
        )
        if cosine
        else None
    )
    report_every = max(1, total // 100)
    step = 0
    metrics: dict[str, float] = {}
    for epoch in range(epochs):
        if epoch > 0:
            batches = list(epoch_batches())
        loss_sum = torch.zeros((), device=x.device)
        correct = torch.zeros((), dtype=torch.long, device=x.device)
        seen, done = 0, 0
        for index in batches:
            index = index.to(x.device)
            xb, yb = x[index], y[index]
            outputs = stacked_forward_per_net(target, make_weights(params), xb)
            losses = per_net_loss(outputs, yb, task)
            loss = losses.sum() if reduction == "sum" else losses.mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            loss_sum += losses.detach().mean()
            done += 1
            if task.is_classification:
                correct += (outputs.detach().argmax(-1) == yb).sum()
                seen += yb.numel()
            if progress is not None and (step % report_every == 0 or step == total):
                progress(step, total, loss=loss_sum.item() / done)
        metrics = {"train_loss": loss_sum.item() / max(done, 1)}
        if task.is_classification and seen:
            metrics["train_acc"] = correct.item() / seen
    return metrics
