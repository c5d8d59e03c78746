"""Regression metrics: the law of total variance over sampled networks.

Network k predicts a Gaussian N(μ_k(x), σ_k²(x)) (σ_k² fixed at the task's ``noise_std²``
or, for heteroscedastic nets, exp of its second output; see
:func:`uqbench.training.regression_outputs`). Over the n sampled networks

    mean      m(x)   = (1/n) Σ_k μ_k(x)
    aleatoric a(x)   = (1/n) Σ_k σ_k²(x)
    epistemic e(x)   = (1/n) Σ_k (μ_k(x) − m(x))²     (population variance over networks)
    predictive v(x)  = a(x) + e(x)

The predictive distribution used for the NLL is the moment-matched Gaussian N(m, v) (the
exact predictive is a mixture of n Gaussians); the coverage of central intervals uses the
exact mixture (:func:`coverage`). Everything is computed in float64.
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


#: Central predictive intervals whose coverage the harness reports (one and two sigma).
COVERAGE_LEVELS = (0.68, 0.95)


def mixture_cdf(outputs: Tensor, task: Task, targets: Tensor) -> Tensor:
    """F(y_i) = (1/n) Σ_k Φ((y_i − μ_k(x_i)) / σ_k(x_i)), the exact predictive CDF of the
    equal-weight mixture of the n networks' Gaussians at each target, ``[N]``."""
    mean_k, log_var_k = regression_outputs(outputs.detach().to("cpu", torch.float64), task)
    z = (_targets(targets).unsqueeze(0) - mean_k) / (0.5 * log_var_k).exp()
    return torch.special.ndtr(z).mean(0)


def coverage(
    outputs: Tensor,
    task: Task,
    x: Tensor,
    targets: Tensor,
    train_range: tuple[float, float] | None = None,
    levels: tuple[float, ...] = COVERAGE_LEVELS,
) -> dict[str, float]:
    """Share of test points inside the central ``level`` interval of the predictive.

    The predictive is the exact mixture (1/n) Σ_k N(μ_k, σ_k²), not its moment-matched
    Gaussian: its central interval [q_{(1−level)/2}, q_{(1+level)/2}] holds y exactly when
    the mixture CDF F(y) lies in [(1−level)/2, (1+level)/2] (F is continuous and
    increasing), so no quantile needs solving. For one network, or networks that agree,
    it is the Gaussian interval m ± 0.994 σ (68 %) / m ± 1.960 σ (95 %).

    Keys: ``coverage68``, ``coverage95`` over all test points, and with ``train_range``
    (1-D inputs) ``coverage68_in`` / ``_out`` etc. for points inside / outside the closed
    interval; a side without points is left out. A calibrated predictive reads ≈ the
    level; out of the training range a band that does not open up reads far below it.
    """
    cdf = mixture_cdf(outputs, task, targets)
    masks = {"": torch.ones_like(cdf, dtype=torch.bool)}
    if train_range is not None:
        lo, hi = train_range
        xs = torch.as_tensor(x).detach().to("cpu", torch.float64).reshape(len(cdf), -1)[:, 0]
        inside = (xs >= lo) & (xs <= hi)
        masks.update({"_in": inside, "_out": ~inside})
    out: dict[str, float] = {}
    for level in levels:
        tail = (1.0 - level) / 2
        covered = ((cdf >= tail) & (cdf <= 1.0 - tail)).double()
        for suffix, mask in masks.items():
            if mask.any():
                out[f"coverage{round(100 * level)}{suffix}"] = covered[mask].mean().item()
    return out
