"""APD: the gradient penalty by hand, SGLD against an exact Gaussian posterior, the
contract, and a does-it-learn run on the tiny images."""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from uqbench.baselines.apd import APD, gradient_penalty
from uqbench.errors import UserError
from uqbench.functional import batched_predict
from uqbench.sampler import Task
from uqbench.testing import tiny_images, tiny_target


def test_gradient_penalty_of_a_linear_critic_is_lambda_times_norm_minus_one_squared() -> None:
    # f(x) = a·x + c has ∇f = a everywhere, so GP = λ (‖a‖ − 1)² for any real, fake, α,
    # and d GP / d a = 2λ (‖a‖ − 1) a / ‖a‖.
    g = torch.Generator().manual_seed(0)
    critic = nn.Linear(5, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 0.0, -4.0, 0.0, 0.0]]))  # ‖a‖ = 5
    real, fake = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    alpha = torch.rand(7, 1, generator=g)
    penalty = gradient_penalty(critic, real, fake, alpha, weight=10.0)
    assert penalty.item() == pytest.approx(10.0 * (5.0 - 1.0) ** 2)
    penalty.backward()
    a = critic.weight.detach()
    expected = 2 * 10.0 * (5.0 - 1.0) * a / 5.0
    torch.testing.assert_close(critic.weight.grad, expected)
    # A unit-norm linear critic pays no penalty.
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[0.6, 0.0, 0.8, 0.0, 0.0]]))
    assert gradient_penalty(critic, real, fake, alpha).item() == pytest.approx(0.0, abs=1e-10)


def test_sgld_teacher_recovers_a_gaussian_posterior() -> None:
    # y_i = θ + ε_i, ε ~ N(0, σ²), prior θ ~ N(0, σ_p²): the posterior is Gaussian with
    # precision A = N/σ² + 1/σ_p² and mean (Σ y_i / σ²) / A. The target net θ·x with x = 1.
    n, sigma, prior_std = 50, 2.0, 1.5
    g = torch.Generator().manual_seed(0)
    y = 0.7 + sigma * torch.randn(n, generator=g)
    precision = n / sigma**2 + 1 / prior_std**2
    post_mean = float(y.sum() / sigma**2 / precision)
    post_std = 1 / math.sqrt(precision)
    config = dataclasses.replace(
        APD.Config(),
        chains=64,
        steps=1200,
        burn_in=400,
        thin=10,
        buffer_size=80,
        batch_size=n,
        step_size=0.1,
        prior_std=prior_std,
        gan_every=10**9,
        final_gan_iters=0,
        noise_dim=2,
        gen_hidden=4,
        critic_hidden=4,
    )
    target = nn.Sequential(OrderedDict(theta=nn.Linear(1, 1, bias=False)))
    sampler = APD(target, config, task=Task(kind="regression", noise_std=sigma))
    sampler.fit(TensorDataset(torch.ones(n, 1), y), seed=0)
    theta = sampler.teacher.flatten()
    # Full-batch SGLD is the unadjusted Langevin algorithm: with ε = 2η/N its stationary
    # variance is 1 / (A (1 − εA/4)), here 1.3 % above 1/A; the tolerances cover that
    # and the Monte Carlo error (autocorrelation time ≈ 2/(εA) ≈ 75 steps: ~300
    # effective samples over the 64 chains).
    assert abs(theta.mean().item() - post_mean) < 0.15 * post_std
    assert theta.std().item() == pytest.approx(post_std, rel=0.08)


def test_student_learns_tiny_images() -> None:
    train, test = tiny_images(300, seed=0), tiny_images(150, seed=1)
    config = dataclasses.replace(
        APD.make_config(benchmark="tiny"),
        step_size=0.05,
        steps=300,
        burn_in=100,
        gan_every=2,
        final_gan_iters=100,
    )
    sampler = APD(tiny_target(), config, task=Task(num_classes=3))
    sampler.fit(train, seed=0)
    x, y = test.tensors
    draw = sampler.sample(30, generator=torch.Generator().manual_seed(0))
    probs = batched_predict(sampler.target, draw, x, transform=lambda o: o.softmax(-1))
    student_acc = (probs.mean(0).argmax(1) == y).float().mean().item()
    single_acc = (probs.argmax(-1) == y).float().mean().item()
    assert student_acc >= 0.9, student_acc  # chance is 1/3
    assert single_acc >= 0.8, single_acc  # one sampled network, on average
    assert sampler.extra_metrics["teacher_acc"] >= 0.9
    assert sampler.extra_metrics["agreement"] >= 0.9
    # The GAN, not just the standardisation, shapes the student: per-weight spread relative
    # to the teacher's (std_ratio) grows well beyond that of the untrained generator.
    untrained = APD(
        tiny_target(),
        dataclasses.replace(config, gan_every=10**9, final_gan_iters=0),
        task=Task(num_classes=3),
    )
    untrained.fit(train, seed=0)
    assert untrained.extra_metrics["std_ratio"] < 0.15
    assert sampler.extra_metrics["std_ratio"] > 0.3


def test_teacher_sample_teacher_view_and_user_errors() -> None:
    sampler = APD(tiny_target(), APD.make_config(benchmark="tiny"), task=Task(num_classes=3))
    with pytest.raises(UserError, match="not fitted"):
        sampler.sample(2)
    sampler.fit(tiny_images(60), seed=0)
    kept = int(sampler.extra_metrics["teacher_samples"])
    draw = sampler.teacher_sample(kept, generator=torch.Generator().manual_seed(0))
    flat = torch.cat([v.flatten(1) for v in draw.values()], dim=1)
    assert len(torch.unique(flat, dim=0)) == kept  # without replacement
    with pytest.raises(UserError, match="teacher kept"):
        sampler.teacher_sample(kept + 1)
    view = sampler.teacher_view()
    assert view.max_samples == kept
    assert isinstance(sampler.reference_views()["teacher"], type(view))  # the apd:teacher row
    assert set(view.sample(3)) == {k for k, _ in sampler.target.named_parameters()}
    with pytest.raises(UserError, match=f"holds only {kept}"):
        view.sample(kept + 1)
    with pytest.raises(UserError, match="apd.steps"):
        APD(tiny_target(), APD.make_config({"steps": "0"}))
