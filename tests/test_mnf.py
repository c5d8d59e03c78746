"""MNF: the flows' log-determinants, the bound's terms, local reparameterisation against
whole-weight sampling, the sampler contract, and learning on tiny data."""

from __future__ import annotations

import dataclasses
import math

import pyro.distributions as dist
import pytest
import torch
from tiny_configs import TINY
from torch import nn
from torch.autograd.functional import jacobian

from uqbench.baselines.mnf import MNF, MNFConfig, _Flow, _LayerPosterior
from uqbench.data.registry import load_benchmark
from uqbench.errors import FitDiverged, UserError
from uqbench.functional import stacked_forward
from uqbench.sampler import Task
from uqbench.testing import make_tiny_sampler, tiny_benchmark
from uqbench.training import RegressionScaling, as_tensors


def _perturb(module: nn.Module, std: float = 0.5, seed: int = 0) -> None:
    """Move every parameter off its (identity-map) initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_flow_log_det_matches_autograd_jacobian(dim: int) -> None:
    torch.manual_seed(0)
    flow = _Flow(dim, steps=2, hidden=8, device=torch.device("cpu"))
    _perturb(flow)
    x = torch.randn(dim, dtype=torch.float64)
    flow = flow.double()
    _, log_det = flow(x)
    jac = jacobian(lambda v: flow(v)[0], x)
    assert not torch.allclose(jac, torch.eye(dim, dtype=torch.float64))  # a real test
    torch.testing.assert_close(log_det, torch.linalg.slogdet(jac).logabsdet)


def test_flows_start_at_the_identity() -> None:
    for dim in (1, 4):
        flow = _Flow(dim, steps=2, hidden=8, device=torch.device("cpu"))
        x = torch.randn(3, dim)
        y, log_det = flow(x)
        torch.testing.assert_close(y, x)
        torch.testing.assert_close(log_det, torch.zeros(3))


def _layer(layer: nn.Module, z_axis: int = 1, seed: int = 0) -> _LayerPosterior:
    torch.manual_seed(seed)
    post = _LayerPosterior(layer, z_axis, MNFConfig(flow_hidden=8, init_log_std=-1.5))
    _perturb(post, std=0.3, seed=seed)
    return post


def test_log_q_matches_pyro_transformed_distribution() -> None:
    post = _layer(nn.Linear(6, 3))
    eps = torch.randn(4, 6)
    z, log_q = post.sample_z(eps)
    base = dist.Normal(post.z_mean, (0.5 * post.z_log_var).exp()).to_event(1)
    flow_dist = dist.TransformedDistribution(base, post.q_flow.transforms)
    # A fresh tensor misses the transforms' cache, so pyro inverts the flow itself.
    torch.testing.assert_close(log_q, flow_dist.log_prob(z.detach().clone()), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("layer", "z_axis"),
    [(nn.Linear(5, 3), 1), (nn.Conv2d(3, 4, 3), 1), (nn.Conv2d(3, 4, 3), 0)],
)
def test_kl_of_weights_matches_torch(layer: nn.Module, z_axis: int) -> None:
    post = _layer(layer, z_axis)
    z = torch.randn(3, layer.weight.shape[z_axis])
    ours = post.kl_weights(z)
    shape = [1] * layer.weight.dim()
    shape[z_axis] = -1
    # The KL sees the unclipped sigma (the clip acts on the likelihood only).
    q = torch.distributions.Normal(z.view(3, *shape) * post.mu, post.log_std.exp())
    p = torch.distributions.Normal(0.0, 1.0)
    reference = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    # and the bias posterior N(mu_b (times z on conv filters), sigma_b^2)
    bias_mean = z * post.bias_mu if z_axis == 0 else post.bias_mu.expand(3, -1)
    q_bias = torch.distributions.Normal(bias_mean, post.bias_log_std.exp())
    reference = reference + torch.distributions.kl_divergence(q_bias, p).sum(1)
    torch.testing.assert_close(ours, reference)


@pytest.mark.parametrize("z_axis", [0, 1])
def test_projected_weight_moments_match_monte_carlo(z_axis: int) -> None:
    post = _layer(nn.Conv2d(3, 4, 3), z_axis)
    z = torch.randn(1, post.mu.shape[z_axis])
    mean, var = post.projected_moments(z)
    g = torch.Generator().manual_seed(1)
    draws = post.weight_mean(z) + post.weight_var().sqrt() * torch.randn(
        20000, *post.mu.shape, generator=g
    )
    proj = torch.einsum("d,sdr->sr", post.c, torch.movedim(draws, z_axis + 1, 1).flatten(2))
    torch.testing.assert_close(proj.mean(0), mean[0], atol=0.05, rtol=0.05)
    torch.testing.assert_close(proj.var(0), var, atol=0.02, rtol=0.05)


def test_auxiliary_r_is_a_normalised_density() -> None:
    # 1-D z (planar auxiliary flow): integrate r(z | W) over a fine grid.
    post = _layer(nn.Linear(1, 4), seed=2)
    w_proj = torch.randn(1, 4)
    grid = torch.linspace(-10, 12, 8001).unsqueeze(1)
    with torch.no_grad():
        density = post.log_r(grid, w_proj.expand(len(grid), 4)).exp()
    assert torch.isfinite(density).all()
    assert abs(torch.trapezoid(density, grid[:, 0]).item() - 1.0) < 1e-3
    # 2-D z (affine coupling auxiliary flow): a 2-D grid.
    post = _layer(nn.Linear(2, 4), seed=3)
    axis = torch.linspace(-16, 18, 1101)
    zz = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        density = post.log_r(zz, w_proj.expand(len(zz), 4)).exp().view(1101, 1101)
    mass = torch.trapezoid(torch.trapezoid(density, axis, dim=1), axis)
    assert abs(mass.item() - 1.0) < 5e-3


@pytest.mark.parametrize("conv_noise", ["inputs", "filters"])
def test_local_reparameterisation_matches_sampled_weights(conv_noise: str) -> None:
    """The training forward's output moments equal those of networks drawn by ``sample``."""
    torch.manual_seed(0)
    target = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    sampler = MNF(target, MNFConfig(flow_hidden=8, init_log_std=-1.0, conv_noise=conv_noise))
    _perturb(sampler.posterior, std=0.2)
    x = torch.rand(1, 2, 4, 4)
    n = 40000
    with torch.no_grad():
        local = sampler.training_forward(x.expand(n, 2, 4, 4))
        weights = sampler.sample(n, generator=torch.Generator().manual_seed(0))
        whole = stacked_forward(sampler.target, weights, x)[:, 0]
    torch.testing.assert_close(local.mean(0), whole.mean(0), atol=0.03, rtol=0.03)
    torch.testing.assert_close(local.std(0), whole.std(0), atol=0.03, rtol=0.03)


