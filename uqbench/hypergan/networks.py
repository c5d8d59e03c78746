"""HyperGAN's networks: the mixer Q, the per-layer generators G_i and the code discriminator D,
plus where each generator's output goes in the target (:func:`layer_specs`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from uqbench.functional import fan_in
from uqbench.targets import parametric_layers


def _mlp_block(d_in: int, d_out: int, activation: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), activation)


class Mixer(nn.Module):
    """Q: noise [n, noise_dim] -> per-layer codes [n, N, d] (MLP, batch-norm + ReLU)."""

    def __init__(self, noise_dim: int, hidden: int, n_layers: int, code_dim: int) -> None:
        super().__init__()
        self.n_layers, self.code_dim = n_layers, code_dim
        self.body = nn.Sequential(
            _mlp_block(noise_dim, hidden, nn.ReLU()), _mlp_block(hidden, hidden, nn.ReLU())
        )
        self.head = nn.Linear(hidden, n_layers * code_dim)

    def forward(self, s: Tensor) -> Tensor:
        return self.head(self.body(s)).view(-1, self.n_layers, self.code_dim)


class LayerGenerator(nn.Module):
    """G_i as in the paper: code [n, d] -> Linear, batch-norm, ELU -> Linear -> flat weight
    and bias of one target layer [n, P].

    The last Linear is an ordinary layer with its own trainable bias (the part all
    networks share), both at the generators' learning rate. :meth:`rescale_output`
    multiplies its initial weight and bias once, so the first generated weights sit at a
    chosen fraction of Kaiming's scale; afterwards it trains like any Linear.
    """

    def __init__(self, code_dim: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.body = _mlp_block(code_dim, hidden, nn.ELU())
        self.head = nn.Linear(hidden, n_out)

    def forward(self, z: Tensor, n: int | None = None) -> Tensor:
        """Flat parameters of the first ``n`` codes (all by default); the body sees all."""
        return self.head(self.body(z)[:n])

    @torch.no_grad()
    def rescale_output(self, factor: float) -> None:
        """Multiply the output (the head's weight and bias) by ``factor``."""
        self.head.weight.mul_(factor)
        self.head.bias.mul_(factor)

    def shared_parameters(self) -> list[nn.Parameter]:
        """The output bias: the part of the generated weights that no code changes."""
        return [self.head.bias]


class ScaledLayerGenerator(LayerGenerator):
    """G_i with output ``scale * (A h) + mean``: a fixed factor on the code-dependent part and
    the shared bias ``mean`` in the target's weight units, so it can get a learning rate of
    its own (``lr_mean``, a step size on the weights themselves)."""

    def __init__(self, code_dim: int, hidden: int, n_out: int) -> None:
        nn.Module.__init__(self)
        self.body = _mlp_block(code_dim, hidden, nn.ELU())
        self.head = nn.Linear(hidden, n_out, bias=False)
        self.mean = nn.Parameter(torch.zeros(n_out))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, z: Tensor, n: int | None = None) -> Tensor:
        return self.scale * self.head(self.body(z)[:n]) + self.mean

    @torch.no_grad()
    def rescale_output(self, factor: float) -> None:
        self.scale.mul_(factor)
        self.mean.mul_(factor)

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.mean]


class Discriminator(nn.Module):
    """D: code [m, d] -> logit that the code came from the prior N(0, I_d)."""

    def __init__(self, code_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(code_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


@dataclass(frozen=True)
class LayerSpec:
    """Where one generator's output goes: the layer, its parameter names, shapes, sizes."""

    layer: str
    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    kaiming_std: float

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)


def layer_specs(target: nn.Module) -> list[LayerSpec]:
    """One spec per Linear / Conv2d layer of ``target`` (weight, then bias if any)."""
    specs = []
    for layer_name, module in parametric_layers(target):
        own = list(module.named_parameters(recurse=False))
        names = tuple(f"{layer_name}.{p}" for p, _ in own)
        shapes = tuple(v.shape for _, v in own)
        std = math.sqrt(2.0 / fan_in(module.weight.shape))
        specs.append(LayerSpec(layer_name, names, shapes, std))
    return specs


def code_moment_loss(codes: Tensor) -> Tensor:
    """Mixer pre-training loss: ||mean||^2 + ||cov - I||_F^2 per layer, summed over layers.

    ``codes``: [n, N, d]; mean and covariance are taken over the n draws.
    """
    mean = codes.mean(0)
    centred = codes - mean
    cov = torch.einsum("nla,nlb->lab", centred, centred) / (codes.shape[0] - 1)
    eye = torch.eye(codes.shape[-1], device=codes.device, dtype=codes.dtype)
    return mean.pow(2).sum() + (cov - eye).pow(2).sum()
