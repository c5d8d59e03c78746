"""HyperGAN: the sampler contract, learning on tiny data, shapes, ablations and the init scale."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from tiny_configs import TINY as TINY_CONFIGS
from torch import nn
from torch.utils.data import TensorDataset

from uqbench.errors import FitDiverged, UserError
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

#: The tiny-data settings these tests train with (small hypernet, short fits).
TINY = {**TINY_CONFIGS["hypergan"], "steps": 300, "val_every": 100}

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
    "pretrain_steps": 0,
}


def small_config(**overrides) -> HyperGAN.Config:
    return HyperGAN.Config(**{**SMALL, **overrides})


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


def tiny_sampler(kind: str, **overrides) -> HyperGAN:
    """``TINY`` on the tiny benchmark's target."""
    data = tiny_benchmark(kind)
    return HyperGAN(data.make_target(), HyperGAN.Config(**{**TINY, **overrides}), task=data.task)


def test_learns_tiny_images_and_keeps_the_best_state_by_validation_nll() -> None:
    data = tiny_benchmark("classification")
    sampler = tiny_sampler("classification")
    seen: list[dict] = []
    sampler.fit(
        data.train,
        seed=0,
        val=tiny_images(90, seed=2),
        progress=lambda step, total, **metrics: seen.append({"step": step, **metrics}),
    )
    assert any({"task", "adversarial", "discriminator"} <= set(m) for m in seen)
    assert any("val_nll" in m and "val_disagreement" in m for m in seen)
    x, y = as_tensors(data.test)
    draw = sampler.sample(10, generator=torch.Generator().manual_seed(0))
    probs = stacked_forward(sampler.target, draw, x).softmax(-1)
    acc_mean = float((probs.mean(0).argmax(-1) == y).float().mean())
    acc_single = (probs.argmax(-1) == y).float().mean(1)
    assert acc_mean >= 0.95, f"10-network accuracy {acc_mean:.3f}"
    assert float(acc_single.min()) >= 0.8, f"worst single network {acc_single.tolist()}"
    history = sampler.history
    assert [h["step"] for h in history] == [0, 100, 200, 300]
    assert history[-1]["val_acc"] >= 0.9
    # the kept state is the one with the lowest validation NLL (ties: the later one)
    best = min(history, key=lambda h: (h["val_nll"], -h["step"]))
    assert sampler.extra_metrics["best_step"] == best["step"]
    assert sampler.extra_metrics["kept_best"] == 1.0
    assert sampler.extra_metrics["val_nll"] == best["val_nll"] < history[0]["val_nll"]
    for h in history:
        assert 0 <= h["val_disagreement"] <= 1
        for layer in ("conv", "fc"):
            assert h[f"shared_var/{layer}"] > 0 and h[f"spread_var/{layer}"] > 0
    assert 0 < sampler.extra_metrics["diversity_l2_rel_std_fit"] < 1


def test_without_validation_data_the_last_state_is_kept() -> None:
    x, y = as_tensors(tiny_images(90))
    sampler = HyperGAN(tiny_target(), small_config(steps=6, val_every=3))
    sampler.fit(TensorDataset(x, y), seed=0)
    assert [h["step"] for h in sampler.history] == [0, 3, 6]
    assert not any(k.startswith("val_") for h in sampler.history for k in h)
    assert sampler.extra_metrics["kept_best"] == 0.0
    assert sampler.extra_metrics["best_step"] == 6.0


def test_validation_uses_a_random_subset_of_a_class_sorted_split() -> None:
    """The step-0 validation NLL is the sampled networks' NLL on ``random_subset(val)``."""
    from uqbench.hypergan.sampler import ensemble_nll
    from uqbench.training import random_subset, seeded_generator

    x, y = as_tensors(tiny_images(300))
    order = torch.argsort(y, stable=True)  # class-sorted, as CIFAR's splits are
    val = (x[order], y[order])
    sampler = HyperGAN(tiny_target(), small_config(steps=0, val_max_examples=60))
    sampler.fit(TensorDataset(x, y), seed=0, val=TensorDataset(*val))
    xs, ys = random_subset(val, 60, seed=sampler.config.val_subset_seed)
    assert len(set(ys.tolist())) == 3  # the first 60 would hold class 0 only
    draw = sampler.sample(sampler.config.val_nets, generator=seeded_generator(1))
    expected = ensemble_nll(stacked_forward(sampler.target, draw, xs), ys, sampler.task)
    assert sampler.history[0]["val_nll"] == pytest.approx(expected, rel=1e-5)


def regression_spread(sampler: HyperGAN) -> tuple[float, float]:
    """(RMSE of the 50-network mean inside [-2, 2], mean std outside / mean std inside)."""
    grid = torch.linspace(-4, 4, 81).unsqueeze(1)
    draw = sampler.sample(50, generator=torch.Generator().manual_seed(0))
    mean = stacked_forward(sampler.target, draw, grid)[..., 0]
    inside = grid[:, 0].abs() <= 2
    rmse_in = float((mean.mean(0)[inside] - torch.sin(2 * grid[inside, 0])).pow(2).mean().sqrt())
    std = mean.std(0)
    return rmse_in, float(std[~inside].mean() / std[inside].mean())


