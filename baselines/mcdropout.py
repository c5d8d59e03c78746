r"""MC dropout: one trained weight set, sampled by dropping each layer's input units.

A sampled network is the trained weights W with, for every masked layer l, one Bernoulli
mask on the layer's input units (Linear, weight ``[out, in]``) or input channels (Conv2d,
weight ``[out, in, kh, kw]``):

    z_l ~ Bernoulli(1 − p)^{in_l},   W̃_l[:, j] = W_l[:, j] · z_lj / (1 − p),   b̃_l = b_l.

Zeroing column j of W_l is exactly dropping input unit/channel j of layer l (Dropout on a
Linear input, Dropout2d on a Conv2d input), survivors scaled by 1/(1 − p). Training
minimises the expected loss under the same noise (Gal & Ghahramani 2016):

    min_W  E_z [ (1/N) Σ_i −log p(y_i | x_i, W̃(z)) ]  (+ λ ‖W‖²  with weight_decay = λ),

estimated each step with K = ``masks_per_step`` masks, mask k applied to its own slice
of b/K examples of the minibatch (one vmapped call,
:func:`uqbench.functional.stacked_forward_per_net`). Each training example therefore sees
exactly one mask drawn from the distribution ``sample`` draws from; K = batch_size is
ordinary per-example dropout, smaller K is the same objective with a noisier gradient.

Departures from the paper's baseline (HyperGAN, Ratzlaff & Li 2019, "MC dropout"):
dropout sits on the inputs of layers inside the target rather than after activations
of a separately built net, and the first layer is left unmasked by default
(``skip_first_layer``): its input is the raw image (1 channel for MNIST, which one
mask would wipe out whole) or, for 1-D regression, the single input unit. Regression
inputs and targets are standardised with the training set's statistics (``standardize``,
as in the paper's UCI experiments), folded back into the first and last Linear layers
(inputs only when the first layer is unmasked, where the fold is exact).

Seeds: initialisation, data order, training masks and validation masks each come from
their own stream of :func:`uqbench.training.derive_seeds` (``init``, ``data``, ``noise``,
``val``), so no stream of one seed replays a stream of another.

Validation: with ``val`` given, ``fit`` reports ``val_nll`` (and ``val_acc``) of
``val_samples`` masked networks once per epoch through ``progress``. ``keep_best`` (off
by default: the paper trains a fixed number of epochs) keeps the epoch of lowest
validation NLL. Without ``val`` the last epoch is kept.
"""

from __future__ import annotations

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
    Uniform,
    at_least,
    in_range,
    non_negative,
    one_of,
    positive,
    setting,
)
from uqbench.errors import UserError
from uqbench.functional import batched_predict
from uqbench.sampler import Progress, Task, WeightSampler
from uqbench.targets import parametric_layers
from uqbench.training import (
    MinibatchSampler,
    RegressionScaling,
    as_tensors,
    derive_seeds,
    linear_ends,
    predictive_scores,
    seeded_generator,
)

from ._adam_training import initial_weights, train_with_adam

#: Bytes of activations one validation forward may hold.
VALIDATION_MEMORY = 1 << 28


@dataclass
class MCDropoutConfig(CheckedConfig):
    """Settings of :class:`MCDropout` (defaults: the small CNN on MNIST-5k)."""

    owner: ClassVar[str] = "mcdropout"

    #: Drop probability p of each input unit/channel of a masked layer.
    p: float = setting(
        0.25,
        check=in_range(0.0, 1.0, include_high=False),
        search=Uniform(0.05, 0.5),
    )
    #: Leave the first Linear/Conv2d layer unmasked (its input is the raw data).
    skip_first_layer: bool = setting(True)
    #: K: masks drawn per training step, each on its own slice of the minibatch.
    masks_per_step: int = setting(8, check=at_least(1))
    #: Passes over the training set.
    epochs: int = setting(20, check=at_least(1), search=IntRange(5, 60))
    #: Minibatch size (cut into ``masks_per_step`` slices).
    batch_size: int = setting(64, check=at_least(1))
    #: Adam learning rate.
    lr: float = setting(1e-3, check=positive, search=LogUniform(2e-4, 1e-2))
    #: Adam's L2 weight decay λ (Gal & Ghahramani: λ ties to the prior length-scale).
    weight_decay: float = setting(0.0, check=non_negative, search=LogUniform(1e-6, 1e-3))
    #: Learning-rate schedule over all steps: "constant" or "cosine" (half cosine to 0).
    lr_schedule: str = setting(
        "constant", check=one_of("constant", "cosine"), search=Choice(("constant", "cosine"))
    )
    #: Masked networks whose predictive gives the once-per-epoch validation NLL.
    val_samples: int = setting(16, check=at_least(1))
    #: Keep the epoch of lowest validation NLL (needs ``val``; else the last).
    keep_best: bool = setting(False)
    #: Regression: train on standardised inputs and targets, folded back into the weights.
    standardize: bool = setting(True)