def test_learns_tiny_images() -> None:
    data = tiny_benchmark("classification")
    sampler = make_tiny_sampler(MNF, overrides=TINY["mnf"])
    sampler.fit(data.train, seed=0)
    x, y = as_tensors(data.test)
    weights = sampler.sample(20, generator=torch.Generator().manual_seed(0))
    probs = stacked_forward(sampler.target, weights, x).softmax(-1)
    chance = 1 / data.task.num_classes
    assert (probs.mean(0).argmax(-1) == y).float().mean() >= 0.95 > chance
    assert sampler.extra_metrics["mnf_kl_per_example"] > 0


def test_toy1d_epistemic_std_grows_outside_the_training_range() -> None:
    data = load_benchmark("toy1d")
    config = dataclasses.replace(MNF.make_config(benchmark="toy1d"), epochs=600)
    torch.manual_seed(0)
    sampler = MNF(data.make_target(), config, task=data.task)
    sampler.fit(data.train, seed=0)
    x, y = as_tensors(data.test)
    means = stacked_forward(
        sampler.target, sampler.sample(100, generator=torch.Generator().manual_seed(0)), x
    )[..., 0]
    std = means.std(0, correction=0)
    low, high = data.train_range
    inside = (x[:, 0] >= low) & (x[:, 0] <= high)
    assert std[~inside].mean() >= 2 * std[inside].mean()
    # and the fit inside the range is far better than predicting the mean of y
    rmse_inside = (means.mean(0) - y)[inside].pow(2).mean().sqrt()
    assert rmse_inside < 0.5 * y[inside].std()


def test_standardised_regression_folds_back_into_the_last_layer() -> None:
    torch.manual_seed(0)
    task = Task(kind="regression", heteroscedastic=True)
    sampler = MNF(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 2)), task=task)
    x = torch.linspace(-1, 1, 5).unsqueeze(1)
    plain = stacked_forward(
        sampler.target, sampler.sample(3, generator=torch.Generator().manual_seed(0)), x
    )
    sampler.scaling = RegressionScaling(y_shift=4.0, y_scale=3.0)
    folded = stacked_forward(
        sampler.target, sampler.sample(3, generator=torch.Generator().manual_seed(0)), x
    )
    torch.testing.assert_close(folded[..., 0], 4.0 + 3.0 * plain[..., 0])
    torch.testing.assert_close(folded[..., 1], plain[..., 1] + 2 * math.log(3.0))


