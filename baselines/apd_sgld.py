r"""APD's teacher: C chains of stochastic gradient Langevin dynamics (Welling & Teh 2011).

Per chain, with prior N(0, σ_p² I), N training examples and temperature T::

    U(θ)  = N · L̄_B(θ) + ‖θ‖² / (2σ_p²)          L̄_B = mean NLL of a minibatch B
    θ    ← θ − (ε/2) ∇U(θ) + √(εT) ξ,  ξ ~ N(0, I)

in the per-example form of the APD authors' ``NoisedSGD`` with η = εN/2 (``step_size``,
an SGD learning rate on the mean loss): ``θ ← θ − η (∇L̄_B + θ/(Nσ_p²)) + √(2ηT/N) ξ``.
Their MNIST setting (``lr`` 0.05, i.e. η = 0.025, and weight decay 0.001 at N = 50,000,
i.e. σ_p = 1/√(0.001 · 50,000) ≈ 0.14) is the default of :class:`~uqbench.baselines.apd.APD`.

All chains run in one vmapped forward, chain c on its own minibatch; the loss of each
chain is :func:`uqbench.training.per_net_loss`, the per-network task loss
the other baselines train with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from uqbench.functional import fan_in, stacked_forward_per_net
from uqbench.sampler import Task
from uqbench.targets import parametric_layers
from uqbench.training import per_net_loss


def initial_chains(
    target: nn.Module, names: list[str], chains: int, gen: torch.Generator
) -> Tensor:
    """``[chains, D]`` flat weights in the order of ``names``: every weight and bias
    ~ U(−1/√fan_in, 1/√fan_in), PyTorch's default Linear/Conv2d initialisation."""
    parts = {}
    for name, module in parametric_layers(target):
        bound = 1.0 / math.sqrt(fan_in(module.weight.shape))
        for pname, p in module.named_parameters(recurse=False):
            u = torch.rand(chains, p.numel(), generator=gen, device=gen.device)
            parts[f"{name}.{pname}"] = (2 * u - 1) * bound
    return torch.cat([parts[k] for k in names], dim=1)


class SGLDChains:
    """C chains θ ``[C, D]`` and one SGLD step on per-chain minibatches."""

    def __init__(
        self,
        target: nn.Module,
        unflatten,
        theta: Tensor,
        task: Task,
        *,
        n_train: int,
        step_size: float,
        prior_std: float,
        temperature: float,
        rng: torch.Generator,
    ) -> None:
        self.target, self.unflatten, self.theta, self.task = target, unflatten, theta, task
        self.step_size = step_size
        self.noise_std = math.sqrt(2 * step_size * temperature / n_train)
        self.decay = 1.0 / (n_train * prior_std**2)
        self.rng = rng

    def step(self, xb: Tensor, yb: Tensor) -> Tensor:
        """One update, chain c on ``xb[c], yb[c]``; returns each chain's mean minibatch NLL."""
        leaf = self.theta.detach().requires_grad_()
        outputs = stacked_forward_per_net(self.target, self.unflatten(leaf), xb)
        loss = per_net_loss(outputs, yb, self.task)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        with torch.no_grad():
            theta = self.theta - self.step_size * (grad + self.decay * self.theta)
            noise = torch.randn(theta.shape, generator=self.rng, device=theta.device)
            self.theta = theta + self.noise_std * noise
        return loss.detach()
