"""HyperGAN: the sampler contract, learning on tiny data, shapes, ablations and the init scale."""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from uqbench.errors import UserError
from uqbench.functional import fan_in, stacked_forward
from uqbench.hypergan import HyperGAN, code_moment_loss, layer_specs
from uqbench.sampler import Task
from uqbench.targets import mednet, small_cnn, toy1d_mlp
from uqbench.testing import (
    tiny_benchmark,
    tiny_images,
    tiny_regression,
    tiny_target,
)
from uqbench.training import as_tensors

#: Small hypernet settings for the shape / flag tests (fit with steps=0 only calibrates).
SMALL = {
    "noise_dim": 16,
    "code_dim": 8,
    "mixer_hidden": 32,
    "generator_hidden": 32,
    "discriminator_hidden": 32,
    "noise_batch": 16,
    "nets_per_step": 4,
    "bn_calibration": 64,
    "diversity_samples": 8,
    "val_nets": 2,
}


def small_config(**overrides) -> HyperGAN.Config:
    return dataclasses.replace(HyperGAN.Config(), **{**SMALL, **overrides})


def user_net() -> nn.Module:
    """A user's own target: Conv2d without bias, Linear layers, parameter-free modules."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 3, 3, bias=False),
            act=nn.Tanh(),
            flatten=nn.Flatten(),
            fc1=nn.Linear(3 * 6 * 6, 7),
            act2=nn.ReLU(),
            fc2=nn.Linear(7, 2),
        )
    )


def calibrated(target: nn.Module, x: torch.Tensor, y: torch.Tensor, **overrides) -> HyperGAN:
    """A sampler fitted with steps=0: output scale calibrated, nothing trained."""
    sampler = HyperGAN(target, small_config(**{"steps": 0, **overrides}))
    sampler.fit(torch.utils.data.TensorDataset(x, y), seed=0)
    return sampler


def tiny_sampler(kind: str, steps: int = 300) -> HyperGAN:
    """The tiny preset trained longer than the contract's quick fits."""
    data = tiny_benchmark(kind)
    config = dataclasses.replace(HyperGAN.make_config(benchmark="tiny"), steps=steps, val_every=100)
    return HyperGAN(data.make_target(), config, task=data.task)


def test_learns_tiny_images() -> None:
    data = tiny_benchmark("classification")
    sampler = tiny_sampler("classification")
    sampler.fit(data.train, seed=0)
    x, y = as_tensors(data.test)
    draw = sampler.sample(10, generator=torch.Generator().manual_seed(0))
    probs = stacked_forward(sampler.target, draw, x).softmax(-1)
    acc_mean = float((probs.mean(0).argmax(-1) == y).float().mean())
    acc_single = (probs.argmax(-1) == y).float().mean(1)
    assert acc_mean >= 0.95, f"10-network accuracy {acc_mean:.3f}"
    assert float(acc_single.min()) >= 0.8, f"worst single network {acc_single.tolist()}"
    assert sampler.history and sampler.history[-1]["val_score"] >= 0.9
    assert 0 < sampler.extra_metrics["diversity_l2_rel_std_fit"] < 1


def test_learns_tiny_regression_and_is_uncertain_away_from_data() -> None:
    data = tiny_benchmark("regression")
    sampler = tiny_sampler("regression")
    sampler.fit(data.train, seed=0)
    grid = torch.linspace(-4, 4, 81).unsqueeze(1)
    mean = stacked_forward(
        sampler.target, sampler.sample(50, generator=torch.Generator().manual_seed(0)), grid
    )[..., 0]
    inside = grid[:, 0].abs() <= 2
    rmse_in = float((mean.mean(0)[inside] - torch.sin(2 * grid[inside, 0])).pow(2).mean().sqrt())
    std = mean.std(0)
    assert rmse_in < 0.35, f"RMSE inside the training range {rmse_in:.3f}"
    assert float(std[~inside].mean()) > 2 * float(std[inside].mean())


@pytest.mark.parametrize(
    ("make", "shape"),
    [(small_cnn, (1, 28, 28)), (mednet, (3, 32, 32)), (toy1d_mlp, (1,)), (user_net, (1, 8, 8))],
    ids=["small_cnn", "mednet", "toy1d", "user_net"],
)
def test_generator_shapes_follow_target(make, shape) -> None:
    target = make()
    specs = layer_specs(target)
    params = dict(target.named_parameters())
    # one generator per Linear / Conv2d layer, each emitting exactly that layer's parameters
    assert [n for s in specs for n in s.names] == list(params)
    x = torch.rand(4, *shape)
    y = torch.zeros(4, dtype=torch.long)
    sampler = calibrated(target, x, y)
    for spec, gen in zip(specs, sampler.generators, strict=True):
        assert gen.head.out_features == sum(p.numel() for n, p in params.items() if n in spec.names)
    draw = sampler.sample(3, generator=torch.Generator().manual_seed(0))
    assert {k: tuple(v.shape) for k, v in draw.items()} == {
        k: (3, *p.shape) for k, p in params.items()
    }
    assert stacked_forward(target, draw, x).shape[:2] == (3, 4)


