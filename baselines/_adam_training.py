"""The Adam loop the deep ensemble and MC dropout share: K networks per step, one vmapped call.

Both baselines train stacked leaf tensors ``[M, *shape]`` (the ensemble's M members, or
MC dropout's one weight set) with one ``torch.optim.Adam``. Each step, a method-specific
``make_weights(params)`` expands them into K weight sets ``[K, *shape]`` (the members
themselves, or K dropout-masked copies), and network k sees its own minibatch
``x[index[k]]`` through :func:`uqbench.functional.stacked_forward_per_net`. Adam is
elementwise, so one Adam over stacked members is exactly M independent Adams, and the
summed per-member loss gives each member its own gradient.

Minibatches come from :class:`uqbench.training.MinibatchSampler`, the learning-rate
schedule from :func:`uqbench.training.lr_factor`, the per-network loss from
:func:`uqbench.training.per_net_loss`; a non-finite loss stops the fit with
:class:`uqbench.errors.FitDiverged`. With a ``validate`` callback the loop reports
``val_nll``/``val_acc`` once an epoch and can keep each member's best epoch.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from typing import Literal

import torch
from torch import Tensor, nn

from uqbench.functional import stacked_forward_per_net
from uqbench.sampler import Progress, Task
from uqbench.training import KeepBest, ProgressThrottle, check_finite, lr_factor, per_net_loss

#: Draws one epoch of index batches, each a LongTensor ``[K, b]`` of example indices.
EpochBatches = Callable[[], Iterator[Tensor]]
#: ``validate(params) -> (metrics, scores)``: ``val_nll``/``val_acc`` for the progress
#: report and the score (lower is better; ``[M]`` per member or a scalar) for keep-best.
Validate = Callable[[dict[str, Tensor]], tuple[dict[str, float], Tensor]]

__all__ = ["EpochBatches", "Validate", "initial_weights", "per_net_loss", "train_with_adam"]


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


def train_with_adam(
    target: nn.Module,
    params: dict[str, Tensor],
    make_weights: Callable[[dict[str, Tensor]], dict[str, Tensor]],
    epoch_batches: EpochBatches,
    x: Tensor,
    y: Tensor,
    task: Task,
    *,
    method: str,
    epochs: int,
    lr: float,
    weight_decay: float,
    lr_schedule: str,
    reduction: Literal["sum", "mean"],
    progress: Progress | None = None,
    validate: Validate | None = None,
    keep_best: bool = False,
) -> dict[str, float]:
    """Train the leaf tensors ``params`` in place with Adam; return the fit's metrics.

    Each step: ``w = make_weights(params)`` (``[K, *shape]``), outputs of network k on
    ``x[index[k]]``, loss = ``reduction`` ("sum" or "mean") over k of each network's
    task loss. ``weight_decay`` is Adam's L2 term (the Gaussian prior / dropout's weight
    decay); ``lr_schedule`` is ``"constant"`` or ``"cosine"`` (to 0 over all steps).
    ``validate`` runs after every epoch; with ``keep_best`` the params end at the epoch
    (per member, when the scores are per member) of lowest validation score, else at the
    last epoch. Metrics: ``train_loss`` (``train_acc``) of the last epoch, the validation
    metrics of the state kept, and with ``keep_best`` the mean ``best_epoch`` (1-based).
    """
    batches = list(epoch_batches())
    total = max(1, epochs * len(batches))
    optimizer = torch.optim.Adam(list(params.values()), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(lr_schedule, s, total)
    )
    throttle = ProgressThrottle(progress, total)
    best = KeepBest() if keep_best and validate is not None else None
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
            step += 1
            check_finite(method, {"training": loss}, step)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += losses.detach().mean()
            done += 1
            if task.is_classification:
                correct += (outputs.detach().argmax(-1) == yb).sum()
                seen += yb.numel()
            if throttle.due(step):
                throttle.report(step, loss=loss_sum.item() / done)
        metrics = {"train_loss": loss_sum.item() / max(done, 1)}
        if task.is_classification and seen:
            metrics["train_acc"] = correct.item() / seen
        if validate is not None:
            with torch.no_grad():
                val_metrics, scores = validate({k: v.detach() for k, v in params.items()})
            throttle.report(step, **val_metrics)
            metrics.update(val_metrics)
            if best is not None:
                best.update(params, scores, epoch + 1)
    if best is not None and best.epochs is not None and validate is not None:
        best.restore(params)
        metrics["best_epoch"] = float(best.epochs.mean())
        with torch.no_grad():
            metrics.update(validate({k: v.detach() for k, v in params.items()})[0])
    return metrics
