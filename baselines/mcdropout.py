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
mask would wipe out whole) or, for 1-D regression, the single input unit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from uqbench.errors import UserError
from uqbench.sampler import Progress, Task, WeightSampler
from uqbench.targets import parametric_layers
from uqbench.training import as_tensors, seeded_generator

from ._adam_training import initial_weights, sliced_batches, train_with_adam


@dataclass
class MCDropoutConfig:
    """Settings of :class:`MCDropout` (defaults: the small CNN on MNIST-5k)."""

    #: Drop probability p of each input unit/channel of a masked layer.
    p: float = 0.25
    #: Leave the first Linear/Conv2d layer unmasked (its input is the raw data).
    skip_first_layer: bool = True
    #: K: masks drawn per training step, each on its own slice of the minibatch.
    masks_per_step: int = 8
    #: Passes over the training set.
    epochs: int = 20
    #: Minibatch size (cut into ``masks_per_step`` slices).
    batch_size: int = 64
    #: Adam learning rate.
    lr: float = 1e-3
    #: Adam's L2 weight decay λ.
    weight_decay: float = 0.0
    #: Anneal the learning rate to 0 with a half cosine over all steps.
    cosine: bool = False


class MCDropout(WeightSampler):
    """Trained weights; each sampled network drops every masked layer's input units with prob. p.

    ``extra_metrics`` after ``fit``: ``train_loss`` (and ``train_acc``) under dropout noise,
    over the last epoch's minibatches.
    """

    name: ClassVar[str] = "mcdropout"
    Config: ClassVar[type] = MCDropoutConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "epochs": 8,
            "batch_size": 32,
            "masks_per_step": 4,
            "lr": 1e-2,
            "p": 0.1,
            "cosine": True,
        },
        "toy1d": {
            "epochs": 1000,
            "batch_size": 20,
            "masks_per_step": 20,
            "lr": 1e-2,
            "p": 0.1,
            "cosine": True,
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
        if not 0.0 <= cfg.p < 1.0:
            raise UserError(f"mcdropout.p={cfg.p}: the drop probability must be in [0, 1)")
        if cfg.masks_per_step < 1 or cfg.epochs < 1 or cfg.batch_size < 1:
            raise UserError("mcdropout.masks_per_step, epochs and batch_size must be >= 1")
        if cfg.lr <= 0 or cfg.weight_decay < 0:
            raise UserError("mcdropout.lr must be > 0 and mcdropout.weight_decay >= 0")
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
        torch.manual_seed(seed)
        x, y = (t.to(self.device) for t in as_tensors(train))
        start = initial_weights(self.target, [seed])
        params = {k: v[0].to(self.device).requires_grad_() for k, v in start.items()}
        order = seeded_generator(seed)
        noise = seeded_generator(seed + 1)

        def masked(p: dict[str, Tensor]) -> dict[str, Tensor]:
            return self.apply_masks(p, self.draw_masks(cfg.masks_per_step, noise))

        metrics = train_with_adam(
            self.target,
            params,
            masked,
            lambda: sliced_batches(len(x), cfg.masks_per_step, cfg.batch_size, order),
            x,
            y,
            self.task,
            epochs=cfg.epochs,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            cosine=cfg.cosine,
            reduction="mean",
            progress=progress,
        )
        self.weights = {k: v.detach() for k, v in params.items()}
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
