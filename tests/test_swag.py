"""SWAG: the contract, the moments against the collected iterates, the schedule, learning."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict

import pytest
import torch
from tiny_configs import TINY as TINY_CONFIGS
from torch import nn
from torch.utils.data import TensorDataset

from uqbench.baselines.swag import SWAG, SWAGConfig
from uqbench.errors import FitDiverged, UserError
from uqbench.functional import batched_predict
from uqbench.registry import load_method
from uqbench.testing import (
    check_sampler_contract,
    make_tiny_sampler,
    tiny_benchmark,
    tiny_images,
    tiny_regression,
)

TINY = TINY_CONFIGS["swag"]


def test_contract():
    check_sampler_contract(SWAG, overrides=TINY)


def test_registered_as_swag():
    assert load_method("swag") is SWAG


def _regression_swag(**changes) -> SWAG:
    sampler = make_tiny_sampler(SWAG, "regression", overrides=TINY)
    sampler.config = dataclasses.replace(sampler.config, **changes)
    return sampler


def test_moments_and_covariance_are_those_of_the_collected_iterates():
    data = tiny_benchmark("regression")
    cfg = SWAGConfig(epochs=10, burn_in=4, rank=6, batch_size=16, lr=3e-3, swa_lr=1e-3)
    iterates = torch.stack(
        [t.double() for t, _ in _regression_swag(**vars(cfg)).trajectory(data.train, seed=3)]
    )
    assert iterates.shape[0] == 6  # one collection per epoch after the burn-in
    swag = _regression_swag(**vars(cfg))
    swag.fit(data.train, seed=3)
    state = swag.state_dict()
    torch.testing.assert_close(state["mean"].double(), iterates.mean(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(
        state["deviations"].double(), iterates - iterates.mean(0), rtol=0, atol=1e-6
    )
    # T = K: Σ_diag is the (biased) variance, D Dᵀ/(K-1) the sample covariance of the iterates.
    expected = 0.5 * (torch.diag(iterates.var(0, correction=0)) + torch.cov(iterates.T)) / 2
    torch.testing.assert_close(swag.covariance(), expected, rtol=1e-3, atol=1e-9)
    draw = swag.sample(60000, generator=torch.Generator().manual_seed(0))
    flat = torch.cat([v.flatten(1) for v in draw.values()], dim=1).double()
    empirical = torch.cov(flat.T)
    assert (empirical - expected).norm() / expected.norm() < 0.03
    assert ((flat.mean(0) - iterates.mean(0)).abs() / expected.diagonal().sqrt()).max() < 0.05


def test_only_the_last_rank_iterates_form_the_low_rank_part():
    data = tiny_benchmark("regression")
    cfg = {"epochs": 10, "burn_in": 2, "rank": 3, "batch_size": 16}
    iterates = torch.stack([t for t, _ in _regression_swag(**cfg).trajectory(data.train, seed=0)])
    swag = _regression_swag(**cfg)
    swag.fit(data.train, seed=0)
    assert len(iterates) == 8 and swag.extra_metrics["collected"] == 8
    assert swag.extra_metrics["rank"] == 3
    torch.testing.assert_close(
        swag.state_dict()["deviations"], iterates[-3:] - iterates.mean(0), rtol=0, atol=1e-6
    )
    diag_only = _regression_swag(**cfg, covariance="diag")
    diag_only.fit(data.train, seed=0)
    expected = 0.5 * torch.diag(iterates.double().var(0, correction=0))
    torch.testing.assert_close(diag_only.covariance(), expected, rtol=1e-3, atol=1e-9)


def test_learning_rate_schedule_by_hand():
    swag = make_tiny_sampler(SWAG, overrides=TINY)
    swag.config = SWAGConfig(epochs=8, burn_in=4, lr=0.05, swa_lr=0.01)
    assert swag.learning_rate(0, 0, 10) == pytest.approx(0.05)
    assert swag.learning_rate(1, 9, 10) == pytest.approx(0.05)  # first half of the burn-in
    assert swag.learning_rate(3, 0, 10) == pytest.approx(0.03)  # 3/4 of the way: halfway down
    assert swag.learning_rate(5, 3, 10) == pytest.approx(0.01)  # constant collection
    swag.config = dataclasses.replace(swag.config, collect_schedule="cyclical")
    assert swag.learning_rate(5, 4, 10) == pytest.approx(0.03)
    assert swag.learning_rate(5, 9, 10) == pytest.approx(0.01)  # collected at α_SWA


def test_learns_and_sampling_does_not_lose_to_the_swa_mean():
    data = tiny_benchmark()
    swag = make_tiny_sampler(SWAG, overrides=TINY)
    reports: list[dict] = []
    swag.fit(
        data.train,
        seed=0,
        val=tiny_images(90, seed=5),
        progress=lambda step, total, **m: reports.append(m),
    )
    assert {"loss", "val_nll"} <= set(reports[0]) and "swa_val_nll" in reports[-1]
    assert swag.extra_metrics["swa_val_nll"] < 0.3
    x, y = data.test.tensors
    probs = batched_predict(
        swag.target, swag.sample(32), x, transform=lambda o: o.softmax(-1)
    ).mean(0)
    swa = batched_predict(swag.target, swag.reference_views()["swa"].sample(1), x)[0]
    acc = (probs.argmax(-1) == y).float().mean().item()
    swa_acc = (swa.argmax(-1) == y).float().mean().item()
    assert swa_acc > 0.95 and acc >= swa_acc - 0.01


def test_bad_input_and_divergence():
    with pytest.raises(UserError, match="burn_in"):
        SWAGConfig(epochs=5, burn_in=5)
    with pytest.raises(UserError, match="swag.scale"):
        SWAGConfig(scale=0.0)
    bn = nn.Sequential(
        OrderedDict(fc=nn.Linear(1, 4), bn=nn.BatchNorm1d(4, affine=False), out=nn.Linear(4, 1))
    )
    with pytest.raises(UserError, match="batch-norm"):
        SWAG(bn)
    with pytest.raises(UserError, match="not fitted"):
        make_tiny_sampler(SWAG, overrides=TINY).sample(2)
    x, y = tiny_regression().tensors
    with pytest.raises(FitDiverged, match="SGD"):
        _regression_swag().fit(TensorDataset(x, torch.full_like(y, float("nan"))), seed=0)