class MCDropout(WeightSampler[MCDropoutConfig]):
    """Trained weights; each sampled network drops every masked layer's input units with prob. p.

    ``extra_metrics`` after ``fit``: ``train_loss`` (and ``train_acc``) under dropout noise,
    over the last epoch's minibatches.
    """

    name: ClassVar[str] = "mcdropout"
    Config: ClassVar[type] = MCDropoutConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "toy1d": {
            "epochs": 1000,
            "batch_size": 20,
            "masks_per_step": 20,
            "lr": 1e-2,
            "p": 0.1,
            "lr_schedule": "cosine",
        },
        "mnist5k-split": {"epochs": 10},
        "mnist5000": {"epochs": 20},
    }

    def __init__(
        self,
        target: nn.Module,
        config: MCDropoutConfig | None = None,
        *,
        task: Task | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(target, config, task=task, device=device)
        cfg = self.config
        #: ``weight`` parameter names of the masked layers, in order.
        self.masked: list[str] = self._masked_from_config()
        self.p = cfg.p
        self.weights: dict[str, Tensor] | None = None

    def _masked_from_config(self) -> list[str]:
        layers = parametric_layers(self.target)
        masked = [
            f"{name}.weight" for name, _ in layers[1 if self.config.skip_first_layer else 0 :]
        ]
        if not masked:
            raise UserError(
                "mcdropout: the target has no layer to mask; set mcdropout.skip_first_layer=false"
            )
        return masked

    # --- the noise model ------------------------------------------------------------
    def draw_masks(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Keep-masks ``[n, in]`` (1 = kept) per masked weight, drawn on the CPU."""
        shapes = self.param_shapes()
        return {
            name: torch.bernoulli(
                torch.full((n, shapes[name][1]), 1.0 - self.p), generator=generator
            )
            for name in self.masked
        }

    def apply_masks(
        self, weights: dict[str, Tensor], masks: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """Stacked weights ``[n, *shape]``: column/input channel j of masked weight W scaled
        by ``mask[:, j] / (1 − p)``; every other parameter repeated n times."""
        n = next(iter(masks.values())).shape[0]
        out = {}
        for name, w in weights.items():
            if name in masks:
                scale = masks[name].to(w.device, w.dtype) / (1.0 - self.p)
                out[name] = w.unsqueeze(0) * scale.view(n, 1, -1, *([1] * (w.dim() - 2)))
            else:
                out[name] = w.unsqueeze(0).expand(n, *w.shape)
        return out

    # --- the contract -----------------------------------------------------------------
    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Adam on the expected loss under dropout, K masks per step (module docstring)."""
        cfg = self.config
        self.p, self.masked = cfg.p, self._masked_from_config()
        x, y = (t.to(self.device) for t in as_tensors(train))
        k = cfg.masks_per_step
        slice_size = min(cfg.batch_size, len(x)) // k
        if slice_size < 1:
            raise UserError(
                f"mcdropout: cannot cut minibatches of {min(cfg.batch_size, len(x))} examples "
                f"into {k} slices; lower masks_per_step or raise batch_size"
            )
        task, scaling, ends = self.task, RegressionScaling(), ("", "")
        if not task.is_classification and cfg.standardize:
            first_masked = f"{parametric_layers(self.target)[0][0]}.weight" in self.masked
            inputs = not first_masked
            ends = linear_ends(self.target, x[:2], method=self.name, inputs=inputs)
            scaling = RegressionScaling.fit(x, y, inputs=inputs, targets=True)
            x, y = scaling.data(x, y)
            task = scaling.task(task)
        seeds = derive_seeds(seed, ("init", "data", "noise", "val"))
        start = initial_weights(self.target, [seeds["init"]])
        params = {name: v[0].to(self.device).requires_grad_() for name, v in start.items()}
        batches = MinibatchSampler(len(x), slice_size * k, [seeded_generator(seeds["data"])])
        noise = seeded_generator(seeds["noise"])

        def masked(p: dict[str, Tensor]) -> dict[str, Tensor]:
            return self.apply_masks(p, self.draw_masks(k, noise))

        def raw(p: dict[str, Tensor]) -> dict[str, Tensor]:
            if scaling.identity:
                return p
            stacked = {name: v.detach().unsqueeze(0).clone() for name, v in p.items()}
            scaling.fold(stacked, *ends, self.task)
            return {name: v[0] for name, v in stacked.items()}

        validate = None
        if val is not None:
            x_val, y_val = (t.to(self.device) for t in as_tensors(val))

            def validate(p: dict[str, Tensor]) -> tuple[dict[str, float], Tensor]:
                val_masks = self.draw_masks(cfg.val_samples, seeded_generator(seeds["val"]))
                weights = self.apply_masks(raw(p), val_masks)
                out = batched_predict(self.target, weights, x_val, memory_budget=VALIDATION_MEMORY)
                scores = predictive_scores(out, y_val, self.task)
                return scores, torch.tensor(scores["val_nll"])

        metrics = train_with_adam(
            self.target,
            params,
            masked,
            lambda: (batch.view(k, slice_size) for batch in batches.epoch()),
            x,
            y,
            task,
            method=self.name,
            epochs=cfg.epochs,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            lr_schedule=cfg.lr_schedule,
            reduction="mean",
            progress=progress,
            validate=validate,
            keep_best=cfg.keep_best,
        )
        self.weights = raw({name: v.detach() for name, v in params.items()})
        self.extra_metrics = dict(metrics)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``n`` masked copies of the trained weights, one mask per layer per network."""
        self.check_n(n)
        weights = self._fitted()
        return {
            k: v.contiguous()
            for k, v in self.apply_masks(weights, self.draw_masks(n, generator)).items()
        }

    def state_dict(self) -> dict:
        """Trained weights, p, and the names of the masked weights."""
        return {
            "weights": {k: v.detach().cpu() for k, v in self._fitted().items()},
            "p": self.p,
            "masked": list(self.masked),
        }

    def load_state_dict(self, state: dict) -> None:
        weights = state["weights"]
        shapes = self.param_shapes()
        if set(weights) != set(shapes) or any(weights[k].shape != shapes[k] for k in shapes):
            raise UserError(
                "mcdropout checkpoint does not match the target's parameters; "
                "load it with the target it was trained with"
            )
        self.weights = {k: weights[k].to(self.device) for k in shapes}
        self.p = float(state["p"])
        self.masked = list(state["masked"])

    def _fitted(self) -> dict[str, Tensor]:
        if self.weights is None:
            raise UserError("mcdropout is not fitted; call fit or load a checkpoint first")
        return self.weights