def test_learns_tiny_regression_and_is_more_uncertain_away_from_data() -> None:
    data = tiny_benchmark("regression")
    sampler = tiny_sampler("regression", lr_generator=1e-2, steps=500)
    sampler.fit(data.train, seed=0, val=tiny_regression(32, seed=3))
    rmse_in, widening = regression_spread(sampler)
    # measured: RMSE 0.094, std outside / inside 1.71 (seed 0)
    assert rmse_in < 0.2, f"RMSE inside the training range {rmse_in:.3f}"
    assert widening > 1.3, f"std outside / inside {widening:.2f}"
    assert "val_acc" not in sampler.history[-1] and math.isfinite(sampler.history[-1]["val_nll"])


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
    losses = off._step(x[:8], y[:8], opt_g, opt_d, torch.Generator().manual_seed(0))
    assert set(losses) == {"task"}
    on = calibrated(tiny_target(), x, y, steps=4, val_every=2)
    opt_g, opt_d = on._optimizers()
    d_params = {id(p) for p in on.discriminator.parameters()}
    assert opt_d is not None and not d_params & {
        id(p) for g in opt_g.param_groups for p in g["params"]
    }
    losses = on._step(x[:8], y[:8], opt_g, opt_d, torch.Generator().manual_seed(0))
    assert losses["adversarial"] > 0 and losses["discriminator"] > 0


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
    after = calibrated(target, x, y, pretrain_steps=100, lr_mixer=1e-2, pretrain_tolerance=0.0)
    noise = torch.randn(2000, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before.mixer.train(), after.mixer.train()
        loss_before = float(code_moment_loss(before.codes(noise)))
        loss_after = float(code_moment_loss(after.codes(noise)))
    assert loss_after < 0.5 * loss_before


def test_paper_settings_are_the_defaults() -> None:
    """The paper's MNIST HyperGAN: 512-wide generators, 32 nets x 32 images, Adam
    (0.5, 0.9) with weight decay 1e-4, lr 5e-4 / 1e-4 / 1e-4, constant, pre-training on."""
    c = HyperGAN.Config()
    assert (c.noise_dim, c.code_dim, c.generator_hidden, c.mixer_hidden) == (256, 128, 512, 512)
    assert (c.nets_per_step, c.noise_batch, c.batch_size) == (32, 32, 32)
    assert (c.lr_mixer, c.lr_generator, c.lr_discriminator) == (5e-4, 1e-4, 1e-4)
    assert (c.adam_beta1, c.adam_beta2, c.weight_decay) == (0.5, 0.9, 1e-4)
    assert c.lr_schedule == "constant" and c.pretrain_steps > 0 and c.beta == 1.0
    sampler = HyperGAN(tiny_target(), small_config())
    opt_g, _ = sampler._optimizers()
    # one group for the generators (output bias included) at lr_generator, one for the mixer
    assert [g["lr"] for g in opt_g.param_groups] == [c.lr_generator, c.lr_mixer]
    biases = {id(gen.head.bias) for gen in sampler.generators}
    assert biases <= {id(p) for p in opt_g.param_groups[0]["params"]}


def test_user_errors() -> None:
    target = tiny_target()
    with pytest.raises(UserError, match="before sample"):
        HyperGAN(target, small_config()).sample(2)
    with pytest.raises(UserError, match="noise_batch"):
        small_config(noise_batch=2, nets_per_step=4)
    with pytest.raises(UserError, match="lr_schedule"):
        small_config(lr_schedule="linear")
    with pytest.raises(UserError, match="hypergan.lr_mixer=-1"):
        small_config(lr_mixer=-1.0)
    with pytest.raises(UserError, match="hypergan.beta=nan"):
        small_config(beta=float("nan"))
    x, y = as_tensors(tiny_images(64))
    state = calibrated(target, x, y).state_dict()
    with pytest.raises(UserError, match="code_dim"):
        HyperGAN(target, small_config(code_dim=4)).load_state_dict(state)
    with pytest.raises(UserError, match="no setting"):
        HyperGAN.make_config({"not_a_setting": "1"})


def test_non_finite_task_loss_is_a_diverged_fit() -> None:
    x, y = as_tensors(tiny_images(32))
    x[:] = float("nan")
    sampler = HyperGAN(tiny_target(), small_config(steps=3, val_every=3))
    with pytest.raises(FitDiverged, match="hypergan: the task loss became nan at step 1"):
        sampler.fit(TensorDataset(x, y), seed=0)


def test_regression_task_is_used() -> None:
    """Regression: the validation NLL is the Gaussian mixture's, so it follows y's scale."""
    x, y = as_tensors(tiny_regression())
    sampler = HyperGAN(
        nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)),
        small_config(steps=0),
        task=Task(kind="regression", noise_std=0.1),
    )
    sampler.fit(TensorDataset(x, 10 * y), seed=0, val=TensorDataset(x, 10 * y))
    assert sampler.history[-1]["val_nll"] > 10  # an untrained net against targets of scale 10
