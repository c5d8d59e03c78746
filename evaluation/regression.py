"""Regression metrics: the law of total variance over sampled networks.

Network k predicts a Gaussian N(μ_k(x), σ_k²(x)) (σ_k² fixed at the task's ``noise_std²``
or, for heteroscedastic nets, exp of its second output; see
:func:`uqbench.training.regression_outputs`). Over the n sampled networks

    mean      m(x)   = (1/n) Σ_k μ_k(x)
    aleatoric a(x)   = (1/n) Σ_k σ_k²(x)
    epistemic e(x)   = (1/n) Σ_k (μ_k(x) − m(x))²     (population variance over networks)
    predictive v(x)  = a(x) + e(x)

The predictive distribution used for the NLL is the moment-matched Gaussian N(m, v) (the
exact predictive is a mixture of n Gaussians). Everything is computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from uqbench.sampler import Task
from uqbench.training import regression_outputs


@dataclass(frozen=True)
class GaussianPredictive:
    """Per-input predictive moments, each ``[N]`` float64."""

    mean: Tensor
    aleatoric_var: Tensor
    epistemic_var: Tensor

    @property
    def total_var(self) -> Tensor:
        return self.aleatoric_var + self.epistemic_var

    @property
    def epistemic_std(self) -> Tensor:
        return self.epistemic_var.sqrt()

    @property
    def total_std(self) -> Tensor:
        return self.total_var.sqrt()


def gaussian_predictive(outputs: Tensor, task: Task) -> GaussianPredictive:
    """Moments of the predictive from per-network outputs ``[n, N, 1 or 2]`` (see module doc)."""
    mean_k, log_var_k = regression_outputs(outputs.detach().to("cpu", torch.float64), task)
    return GaussianPredictive(
        mean=mean_k.mean(0),
        aleatoric_var=log_var_k.exp().mean(0),
        epistemic_var=mean_k.var(0, correction=0),
    )


def _targets(targets: Tensor) -> Tensor:
    return torch.as_tensor(targets).detach().to("cpu", torch.float64).reshape(-1)


def rmse(pred: GaussianPredictive, targets: Tensor) -> float:
    """sqrt((1/N) Σ_i (m(x_i) − y_i)²): error of the predictive mean."""
    return (pred.mean - _targets(targets)).pow(2).mean().sqrt().item()


def gaussian_nll(pred: GaussianPredictive, targets: Tensor) -> float:
    """(1/N) Σ_i [½ log(2π v_i) + (y_i − m_i)² / (2 v_i)] under N(m, v), natural log."""
    v = pred.total_var
    nll = 0.5 * (math.log(2 * math.pi) + v.log() + (_targets(targets) - pred.mean).pow(2) / v)
    return nll.mean().item()


def std_inside_outside(
    pred: GaussianPredictive, x: Tensor, train_range: tuple[float, float]
) -> dict[str, float]:
    """``{"std_in", "std_out"}``: mean *epistemic* std sqrt(e(x)) over test inputs inside /
    outside the closed interval ``train_range`` (1-D inputs).

    Epistemic, not predictive: with a fixed known noise (toy1d: σ = 3) the predictive std
    is dominated by the noise and barely moves outside the data, while the networks'
    disagreement is what should grow there. A key is left out when no input falls on
    that side.
    """
    lo, hi = train_range
    xs = torch.as_tensor(x).detach().to("cpu", torch.float64).reshape(len(pred.mean), -1)[:, 0]
    inside = (xs >= lo) & (xs <= hi)
    std = pred.epistemic_std
    out: dict[str, float] = {}
    if inside.any():
        out["std_in"] = std[inside].mean().item()
    if (~inside).any():
        out["std_out"] = std[~inside].mean().item()
    return out
