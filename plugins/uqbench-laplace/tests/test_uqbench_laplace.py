"""The laplace plugin: uqbench's contract, and laplace-torch's posterior reached exactly.

On a regression net the last layer is linear in its features h(x), so its Gauss-Newton
matrix is exact and known by hand: with features φ = [h, 1] and noise σ, the posterior
precision of (weight, bias) is P = ΦᵀΦ / σ² + δ I (dense), or, Kronecker-factored with
one output, the weight block hᵀh/σ² + δ I and the bias N/σ² + δ (KFAC drops the
weight-bias cross term). The tests check the samples' covariance against those.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset
from uqbench_laplace import LaplaceConfig, LastLayerLaplace

from uqbench.errors import FitDiverged, UserError
from uqbench.functional import batched_predict
from uqbench.registry import load_method
from uqbench.sampler import Task
from uqbench.testing import (
    check_sampler_contract,
    make_tiny_sampler,
    tiny_benchmark,
    tiny_images,
    tiny_regression,
)

#: Settings for seconds-long fits on the tiny data (a test fixture, not a preset).
TINY = {"epochs": 8, "batch_size": 32, "lr": 1e-2, "val_samples": 8, "grid_size": 5}


def test_contract():
    check_sampler_contract(LastLayerLaplace, overrides=TINY)


def test_registered_as_laplace():
    assert load_method("laplace") is LastLayerLaplace


def _fit_regression(hessian: str) -> tuple[LastLayerLaplace, torch.Tensor]:
    data = tiny_benchmark("regression")
    sampler = make_tiny_sampler(LastLayerLaplace, "regression", overrides=TINY)
    sampler.config = LaplaceConfig(**{**sampler.config.__dict__, "hessian": hessian})
    sampler.fit(data.train, seed=0)
    weights = sampler.map_weights()
    x, _ = data.train.tensors
    with torch.no_grad():
        hidden = torch.tanh(x @ weights["fc1.weight"].T + weights["fc1.bias"])
    return sampler, hidden.double()


def _sampled_last_layer(sampler: LastLayerLaplace, n: int) -> torch.Tensor:
    draw = sampler.sample(n, generator=torch.Generator().manual_seed(0))
    return torch.cat([draw["fc2.weight"].flatten(1), draw["fc2.bias"]], dim=1).double()


def test_full_posterior_is_the_exact_gauss_newton_posterior():
    sampler, hidden = _fit_regression("full")
    sigma2 = sampler.task.noise_std**2
    delta = sampler.extra_metrics["prior_precision"]
    phi = torch.cat([hidden, torch.ones(len(hidden), 1, dtype=hidden.dtype)], dim=1)
    precision = phi.T @ phi / sigma2 + delta * torch.eye(phi.shape[1], dtype=phi.dtype)
    scale = sampler.state_dict()["scale"].double()
    covariance = torch.linalg.inv(precision)
    assert (scale @ scale.T - covariance).norm() / covariance.norm() < 1e-3  # float32 factors
    samples = _sampled_last_layer(sampler, 40000)
    map_last = torch.cat(
        [sampler.map_weights()["fc2.weight"].flatten(), sampler.map_weights()["fc2.bias"]]
    ).double()
    spread = torch.linalg.inv(precision).diagonal().sqrt()
    assert ((samples.mean(0) - map_last).abs() / spread).max() < 0.05  # 10 s.e. at n=40000
    empirical = torch.cov(samples.T)
    rel = (empirical.diagonal() / torch.linalg.inv(precision).diagonal() - 1).abs().max()
    assert rel < 0.05


def test_kron_posterior_matches_kfac_by_hand():
    sampler, hidden = _fit_regression("kron")
    sigma2 = sampler.task.noise_std**2
    delta = sampler.extra_metrics["prior_precision"]
    weight_precision = hidden.T @ hidden / sigma2 + delta * torch.eye(hidden.shape[1]).double()
    bias_variance = 1.0 / (len(hidden) / sigma2 + delta)
    samples = _sampled_last_layer(sampler, 40000)
    empirical = torch.cov(samples.T)
    expected = torch.linalg.inv(weight_precision)
    rel = (empirical[:-1, :-1].diagonal() / expected.diagonal() - 1).abs().max()
    assert rel < 0.05
    assert abs(empirical[-1, -1].item() / bias_variance - 1) < 0.05
    cross_se = (bias_variance * expected.diagonal().max()) ** 0.5 / 200  # s.e. at n=40000
    assert empirical[-1, :-1].abs().max() < 5 * cross_se  # KFAC: no weight-bias covariance


def test_rest_of_the_network_stays_at_the_map_and_map_view_is_one_network():
    data = tiny_benchmark()
    sampler = make_tiny_sampler(LastLayerLaplace, overrides=TINY)
    sampler.fit(data.train, seed=0)
    draw = sampler.sample(5, generator=torch.Generator().manual_seed(1))
    map_weights = sampler.map_weights()
    for name in ("conv.weight", "conv.bias"):
        assert torch.equal(draw[name], map_weights[name].expand_as(draw[name]))
    assert (draw["fc.weight"][1:] - draw["fc.weight"][0]).abs().amax() > 0
    view = sampler.reference_views()["map"]
    assert view.max_samples == 1
    assert torch.equal(view.sample(1)["fc.weight"][0], map_weights["fc.weight"])


def test_learns_and_the_sampled_predictive_keeps_the_map_accuracy():
    data = tiny_benchmark()
    sampler = make_tiny_sampler(LastLayerLaplace, overrides=TINY)
    sampler.fit(data.train, seed=0)
    x, y = data.test.tensors
    probs = batched_predict(
        sampler.target, sampler.sample(32), x, transform=lambda o: o.softmax(-1)
    )
    map_probs = batched_predict(sampler.target, sampler.reference_views()["map"].sample(1), x)
    acc = (probs.mean(0).argmax(-1) == y).float().mean().item()
    map_acc = (map_probs[0].argmax(-1) == y).float().mean().item()
    assert map_acc > 0.95 and acc >= map_acc - 0.02


def test_prior_from_validation_split_and_fallback_without_one():
    data = tiny_benchmark()
    val = tiny_images(90, seed=5)
    sampler = make_tiny_sampler(LastLayerLaplace, overrides=TINY)
    sampler.config = LaplaceConfig(**{**sampler.config.__dict__, "prior": "val"})
    sampler.fit(data.train, seed=0, val=val)
    assert sampler.extra_metrics["prior_from_val"] == 1.0
    assert 1 <= sampler.extra_metrics["map_epoch"] <= sampler.config.epochs
    assert sampler.extra_metrics["map_val_nll"] < 0.5
    sampler.fit(data.train, seed=0)
    assert sampler.extra_metrics["prior_from_val"] == 0.0


def test_regression_prior_from_validation_weighs_the_variance():
    data = tiny_benchmark("regression")
    sampler = make_tiny_sampler(LastLayerLaplace, "regression", overrides=TINY)
    sampler.config = LaplaceConfig(**{**sampler.config.__dict__, "prior": "val"})
    sampler.fit(data.train, seed=0, val=tiny_regression(40, seed=5))
    assert sampler.extra_metrics["prior_from_val"] == 1.0
    # The MSE of the predictive mean (laplace-torch's default) would pick the grid's edge 1e4.
    assert sampler.extra_metrics["prior_precision"] < 1e3


def test_bad_input_is_a_one_line_user_error():
    with pytest.raises(UserError, match="laplace.hessian"):
        LaplaceConfig(hessian="diag")
    data = tiny_benchmark("regression")
    het = LastLayerLaplace(data.make_target(), task=Task(kind="regression", heteroscedastic=True))
    with pytest.raises(UserError, match="heteroscedastic"):
        het.fit(data.train, seed=0)
    with pytest.raises(UserError, match="not fitted"):
        LastLayerLaplace(data.make_target()).sample(2)


def test_a_diverging_map_fit_is_a_fit_diverged_error():
    x, y = tiny_regression().tensors
    broken = TensorDataset(x, y.clone().fill_(float("nan")))
    sampler = make_tiny_sampler(LastLayerLaplace, "regression", overrides=TINY)
    with pytest.raises(FitDiverged, match="MAP training"):
        sampler.fit(broken, seed=0)
