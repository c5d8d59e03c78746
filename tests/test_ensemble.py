"""Deep ensemble: the sampler contract, members, and does-it-learn checks on tiny data."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from tiny_configs import TINY
from torch.utils.data import TensorDataset

from uqbench.baselines.ensemble import DeepEnsemble
from uqbench.errors import FitDiverged, UserError
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
        dataclasses.replace(DeepEnsemble.make_config(benchmark="toy1d"), epochs=300),
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


def _poisoned(data: TensorDataset) -> TensorDataset:
    x, y = (t.clone() for t in data.tensors)
    x[5] = float("nan")
    return TensorDataset(x, y)


def test_non_finite_loss_is_fit_diverged_naming_loss_and_step() -> None:
    data = tiny_benchmark()
    sampler = make_tiny_sampler(DeepEnsemble, overrides=TINY["ensemble"])
    with pytest.raises(FitDiverged, match=r"ensemble: the training loss became nan at step \d+"):
        sampler.fit(_poisoned(data.train), seed=0)
    huge = make_tiny_sampler(DeepEnsemble, overrides={**TINY["ensemble"], "lr": 1e30})
    with pytest.raises(FitDiverged, match=r"ensemble: the training loss became \w+ at step \d+"):
        huge.fit(data.train, seed=0)


def test_bad_settings_name_the_setting() -> None:
    for key, value in (("lr", -1.0), ("lr", float("inf")), ("epochs", 0), ("lr_schedule", "x")):
        with pytest.raises(UserError, match=f"ensemble.{key}="):
            DeepEnsemble.Config(**{key: value})


def test_validation_reported_once_per_epoch_and_keep_best() -> None:
    data = tiny_benchmark()
    calls: list[dict] = []
    overrides = {**TINY["ensemble"], "keep_best": True}
    sampler = make_tiny_sampler(DeepEnsemble, overrides=overrides)
    val = TensorDataset(*(t[:60] for t in data.test.tensors))
    sampler.fit(data.train, seed=0, val=val, progress=lambda s, t, **m: calls.append(m))
    reports = [m for m in calls if "val_nll" in m]
    assert len(reports) == TINY["ensemble"]["epochs"]
    assert all(set(m) == {"val_nll", "val_acc"} for m in reports)
    assert reports[-1]["val_acc"] >= 0.9 and reports[-1]["val_nll"] < reports[0]["val_nll"]
    assert 1 <= sampler.extra_metrics["best_epoch"] <= TINY["ensemble"]["epochs"]


def test_heteroscedastic_members_learn_mean_and_variance() -> None:
    """Lakshminarayanan et al. (2017): each member outputs a mean and a variance."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, generator=g) * 4 - 2
    noise_std = 0.05 + 0.25 * (x[:, 0] + 2) / 4  # grows from 0.05 to 0.3 across the range
    y = torch.sin(2 * x[:, 0]) + noise_std * torch.randn(200, generator=g)
    task = Task("regression", heteroscedastic=True)
    target = toy1d_mlp(hidden=32, outputs=2)
    config = DeepEnsemble.Config(members=3, epochs=150, batch_size=32, lr=1e-2)
    sampler = DeepEnsemble(target, config, task=task)
    sampler.fit(TensorDataset(x, y), seed=0)
    grid = torch.tensor([[-1.8], [1.8]])
    out = stacked_forward(sampler.target, sampler.sample(3), grid)
    std = (0.5 * out[..., 1]).exp().mean(0)
    # The learned noise std follows the truth (about 0.06 and 0.29 at the ends).
    assert std[0] < 0.15 < 0.2 < std[1] < 0.45, std
    torch.testing.assert_close(out[..., 0].mean(0), torch.sin(2 * grid[:, 0]), atol=0.15, rtol=0)
