r"""Deep ensemble ("random start"): M independently initialised members trained with Adam.

Each member m minimises its own empirical risk from its own random initialisation,

    θ_m = argmin_θ  (1/N) Σ_i  −log p(y_i | x_i, θ)  (+ λ ‖θ‖²  when weight_decay > 0),

seen through its own shuffling of the training set; the predictive is the uniform mixture
over members, p̄(y|x) = (1/M) Σ_m p(y|x, θ_m). For classification this is the paper's
"random start" baseline (HyperGAN, Ratzlaff & Li, ICML 2019, Table 2). For regression it
is Lakshminarayanan et al. (2017) without adversarial training: each member is trained
with the Gaussian NLL — of its mean and variance outputs when the task is
heteroscedastic (the paper's setting; the target then has two outputs), or of its mean
under the task's fixed noise std otherwise — and inputs and targets are standardised
with the training set's mean and std (``standardize``, as in the paper's regression
experiments), the scaling folded back into each member's first and last Linear layers.

Implementation: the M members are stacked leaf tensors ``[M, *shape]`` trained at once
— one vmapped forward where member m sees its own minibatch
(:func:`uqbench.functional.stacked_forward_per_net`), loss = Σ_m loss_m, and one Adam
over the stacked tensors, which (Adam being elementwise) is exactly M independent Adams.
Member m's initialisation (the target's PyTorch init) and data order come from the seed
streams ``init/m`` and ``data/m`` of :func:`uqbench.training.derive_seeds`, so the first
k members of an M-member ensemble are the k members of a k-member one (up to
floating-point summation order). Minibatches smaller than the training set make the data
orders matter; with ``batch_size >= N`` every member sees the full batch every step and
only the initialisations differ.

Validation: with ``val`` given, ``fit`` reports the ensemble's ``val_nll`` (and
``val_acc``) once per epoch through ``progress``. ``keep_best`` (off by default: the
paper trains a fixed number of epochs) keeps, for each member independently, the epoch
of its own lowest validation NLL. Without ``val`` the last epoch is kept.

toy1d (the paper's x^3 setting, a 1-200-1 ReLU net, 20 points): the members do start
from different initialisations and, with ``batch_size`` 5, see different data orders, yet
trained to convergence they extrapolate almost identically — each one linearly from the
data's edge, where the fit fixes the slope; only hidden units whose kink lies beyond the
data keep their (small) initial contributions. With the benchmark's fixed noise and one
output, seed 0: epistemic std out/in 0.59/0.05 and 1 % of the out-of-range grid inside
mean ± 2 std after 1,000 epochs. What opens the bands in the paper's figure is the
members' variance outputs: on a heteroscedastic toy1d (two outputs) with each member's
epoch picked by NLL on a 20-point validation draw of the same generator, total std out of
range 30 and 62 % coverage; at the last epoch the variances have collapsed (validation
NLL 80.6, coverage 0 %). The toy1d preset therefore keeps the best epoch (it needs a
validation split).

``sample(n)`` returns the first n members, with no randomness: accuracy with n sampled
networks is then "the ensemble of its first n members", the paper's rows.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from uqbench.configs import (
    CheckedConfig,
    Choice,
    IntRange,
    LogUniform,
    at_least,
    non_negative,
    one_of,
    positive,
    setting,
)
from uqbench.errors import UserError
from uqbench.functional import batched_predict
from uqbench.sampler import Progress, Task, WeightSampler
from uqbench.training import (
    MinibatchSampler,
    RegressionScaling,
    as_tensors,
    derive_seeds,
    linear_ends,
    per_net_nll,
    predictive_scores,
    seeded_generator,
)

from ._adam_training import initial_weights, train_with_adam

#: Bytes of activations one validation forward may hold.
VALIDATION_MEMORY = 1 << 28


@dataclass
class EnsembleConfig(CheckedConfig):
    """Settings of :class:`DeepEnsemble` (defaults: the small CNN on MNIST-5k)."""

    owner: ClassVar[str] = "ensemble"

    #: Number of members M (= the most networks ``sample`` can return).
    members: int = setting(5, check=at_least(1))
    #: Passes over the training set, per member.
    epochs: int = setting(15, check=at_least(1), search=IntRange(5, 40))
    #: Minibatch size, per member.
    batch_size: int = setting(64, check=at_least(1), search=Choice((32, 64, 128)))
    #: Adam learning rate.
    lr: float = setting(2e-3, check=positive, search=LogUniform(3e-4, 1e-2))
    #: Adam's L2 weight decay λ.
    weight_decay: float = setting(0.0, check=non_negative, search=LogUniform(1e-6, 1e-3))
    #: Learning-rate schedule over all steps: "constant" or "cosine" (half cosine to 0).
    lr_schedule: str = setting(
        "constant", check=one_of("constant", "cosine"), search=Choice(("constant", "cosine"))
    )
    #: Keep each member's epoch of lowest validation NLL (needs ``val``; else the last).
    keep_best: bool = setting(False)
    #: Regression: train on standardised inputs and targets, folded back into the weights.
    standardize: bool = setting(True)


class DeepEnsemble(WeightSampler[EnsembleConfig]):
    """M independently initialised and trained members; ``sample(n)`` = the first n.

    ``extra_metrics`` after ``fit``: ``train_loss`` (and ``train_acc``), the members' mean
    over the last epoch's minibatches; with ``val``, the last epoch's ``val_nll``
    (``val_acc``) and, with ``keep_best``, the members' mean ``best_epoch``.
    """

    name: ClassVar[str] = "ensemble"
    Config: ClassVar[type] = EnsembleConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "toy1d": {
            "members": 5,
            "epochs": 1000,
            "batch_size": 5,
            "lr": 1e-2,
            "lr_schedule": "cosine",
            "keep_best": True,
        },
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
        x, y = (t.to(self.device) for t in as_tensors(train))
        task, scaling, ends = self.task, RegressionScaling(), ("", "")
        if not task.is_classification and cfg.standardize:
            ends = linear_ends(self.target, x[:2], method=self.name, inputs=True)
            scaling = RegressionScaling.fit(x, y, inputs=True, targets=True)
            x, y = scaling.data(x, y)
            task = scaling.task(task)
        streams = [derive_seeds(seed, (f"init/{m}", f"data/{m}")) for m in range(cfg.members)]
        start = initial_weights(self.target, [s[f"init/{m}"] for m, s in enumerate(streams)])
        params = {k: v.to(self.device).requires_grad_() for k, v in start.items()}
        batches = MinibatchSampler(
            len(x),
            cfg.batch_size,
            [seeded_generator(s[f"data/{m}"]) for m, s in enumerate(streams)],
        )

        def raw(p: dict[str, Tensor]) -> dict[str, Tensor]:
            if scaling.identity:
                return p
            folded = {k: v.detach().clone() for k, v in p.items()}
            scaling.fold(folded, *ends, self.task)
            return folded

        validate = None
        if val is not None:
            x_val, y_val = (t.to(self.device) for t in as_tensors(val))

            def validate(p: dict[str, Tensor]) -> tuple[dict[str, float], Tensor]:
                out = batched_predict(self.target, raw(p), x_val, memory_budget=VALIDATION_MEMORY)
                return predictive_scores(out, y_val, self.task), per_net_nll(out, y_val, self.task)

        metrics = train_with_adam(
            self.target,
            params,
            lambda p: p,
            batches.epoch,
            x,
            y,
            task,
            method=self.name,
            epochs=cfg.epochs,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            lr_schedule=cfg.lr_schedule,
            reduction="sum",
            progress=progress,
            validate=validate,
            keep_best=cfg.keep_best,
        )
        self.members = raw({k: v.detach() for k, v in params.items()})
        self.max_samples = cfg.members
        self.extra_metrics = metrics

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The first ``n`` members, ``[n, *shape]`` each (``generator`` is not used: no noise)."""
        self.check_n(n)
        members = self._fitted()
        return {k: v[:n].clone() for k, v in members.items()}

    def state_dict(self) -> dict:
        """``{"members": name -> [M, *shape]}`` (CPU tensors, on the data's raw scale)."""
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
