"""APD: the gradient penalty by hand, SGLD against an exact Gaussian posterior, a student
that learns a correlation no per-chain diagonal Gaussian has, the contract, divergence
and config errors, and a does-it-learn run on the tiny images."""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import pytest
import torch
from tiny_configs import TINY as TINY_CONFIGS
from torch import nn
from torch.utils.data import TensorDataset

from uqbench.baselines.apd import APD, APDConfig, gradient_penalty
from uqbench.configs import search_space
from uqbench.errors import FitDiverged, UserError
from uqbench.sampler import Task
from uqbench.testing import check_sampler_contract, tiny_images, tiny_target

TINY = TINY_CONFIGS["apd"]


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
    config = APDConfig(
        chains=64,
        steps=1200,
        burn_in=400,
        thin=10,
        buffer_size=80,
        batch_size=n,
        step_size=0.1,
        prior_std=prior_std,
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


def _correlated_teacher(chains: int, kept: int) -> torch.Tensor:
    """``[chains, kept, 4]``: per chain a Gaussian around its own mean with weights 0 and 1
    correlated at ρ = 0.9 (std 0.5 each), weights 2 and 3 independent (std 0.2)."""
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[0.25, 0.225, 0, 0], [0.225, 0.25, 0, 0], [0, 0, 0.04, 0], [0, 0, 0, 0.04]])
    chol = torch.linalg.cholesky(cov)
    means = torch.tensor([[1.0, -1.0, 0.5, 0.0], [-1.0, 1.0, 0.0, 0.5]])[:chains]
    return means[:, None] + torch.randn(chains, kept, 4, generator=g) @ chol.T


def _corr(x: torch.Tensor) -> float:
    return float(torch.corrcoef(x[:, :2].T)[0, 1])


def test_student_learns_a_correlation_a_per_chain_diagonal_gaussian_cannot() -> None:
    samples = _correlated_teacher(chains=2, kept=400)
    config = APDConfig(
        chains=2,
        noise_dim=4,
        gen_hidden=32,
        gen_layers=2,
        critic_hidden=32,
        critic_layers=2,
        gan_batch=64,
        gen_lr=3e-3,
        critic_lr=3e-3,
        final_gan_iters=200,
    )
    target = nn.Sequential(OrderedDict(w=nn.Linear(4, 1, bias=False)))
    apd = APD(target, config, task=Task(kind="regression"))
    apd.distill(samples, seed=0)
    draw = apd.sample(2000, generator=torch.Generator().manual_seed(0))["w.weight"].view(2000, 4)
    # sample i comes from chain (o + i) mod 2, so the chains alternate.
    offset = int((draw[0] - samples[1].mean(0)).norm() < (draw[0] - samples[0].mean(0)).norm())
    for c in range(2):
        student = draw[(c + offset) % 2 :: 2]
        teacher = samples[c]
        # A per-chain diagonal Gaussian with the teacher's moments: correlation ~0.
        g = torch.Generator().manual_seed(1)
        diagonal = teacher.mean(0) + teacher.std(0) * torch.randn(1000, 4, generator=g)
        assert abs(_corr(diagonal)) < 0.1
        assert _corr(teacher) > 0.85
        assert _corr(student) > 0.6, _corr(student)
        torch.testing.assert_close(student.mean(0), teacher.mean(0), atol=0.35, rtol=0)
        ratio = student.std(0) / teacher.std(0)  # the correlated pair's spread is learned
        assert ((ratio[:2] > 0.5) & (ratio[:2] < 1.6)).all(), ratio


