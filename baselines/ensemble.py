r"""Deep ensemble ("random start"): M independently initialised members trained with Adam.

Each member m minimises its own empirical risk from its own random initialisation,

    θ_m = argmin_θ  (1/N) Σ_i  −log p(y_i | x_i, θ)  (+ λ ‖θ‖²  when weight_decay > 0),

seen through its own shuffling of the training set; the predictive is the uniform mixture
over members, p̄(y|x) = (1/M) Σ_m p(y|x, θ_m). This is the paper's "random start"
baseline (HyperGAN, Ratzlaff & Li, ICML 2019, Table 2), i.e. Lakshminarayanan et al.
(2017) without adversarial training and with the target's own likelihood.

Implementation: the M members are stacked leaf tensors ``[M, *shape]`` trained at once
— one vmapped forward where member m sees its own minibatch
(:func:`uqbench.functional.stacked_forward_per_net`), loss = Σ_m loss_m, and one Adam
over the stacked tensors, which (Adam being elementwise) is exactly M independent Adams.
Member m's initialisation (the target's PyTorch init) and data order come from seeds
derived from ``(seed, m)`` alone, so the first k members of an M-member ensemble are the
k members of a k-member one (up to floating-point summation order).

``sample(n)`` returns the first n members, with no randomness: accuracy with n sampled
networks is then "the ensemble of its first n members", the paper's rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from uqbench.errors import UserError
from uqbench.sampler import Progress, Task, WeightSampler
from uqbench.training import as_tensors, seeded_generator

from ._adam_training import independent_batches, initial_weights, train_with_adam


@dataclass
class EnsembleConfig:
    """Settings of :class:`DeepEnsemble` (defaults: the small CNN on MNIST-5k)."""

    #: Number of members M (= the most networks ``sample`` can return).
    members: int = 5
    #: Passes over the training set, per member.
    epochs: int = 15
    #: Minibatch size, per member.
    batch_size: int = 64
    #: Adam learning rate.
    lr: float = 2e-3
    #: Adam's L2 weight decay λ.
    weight_decay: float = 0.0
    #: Anneal the learning rate to 0 with a half cosine over all steps.
    cosine: bool = False


class DeepEnsemble(WeightSampler):
    """M independently initialised and trained members; ``sample(n)`` = the first n.

    ``extra_metrics`` after ``fit``: ``train_loss`` (and ``train_acc``), the members' mean
    over the last epoch's minibatches.
    """

    name: ClassVar[str] = "ensemble"
    Config: ClassVar[type] = EnsembleConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {"members": 4, "epochs": 8, "batch_size": 32, "lr": 1e-2, "cosine": True},
        "toy1d": {"members": 5, "epochs": 1000, "batch_size": 20, "lr": 1e-2, "cosine": True},
        "mnist5k-split": {"members": 5, "epochs": 10},
        "mnist5000": {"members": 5, "epochs": 15},
    }

    def __init__(
        self,
        target: nn.Module,
        config: EnsembleConfig | None = None,
        *,
        task: Task | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(target, config, task=task, device=device)
        _check_config(self.config)
        self.max_samples = self.config.members
        self.members: dict[str, Tensor] | None = None

    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Train all M members at once (see the module docstring)."""
        cfg = self.config
        torch.manual_seed(seed)
        x, y = (t.to(self.device) for t in as_tensors(train))
        seeds = [_member_seeds(seed, m) for m in range(cfg.members)]
        start = initial_weights(self.target, [init for init, _ in seeds])
        params = {k: v.to(self.device).requires_grad_() for k, v in start.items()}
        shufflers = [seeded_generator(order) for _, order in seeds]
        metrics = train_with_adam(
            self.target,
            params,
            lambda p: p,
            lambda: independent_batches(len(x), shufflers, cfg.batch_size),
            x,
            y,
            self.task,
            epochs=cfg.epochs,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            cosine=cfg.cosine,
            reduction="sum",
            progress=progress,
        )
        self.members = {k: v.detach() for k, v in params.items()}
        self.max_samples = cfg.members
        self.extra_metrics = metrics

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The first ``n`` members, ``[n, *shape]`` each (``generator`` is not used: no noise)."""
        self.check_n(n)
        members = self._fitted()
        return {k: v[:n].clone() for k, v in members.items()}

    def state_dict(self) -> dict:
        """``{"members": name -> [M, *shape]}`` (CPU tensors)."""
        return {"members": {k: v.detach().cpu() for k, v in self._fitted().items()}}

    def load_state_dict(self, state: dict) -> None:
        members = state["members"]
        shapes = self.param_shapes()
        if set(members) != set(shapes) or any(members[k].shape[1:] != shapes[k] for k in shapes):
            raise UserError(
                "ensemble checkpoint does not match the target's parameters; "
                "load it with the target it was trained with"
            )
        self.members = {k: members[k].to(self.device) for k in shapes}
        self.max_samples = next(iter(self.members.values())).shape[0]
        self.config = dataclasses.replace(self.config, members=self.max_samples)

    def _fitted(self) -> dict[str, Tensor]:
        if self.members is None:
            raise UserError("ensemble is not fitted; call fit or load a checkpoint first")
        return self.members


def _member_seeds(seed: int, member: int) -> tuple[int, int]:
    """(initialisation seed, data-order seed) of ``member``, from ``(seed, member)`` only."""
    init, order = np.random.SeedSequence([seed, member]).generate_state(2)
    return int(init), int(order)


def _check_config(cfg: EnsembleConfig) -> None:
    if cfg.members < 1:
        raise UserError(f"ensemble.members={cfg.members}: use at least 1 member")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise UserError("ensemble.epochs and ensemble.batch_size must be >= 1")
    if cfg.lr <= 0 or cfg.weight_decay < 0:
        raise UserError("ensemble.lr must be > 0 and ensemble.weight_decay >= 0")