def test_initial_weights_sit_at_the_intended_fraction_of_kaiming() -> None:
    x, y = as_tensors(tiny_images(64))
    for scale in (0.25, 1.0):
        sampler = calibrated(tiny_target(), x, y, init_scale=scale)
        draw = sampler.sample(64, generator=torch.Generator().manual_seed(0))
        for name, w in draw.items():
            if name.endswith("weight"):
                expected = scale * math.sqrt(2.0 / fan_in(w.shape[1:]))
                assert float(w.std()) == pytest.approx(expected, rel=0.2), name


def test_no_mixer_codes_are_the_noise() -> None:
    x, y = as_tensors(tiny_images(64))
    sampler = calibrated(tiny_target(), x, y, mixer=False)
    n_layers, d = len(sampler.specs), sampler.config.code_dim
    assert sampler.mixer is None and sampler.noise_width == n_layers * d
    assert sampler.discriminator is None  # the codes are prior draws: nothing for D to do
    noise = torch.randn(5, sampler.noise_width)
    torch.testing.assert_close(sampler.codes(noise), noise.view(5, n_layers, d))
    assert not any(k.startswith("mixer") for k in sampler.state_dict()["hypernet"])
    with_mixer = calibrated(tiny_target(), x, y)
    assert with_mixer.noise_width == with_mixer.config.noise_dim
    assert any(k.startswith("mixer") for k in with_mixer.state_dict()["hypernet"])


def test_no_discriminator_drops_d_and_its_term() -> None:
    x, y = as_tensors(tiny_images(64))
    off = calibrated(tiny_target(), x, y, discriminator=False, steps=4, val_every=2)
    assert off.discriminator is None
    opt_g, opt_d = off._optimizers()
    assert opt_d is None
    _, adv, d_loss = off._step(x[:8], y[:8], opt_g, opt_d, torch.Generator().manual_seed(0))
    assert adv == 0.0 and d_loss == 0.0
    on = calibrated(tiny_target(), x, y, steps=4, val_every=2)
    opt_g, opt_d = on._optimizers()
    d_params = {id(p) for p in on.discriminator.parameters()}
    assert opt_d is not None and not d_params & {
        id(p) for g in opt_g.param_groups for p in g["params"]
    }
    _, adv, d_loss = on._step(x[:8], y[:8], opt_g, opt_d, torch.Generator().manual_seed(0))
    assert adv > 0 and d_loss > 0


def test_sample_does_not_depend_on_how_many_are_drawn() -> None:
    x, y = as_tensors(tiny_images(64))
    sampler = calibrated(tiny_target(), x, y)
    few = sampler.sample(3, generator=torch.Generator().manual_seed(5))
    many = sampler.sample(40, generator=torch.Generator().manual_seed(5))
    for name in few:
        torch.testing.assert_close(few[name], many[name][:3])


def test_code_moment_loss_and_mixer_pretraining() -> None:
    torch.manual_seed(0)
    prior = torch.randn(4000, 2, 8)
    assert float(code_moment_loss(prior)) < 0.2
    assert float(code_moment_loss(3 * prior + 1)) > 50
    x, y = as_tensors(tiny_images(64))
    target = tiny_target()
    before = calibrated(target, x, y)
    after = calibrated(target, x, y, pretrain_steps=100, lr_mixer=1e-2)
    noise = torch.randn(2000, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before.mixer.train(), after.mixer.train()
        loss_before = float(code_moment_loss(before.codes(noise)))
        loss_after = float(code_moment_loss(after.codes(noise)))
    assert loss_after < 0.5 * loss_before


def test_history_records_validation_and_diversity() -> None:
    x, y = as_tensors(tiny_images(90))
    sampler = HyperGAN(tiny_target(), small_config(steps=6, val_every=3))
    sampler.fit(torch.utils.data.TensorDataset(x, y), seed=0)
    assert [h["step"] for h in sampler.history] == [0, 3, 6]
    assert all(0 <= h["val_score"] <= 1 and h["diversity"] > 0 for h in sampler.history)
    assert sampler.extra_metrics["best_step"] in (0.0, 3.0, 6.0)


def test_user_errors() -> None:
    target = tiny_target()
    with pytest.raises(UserError, match="before sample"):
        HyperGAN(target, small_config()).sample(2)
    with pytest.raises(UserError, match="noise_batch"):
        HyperGAN(target, small_config(noise_batch=2, nets_per_step=4))
    with pytest.raises(UserError, match="lr_schedule"):
        HyperGAN(target, small_config(lr_schedule="linear"))
    x, y = as_tensors(tiny_images(64))
    state = calibrated(target, x, y).state_dict()
    with pytest.raises(UserError, match="code_dim"):
        HyperGAN(target, small_config(code_dim=4)).load_state_dict(state)
    with pytest.raises(UserError, match="no setting"):
        HyperGAN.make_config({"not_a_setting": "1"})


def test_regression_task_is_used() -> None:
    """Regression: the training loss is the Gaussian NLL, so the fit follows y's scale."""
    x, y = as_tensors(tiny_regression())
    sampler = HyperGAN(
        nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)),
        small_config(steps=0),
        task=Task(kind="regression", noise_std=0.1),
    )
    sampler.fit(torch.utils.data.TensorDataset(x, 10 * y), seed=0)
    assert sampler.history[-1]["val_score"] < 0  # minus the mean NLL of an untrained net