def test_user_errors() -> None:
    with pytest.raises(UserError, match="conv_noise"):
        MNF(nn.Sequential(nn.Linear(2, 2)), MNFConfig(conv_noise="outputs"))
    with pytest.raises(UserError, match="batch_size"):
        MNF(nn.Sequential(nn.Linear(2, 2)), MNF.make_config({"batch_size": "0"}))
    with pytest.raises(UserError, match="max_std"):
        MNF(nn.Sequential(nn.Linear(2, 2)), MNFConfig(max_std=0.0))
    data = tiny_benchmark("regression")
    squashed = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1), nn.Tanh())
    with pytest.raises(UserError, match="standardize_targets"):
        MNF(squashed, MNFConfig(epochs=1), task=data.task).fit(data.train, seed=0)
    MNF(squashed, MNFConfig(epochs=1, standardize_targets=False), task=data.task).fit(
        data.train, seed=0
    )


def test_defaults_are_the_authors() -> None:
    target = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(12, 2))
    sampler = MNF(target)
    conv, fc = sampler.posterior["0"], sampler.posterior["2"]
    assert conv.z_axis == 0 and conv.z_mean.shape == (3,)  # output filters
    assert fc.z_axis == 1 and fc.z_mean.shape == (12,)  # input units
    for post in (conv, fc):
        assert torch.all(post.log_std == -9.0) and torch.all(post.bias_log_std == -9.0)
    cfg = sampler.config
    assert (cfg.lr, cfg.batch_size, cfg.epochs, cfg.max_std, cfg.kl_warmup) == (
        1e-3,
        100,
        100,
        0.5,
        0.0,
    )


def test_biases_are_sampled_and_sigma_clipped_in_sampling_only() -> None:
    torch.manual_seed(0)
    sampler = MNF(nn.Sequential(nn.Linear(3, 2)), MNFConfig(init_log_std=0.5, max_std=0.5))
    draw = sampler.sample(4000, generator=torch.Generator().manual_seed(0))
    # sigma = e^0.5 = 1.65 is clipped to 0.5 in sampling ...
    assert draw["0.bias"].std(0).sub(0.5).abs().max() < 0.03
    # ... while the KL still pulls log sigma towards the prior (d KL / d log sigma = sigma^2 - 1).
    sampler.posterior["0"].kl_weights(torch.ones(1, 3)).sum().backward()
    assert sampler.posterior["0"].log_std.grad.abs().min() > 0.5


def test_non_finite_loss_is_fit_diverged() -> None:
    data = tiny_benchmark()
    x, y = (t.clone() for t in data.train.tensors)
    x[:] = float("nan")
    sampler = make_tiny_sampler(MNF, overrides=TINY["mnf"])
    with pytest.raises(FitDiverged, match="mnf: the likelihood loss became nan at step 1"):
        sampler.fit(torch.utils.data.TensorDataset(x, y), seed=0)


def test_validation_plateau_stops_the_fit() -> None:
    data = tiny_benchmark()
    calls: list[dict] = []
    overrides = {**TINY["mnf"], "epochs": 200, "patience": 3, "keep_best": True}
    sampler = make_tiny_sampler(MNF, overrides=overrides)
    val = torch.utils.data.TensorDataset(*(t[:60] for t in data.test.tensors))
    sampler.fit(data.train, seed=0, val=val, progress=lambda s, t, **m: calls.append(m))
    reports = [m for m in calls if "val_nll" in m]
    run = sampler.extra_metrics["epochs_run"]
    assert len(reports) == run < 200  # stopped on the plateau
    nll = [m["val_nll"] for m in reports]
    assert min(nll[-3:]) >= min(nll)  # no new minimum in the last `patience` epochs
    assert sampler.extra_metrics["best_epoch"] == 1 + nll.index(min(nll))


def test_mismatched_checkpoint_is_a_user_error() -> None:
    sampler = MNF(nn.Sequential(nn.Linear(2, 2)))
    state = sampler.state_dict()
    state["posterior"] = {k.replace("log_std", "log_var"): v for k, v in state["posterior"].items()}
    with pytest.raises(UserError, match="checkpoint does not match"):
        sampler.load_state_dict(state)