def test_student_learns_tiny_images_and_keeps_the_best_generator_on_val() -> None:
    train, val, test = tiny_images(300, seed=0), tiny_images(90, seed=2), tiny_images(150, seed=1)
    config = APDConfig(**{**TINY, "step_size": 0.05, "final_gan_iters": 150, "val_every": 25})
    sampler = APD(tiny_target(), config, task=Task(num_classes=3))
    sampler.fit(train, seed=0, val=val)
    m = sampler.extra_metrics
    assert m["teacher_acc"] >= 0.95 and m["student_acc"] >= 0.95
    # One student network is nearly as good as one teacher sample, on validation.
    assert m["student_acc1"] >= m["teacher_acc1"] - 0.05, m
    assert m["agreement"] >= 0.95
    assert m["selected_gan_iter"] in {25.0, 50.0, 75.0, 100.0, 125.0, 150.0}
    # On test data the student's single networks and its ensemble are good too.
    x, y = test.tensors
    draw = sampler.sample(30, generator=torch.Generator().manual_seed(0))
    probs = torch.stack(
        [
            torch.func.functional_call(
                sampler.target, {k: v[i] for k, v in draw.items()}, (x,)
            ).softmax(-1)
            for i in range(30)
        ]
    )
    assert (probs.mean(0).argmax(1) == y).float().mean() >= 0.95
    assert (probs.argmax(-1) == y).float().mean() >= 0.9
    # Without a validation split nothing is selected and the scores are on training data.
    plain = APD(tiny_target(), config, task=Task(num_classes=3))
    plain.fit(train, seed=0)
    assert plain.extra_metrics["selected_gan_iter"] == 150.0
    assert "student_acc_train" in plain.extra_metrics


def test_contract_with_the_tiny_settings() -> None:
    check_sampler_contract(APD, overrides=TINY)


def test_non_finite_losses_raise_fit_diverged() -> None:
    x, y = tiny_images(60).tensors
    fast = {**TINY, "step_size": 0.05}
    poisoned = x.clone()
    poisoned[3, 0, 0, 0] = float("nan")
    with pytest.raises(FitDiverged, match="SGLD loss became nan at step 1"):
        APD(tiny_target(), APDConfig(**fast), task=Task(num_classes=3)).fit(
            TensorDataset(poisoned, y), seed=0
        )
    with pytest.raises(FitDiverged, match="apd: the SGLD loss became"):
        APD(tiny_target(), APDConfig(**{**TINY, "step_size": 1e6}), task=Task(num_classes=3)).fit(
            TensorDataset(x, y), seed=0
        )
    # The GAN checks its own losses: a teacher sample with an infinite weight.
    samples = _correlated_teacher(chains=2, kept=8)
    samples[0, 0, 0] = float("inf")
    target = nn.Sequential(OrderedDict(w=nn.Linear(4, 1, bias=False)))
    config = APDConfig(**{**TINY, "coordinates": "raw", "warm_start": False})
    with pytest.raises(FitDiverged, match="critic loss became"):
        APD(target, config, task=Task(kind="regression")).distill(samples, seed=0)


def test_teacher_sample_teacher_view_config_and_checkpoint_errors() -> None:
    sampler = APD(tiny_target(), APDConfig(**TINY), task=Task(num_classes=3))
    with pytest.raises(UserError, match="not fitted"):
        sampler.sample(2)
    sampler.fit(tiny_images(60), seed=0)
    kept = int(sampler.extra_metrics["teacher_samples"])
    assert kept == 2 * 14
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
    state = sampler.state_dict()
    state["config"] = {**state["config"], "holdout": 0}
    with pytest.raises(UserError, match="unknown settings: holdout"):
        APD(tiny_target(), APDConfig(**TINY)).load_state_dict(state)
    with pytest.raises(UserError, match=r"apd.distill takes samples \[chains=2"):
        sampler.distill(torch.zeros(3, 5, 7), seed=0)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"steps": "0"}, "apd.steps=0 is invalid"),
        ({"step_size": "nan"}, "apd.step_size=nan: expected a finite number"),
        ({"gen_lr": "-1"}, "apd.gen_lr=-1.0 is invalid"),
        ({"coordinates": "pca"}, "apd.coordinates='pca' is invalid: use one of"),
        ({"burn_in": "1970"}, "the teacher keeps fewer than 2 samples per chain"),
    ],
)
def test_config_rejects_bad_values(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[")):
        APD.make_config(overrides)


def test_search_space_names_the_tunable_knobs() -> None:
    space = search_space(APDConfig)
    assert {"step_size", "prior_std", "gen_lr", "critic_lr", "final_gan_iters"} <= set(space)
    assert APDConfig().step_size == 0.025 and APDConfig().prior_std == 0.14
    assert dataclasses.asdict(APDConfig())["coordinates"] == "span"
