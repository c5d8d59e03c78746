"""Pieces every method's training loop shares: tensors out of a dataset, one minibatch sampler,
the task loss (per network), learning-rate schedules, independent seed streams, a progress
throttle, validation scores, keep-best and the divergence check."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from uqbench.errors import FitDiverged, UserError
from uqbench.sampler import Progress, Task


def as_tensors(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """``(x, y)`` of a whole in-memory dataset (TensorDataset fast path, else stacked items)."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(xs), torch.as_tensor(ys)


def minibatches(n_examples: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Index tensors ``[b]`` of one shuffled epoch: :class:`MinibatchSampler` with one stream."""
    for batch in MinibatchSampler(n_examples, batch_size, [generator]).epoch():
        yield batch[0]


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


def random_subset(tensors: Sequence[Tensor], limit: int, seed: int) -> tuple[Tensor, ...]:
    """At most ``limit`` examples of ``tensors`` (one index set for all), drawn at random.

    A fixed seeded draw, kept in dataset order; all of them when there are no more than
    ``limit``. Not the first ``limit``: a benchmark's splits may be sorted by class
    (CIFAR's and MNIST-5k's are), so a prefix can hold only a few classes.
    """
    n = tensors[0].shape[0]
    if n <= limit:
        return tuple(tensors)
    keep = torch.randperm(n, generator=seeded_generator(seed))[:limit].sort().values
    return tuple(t[keep.to(t.device)] for t in tensors)


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


def per_net_loss(outputs: Tensor, y: Tensor, task: Task) -> Tensor:
    """Task loss of each network on its own labels: ``outputs [K, b, ...]``, ``y [K, b]``
    -> ``[K]``.

    :func:`task_loss` (one label vector shared by all networks) vmapped over the networks,
    for loops where network k trains on its own minibatch (ensemble members, dropout masks,
    APD's chains).
    """
    return torch.func.vmap(lambda out, target: task_loss(out.unsqueeze(0), target, task)[0])(
        outputs, y
    )


class MinibatchSampler:
    """Shuffled minibatches of example indices: S independent streams, one per generator.

    Every epoch each stream draws its own permutation of the N examples and cuts it into
    ``N // b`` batches of ``b = min(batch_size, N)`` indices (the incomplete tail is
    dropped, so every step has the same size); ``epoch()`` yields them stacked as
    ``[S, b]``. Step-based loops call :meth:`next` instead, which runs on across epochs.
    Ensemble members use one stream each (independent data orders); a method with one
    weight set uses one stream and reshapes (MC dropout cuts each batch into per-mask slices).
    """

    def __init__(
        self, n_examples: int, batch_size: int, generators: Sequence[torch.Generator]
    ) -> None:
        if n_examples < 1:
            raise UserError("the training set is empty; give at least one example")
        if batch_size < 1 or not generators:
            raise UserError("a minibatch needs batch_size >= 1 and at least one generator")
        self.n_examples = n_examples
        self.batch_size = min(batch_size, n_examples)
        self.generators = list(generators)
        self._pending: Iterator[Tensor] = iter(())

    @property
    def steps_per_epoch(self) -> int:
        return self.n_examples // self.batch_size

    def epoch(self) -> Iterator[Tensor]:
        """One epoch of index batches ``[S, b]``."""
        orders = torch.stack(
            [torch.randperm(self.n_examples, generator=g) for g in self.generators]
        )
        b = self.batch_size
        for start in range(0, self.steps_per_epoch * b, b):
            yield orders[:, start : start + b]

    def next(self) -> Tensor:
        """The next batch ``[S, b]``, starting a fresh epoch when one is used up."""
        batch = next(self._pending, None)
        if batch is None:
            self._pending = self.epoch()
            batch = next(self._pending)
        return batch


class ProgressThrottle:
    """Forwards ``progress(step, total, **metrics)`` about ``reports`` times per fit.

    ``due(step)`` says whether a training-loss report is due (so a loop only syncs a loss
    to the CPU when it will be shown); ``report`` always forwards (validation metrics once
    an epoch). A None ``progress`` makes both no-ops.
    """

    def __init__(self, progress: Progress | None, total: int, reports: int = 100) -> None:
        self.progress = progress
        self.total = max(1, total)
        self.every = max(1, self.total // max(1, reports))

    def due(self, step: int) -> bool:
        return self.progress is not None and (step % self.every == 0 or step == self.total)

    def report(self, step: int, **metrics: float) -> None:
        if self.progress is not None:
            self.progress(step, self.total, **metrics)


def predictive_scores(outputs: Tensor, y: Tensor, task: Task) -> dict[str, float]:
    """``val_nll`` (and ``val_acc``) of the predictive over n networks, ``outputs [n, N, ...]``.

    Classification: −mean log p̄(y) with p̄ the mean of the networks' softmax (log-sum-exp),
    accuracy of argmax p̄. Regression: the Gaussian NLL (with its ½ log 2π) of the
    moment-matched predictive N(mean of μ_k, mean σ_k² + var μ_k). These are the harness's
    definitions, computed here for the validation reports and selections made during fit.
    """
    n = outputs.shape[0]
    if task.is_classification:
        log_p = torch.logsumexp(outputs.double().log_softmax(-1), dim=0) - math.log(n)
        nll = -log_p.gather(1, y.view(-1, 1)).mean()
        acc = (log_p.argmax(-1) == y).double().mean()
        return {"val_nll": float(nll), "val_acc": float(acc)}
    mean_k, log_var_k = regression_outputs(outputs.double(), task)
    var = log_var_k.exp().mean(0) + mean_k.var(0, correction=0)
    err = (y.double() - mean_k.mean(0)) ** 2
    return {"val_nll": float((0.5 * (math.log(2 * math.pi) + var.log() + err / var)).mean())}


def per_net_nll(outputs: Tensor, y: Tensor, task: Task) -> Tensor:
    """Each network's own mean NLL on ``(x, y)``: ``outputs [n, N, ...]`` -> ``[n]`` (float64)."""
    return task_loss(outputs.double(), y, task)


class KeepBest:
    """Remembers, per member, the state with the lowest validation score seen so far.

    ``update(state, scores)``: ``state`` maps names to tensors whose leading axis is the
    member axis when ``scores`` is ``[M]`` (ensemble members pick their best epochs
    independently), or to whole tensors when ``scores`` is a scalar. ``restore(state)``
    copies the kept values back in place. Ties keep the later state.
    """

    def __init__(self) -> None:
        self.best: dict[str, Tensor] | None = None
        self.scores: Tensor | None = None
        self.epochs: Tensor | None = None

    def update(self, state: dict[str, Tensor], scores: Tensor, epoch: int) -> None:
        scores = scores.detach().double().cpu()
        if self.best is None or self.scores is None or self.epochs is None:
            self.best = {k: v.detach().clone() for k, v in state.items()}
            self.scores = scores.clone()
            self.epochs = torch.full_like(scores, float(epoch))
            return
        better = scores <= self.scores
        self.scores = torch.where(better, scores, self.scores)
        self.epochs = torch.where(better, torch.full_like(scores, float(epoch)), self.epochs)
        for name, value in state.items():
            mask = better.to(value.device)
            if mask.dim() > 0:
                mask = mask.view(-1, *([1] * (value.dim() - 1)))
            self.best[name] = torch.where(mask, value.detach(), self.best[name])

    @torch.no_grad()
    def restore(self, state: dict[str, Tensor]) -> None:
        if self.best is not None:
            for name, value in state.items():
                value.copy_(self.best[name])


class RegressionScaling:
    """Train a regression net on standardised data and fold the scaling back into its weights.

    ``x' = (x − x_shift) / x_scale`` per input feature and ``y' = (y − y_shift) / y_scale``
    (training-set mean and std; the task's fixed ``noise_std`` becomes ``noise_std /
    y_scale``). A net trained on (x', y') is the raw-scale net whose first Linear layer has
    ``W / x_scale`` and ``b − W (x_shift / x_scale)`` and whose last Linear layer has its
    mean row scaled by ``y_scale`` and shifted by ``y_shift`` (a log-variance row gains
    ``2 log y_scale``): :meth:`fold` writes exactly that into sampled weights, so sampling
    returns networks for the raw data. Both papers' regression experiments (deep
    ensembles; MC dropout, following Hernández-Lobato & Adams 2015) normalise inputs and
    targets this way; the weight prior / decay then acts on the standardised net.
    """

    def __init__(
        self,
        x_shift: Tensor | None = None,
        x_scale: Tensor | None = None,
        y_shift: float = 0.0,
        y_scale: float = 1.0,
    ) -> None:
        self.x_shift, self.x_scale = x_shift, x_scale
        self.y_shift, self.y_scale = float(y_shift), float(y_scale)

    @classmethod
    def fit(cls, x: Tensor, y: Tensor, *, inputs: bool, targets: bool) -> RegressionScaling:
        """Training-set statistics (a zero or undefined std counts as 1)."""

        def spread(values: Tensor) -> Tensor:
            std = values.std(0) if len(values) > 1 else torch.ones_like(values[0])
            return torch.where(std > 0, std, torch.ones_like(std))

        x_shift = x_scale = None
        if inputs:
            flat = x.reshape(len(x), -1).double()
            x_shift, x_scale = flat.mean(0).float().cpu(), spread(flat).float().cpu()
        y_shift, y_scale = 0.0, 1.0
        if targets:
            y_float = y.double()
            y_shift, y_scale = float(y_float.mean()), float(spread(y_float.view(-1, 1))[0])
        return cls(x_shift, x_scale, y_shift, y_scale)

    @property
    def identity(self) -> bool:
        return self.x_shift is None and self.y_shift == 0.0 and self.y_scale == 1.0

    def data(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(x', y')`` on the standardised scale."""
        if self.x_shift is not None and self.x_scale is not None:
            shape = (1, *x.shape[1:])
            shift = self.x_shift.to(x.device).view(shape)
            x = (x - shift) / self.x_scale.to(x.device).view(shape)
        return x, (y.to(torch.float32) - self.y_shift) / self.y_scale

    def task(self, task: Task) -> Task:
        """The task on the standardised scale (fixed noise std divided by ``y_scale``)."""
        return dataclasses.replace(task, noise_std=task.noise_std / self.y_scale)

    @torch.no_grad()
    def fold(self, weights: dict[str, Tensor], first: str, last: str, task: Task) -> None:
        """Rewrite stacked ``weights`` (``[n, *shape]``) in place for raw x and y; ``first`` /
        ``last`` are the names of the first and last Linear layers (see :func:`linear_ends`)."""
        if self.x_shift is not None and self.x_scale is not None:
            w, b = weights[f"{first}.weight"], weights[f"{first}.bias"]
            scale = self.x_scale.to(w.device, w.dtype)
            b -= torch.einsum("noi,i->no", w, self.x_shift.to(w.device, w.dtype) / scale)
            w /= scale
        w, b = weights[f"{last}.weight"], weights[f"{last}.bias"]
        if task.heteroscedastic:
            w[:, 0] *= self.y_scale
            b[:, 0] = b[:, 0] * self.y_scale + self.y_shift
            b[:, 1] += 2 * math.log(self.y_scale)
        else:
            w *= self.y_scale
            b.mul_(self.y_scale).add_(self.y_shift)

    def state_dict(self) -> dict[str, Any]:
        return {
            "x_shift": self.x_shift,
            "x_scale": self.x_scale,
            "y_shift": self.y_shift,
            "y_scale": self.y_scale,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RegressionScaling:
        return cls(state["x_shift"], state["x_scale"], state["y_shift"], state["y_scale"])


def linear_ends(target: nn.Module, x: Tensor, *, method: str, inputs: bool) -> tuple[str, str]:
    """Names of the target's first and last Linear layers, checked so that folding a
    :class:`RegressionScaling` is exact: the last one (with a bias) must produce the output
    itself, and with ``inputs`` the first one (with a bias) must read the raw input."""
    layers = [(n, m) for n, m in target.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    seen: dict[str, tuple[Tensor, Tensor]] = {}

    def record(name: str):
        def hook(_module: nn.Module, args: tuple, out: Tensor) -> None:
            seen.setdefault(name, (args[0], out))

        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in layers[:1] + layers[-1:]]
    try:
        with torch.no_grad():
            out = target(x)
    finally:
        for handle in handles:
            handle.remove()
    (first, first_layer), (last, last_layer) = layers[0], layers[-1]
    ok_last = (
        isinstance(last_layer, nn.Linear)
        and last_layer.bias is not None
        and last in seen
        and seen[last][1].shape == out.shape
        and torch.equal(seen[last][1], out)
    )
    ok_first = not inputs or (
        isinstance(first_layer, nn.Linear)
        and first_layer.bias is not None
        and first in seen
        and seen[first][0].shape == x.shape
        and torch.equal(seen[first][0], x)
    )
    if not (ok_last and ok_first):
        raise UserError(
            f"{method}: standardising regression data needs the target's input to go straight "
            f"into a Linear layer with a bias ({first}) and its output to come straight from "
            f"one ({last}); set {method}.standardize=false"
        )
    return first, last
