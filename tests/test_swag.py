"""SWAG: the contract, the moments against the collected iterates, the schedule, learning."""

from __future__ import annotations

import dataclasses
import io
from collections import OrderedDict

import pytest
import torch
from tiny_configs import TINY as TINY_CONFIGS
from torch import nn
from torch.utils.data import TensorDataset

from uqbench.baselines.swag import SWAG, SWAGConfig
from uqbench.errors import FitDiverged, UserError
from uqbench.evaluation.harness import evaluate
from uqbench.functional import batched_predict
from uqbench.registry import load_method
from uqbench.testing import (
    check_sampler_contract,
    check_samples,
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
    with pytest.raises(UserError, match="swag.bn_examples"):
        SWAGConfig(bn_examples=-1)
    with pytest.raises(UserError, match="not fitted"):
        make_tiny_sampler(SWAG, overrides=TINY).sample(2)
    x, y = tiny_regression().tensors
    with pytest.raises(FitDiverged, match="SGD"):
        _regression_swag().fit(TensorDataset(x, torch.full_like(y, float("nan"))), seed=0)


# --- batch normalisation -------------------------------------------------------------


def _bn_target() -> nn.Sequential:
    """The tiny CNN with a batch-norm layer after its convolution."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 4, 3),
            bn=nn.BatchNorm2d(4),
            act=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * 5 * 5, 3),
        )
    )


@pytest.fixture(scope="module")
def bn_swag() -> SWAG:
    data = tiny_benchmark()
    torch.manual_seed(0)
    # 96 inputs in batches of 32: the average of the batch means is the overall mean
    config = dataclasses.replace(SWAGConfig(**TINY), bn_examples=96)
    swag = SWAG(_bn_target(), config, task=data.task)
    swag.fit(data.train, seed=0, val=data.val)
    return swag


def test_batch_norm_statistics_are_recomputed_for_every_sampled_network(bn_swag: SWAG):
    draw = bn_swag.sample(3, generator=torch.Generator().manual_seed(0))
    check_samples(draw, bn_swag.target, 3, device="cpu", label="swag")
    assert bn_swag.bn_inputs is not None and bn_swag.bn_inputs.shape[0] == 96
    for k in range(3):
        # by hand: the conv outputs of network k on the 96 inputs, per channel
        h = torch.nn.functional.conv2d(
            bn_swag.bn_inputs, draw["conv.weight"][k], draw["conv.bias"][k]
        )
        per_batch = h.reshape(3, 32, 4, -1).transpose(1, 2).reshape(3, 4, -1)
        torch.testing.assert_close(draw["bn.running_mean"][k], h.mean((0, 2, 3)), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            draw["bn.running_var"][k], per_batch.var(-1, correction=1).mean(0), atol=1e-5, rtol=1e-5
        )
    spread = draw["bn.running_mean"].std(0)
    assert bool((spread > 0).all())  # each network has its own statistics


def test_the_harness_scores_each_network_with_its_own_statistics(bn_swag: SWAG):
    draw = bn_swag.sample(3, generator=torch.Generator().manual_seed(1))
    x = tiny_images(20, seed=5).tensors[0]
    outputs = batched_predict(bn_swag.target, draw, x)
    for k in range(3):
        net = _bn_target()
        net.load_state_dict({name: v[k] for name, v in draw.items()}, strict=False)
        torch.testing.assert_close(outputs[k], net.eval()(x), atol=1e-5, rtol=1e-5)


def test_batch_norm_swag_round_trips_and_scores_end_to_end(bn_swag: SWAG):
    buffer = io.BytesIO()
    torch.save(bn_swag.state_dict(), buffer)
    buffer.seek(0)
    fresh = SWAG(_bn_target(), bn_swag.config, task=bn_swag.task)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    a = bn_swag.sample(2, generator=torch.Generator().manual_seed(3))
    b = fresh.sample(2, generator=torch.Generator().manual_seed(3))
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name])
    data = dataclasses.replace(tiny_benchmark(), make_target=_bn_target)
    result = evaluate(bn_swag, data, n_samples=8, seed=0)
    assert result.metrics["acc"] > 0.9 and result.metrics["swa:acc"] > 0.9


def test_methods_without_batch_norm_support_refuse_such_a_target():
    with pytest.raises(UserError, match="ensemble: the target has batch-norm layers \\(bn\\)"):
        load_method("ensemble")(_bn_target())
    swag = SWAG(_bn_target())
    draw = {k: v.unsqueeze(0) for k, v in swag.target.named_parameters()}
    with pytest.raises(UserError, match="missing batch-norm statistic bn.running_mean"):
        check_samples(draw, swag.target, 1, device="cpu", label="swag")
