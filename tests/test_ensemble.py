"""Deep ensemble: the sampler contract, members, and does-it-learn checks on tiny data."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tiny_configs import TINY
from torch.utils.data import TensorDataset

from uqbench.baselines.ensemble import DeepEnsemble
from uqbench.errors import UserError
from uqbench.functional import stacked_forward
from uqbench.sampler import Task
from uqbench.targets import toy1d_mlp
from uqbench.testing import make_tiny_sampler, tiny_benchmark
from uqbench.training import as_tensors


@pytest.fixture(scope="module")
def fitted() -> DeepEnsemble:
    sampler = make_tiny_sampler(DeepEnsemble, overrides=TINY["ensemble"])
    sampler.fit(tiny_benchmark().train, seed=0)
    return sampler


def test_members_differ_pairwise(fitted: DeepEnsemble) -> None:
    m = fitted.config.members
    flat = torch.cat([v.flatten(1) for v in fitted.sample(m).values()], dim=1)
    gaps = torch.cdist(flat, flat)
    off_diagonal = gaps[~torch.eye(m, dtype=torch.bool)]
    # Independent initialisations: every pair of members is far apart, not a copy.
    assert off_diagonal.min() > 0.1 * flat.norm(dim=1).mean()


def test_sample_returns_first_members(fitted: DeepEnsemble) -> None:
    m = fitted.config.members
    everything = fitted.sample(m)
    some = fitted.sample(2, generator=torch.Generator().manual_seed(3))
    for name, value in some.items():
        torch.testing.assert_close(value, everything[name][:2], rtol=0, atol=0)


def test_more_networks_than_members_is_a_user_error(fitted: DeepEnsemble) -> None:
    m = fitted.config.members
    assert fitted.max_samples == m
    with pytest.raises(UserError, match=f"only {m}"):
        fitted.sample(m + 1)


def test_unfitted_and_bad_config_are_user_errors() -> None:
    data = tiny_benchmark()
    with pytest.raises(UserError, match="not fitted"):
        DeepEnsemble(data.make_target(), task=data.task).sample(1)
    with pytest.raises(UserError, match="members"):
        DeepEnsemble(data.make_target(), DeepEnsemble.Config(members=0), task=data.task)


def test_stacked_training_equals_training_each_member_alone() -> None:
    """One Adam over stacked members == independent Adams: member 0 of a 3-member
    ensemble is the single member of a 1-member ensemble with the same seed."""
    data = tiny_benchmark()
    config = dataclasses.replace(DeepEnsemble.make_config(), **{**TINY["ensemble"], "epochs": 2})
    three = DeepEnsemble(data.make_target(), dataclasses.replace(config, members=3), task=data.task)
    one = DeepEnsemble(data.make_target(), dataclasses.replace(config, members=1), task=data.task)
    three.fit(data.train, seed=5)
    one.fit(data.train, seed=5)
    for name, value in one.sample(1).items():
        torch.testing.assert_close(value[0], three.sample(1)[name][0], rtol=1e-4, atol=1e-5)


def test_learns_tiny_images(fitted: DeepEnsemble) -> None:
    data = tiny_benchmark()
    x, y = as_tensors(data.test)
    probs = stacked_forward(fitted.target, fitted.sample(fitted.config.members), x).softmax(-1)
    ensemble_acc = (probs.mean(0).argmax(-1) == y).float().mean().item()
    chance = 1 / data.task.num_classes
    assert ensemble_acc >= 0.95, f"ensemble accuracy {ensemble_acc:.3f} (chance {chance:.2f})"


def toy1d_data(seed: int = 0) -> tuple[TensorDataset, torch.Tensor]:
    """The toy1d benchmark's recipe: 20 points x ~ U[-4, 4], y = x^3 + N(0, 3^2); grid [-6, 6]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(20, 1, generator=g) * 8 - 4
    y = x[:, 0] ** 3 + 3 * torch.randn(20, generator=g)
    return TensorDataset(x, y), torch.linspace(-6, 6, 121).unsqueeze(1)


def test_toy1d_fits_and_is_unsure_outside_the_data() -> None:
    train, grid = toy1d_data()
    sampler = DeepEnsemble(
        toy1d_mlp(),
        DeepEnsemble.make_config(benchmark="toy1d"),
        task=Task("regression", noise_std=3.0),
    )
    sampler.fit(train, seed=0)
    mean_k = stacked_forward(sampler.target, sampler.sample(sampler.config.members), grid)[..., 0]
    inside = grid[:, 0].abs() <= 4
    rmse_in = (mean_k.mean(0) - grid[:, 0] ** 3)[inside].pow(2).mean().sqrt().item()
    std = mean_k.std(0, correction=0)
    std_in, std_out = std[inside].mean().item(), std[~inside].mean().item()
    # Error of the mean inside the data stays below the noise std (3) plus a margin.
    assert rmse_in < 2 * 3.0, f"rmse inside the training range {rmse_in:.2f}"
    assert std_out >= 2 * std_in, f"epistemic std out {std_out:.3f} vs in {std_in:.3f}"
    assert math.isfinite(std_out)
