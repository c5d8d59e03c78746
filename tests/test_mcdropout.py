"""MC dropout: the sampler contract, the mask arithmetic by hand, and does-it-learn checks."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from tiny_configs import TINY
from torch import nn
from torch.utils.data import TensorDataset

from uqbench.baselines.mcdropout import MCDropout
from uqbench.errors import FitDiverged, UserError
from uqbench.functional import stacked_forward
from uqbench.sampler import Task
from uqbench.targets import toy1d_mlp
from uqbench.testing import make_tiny_sampler, tiny_benchmark
from uqbench.training import as_tensors


def conv_then_linear() -> nn.Sequential:
    """conv 2->3 (3x3) -> conv 3->4 (3x3) -> flatten -> linear 4*2*2 -> 5, on 6x6 inputs."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(2, 3, 3),
            act1=nn.ReLU(),
            conv2=nn.Conv2d(3, 4, 3),
            act2=nn.ReLU(),
            flatten=nn.Flatten(),
            fc=nn.Linear(16, 5),
        )
    )


def loaded(target: nn.Module, p: float, skip_first_layer: bool) -> MCDropout:
    sampler = MCDropout(target, MCDropout.Config(p=p, skip_first_layer=skip_first_layer))
    torch.manual_seed(0)
    weights = {k: torch.randn(v.shape) for k, v in target.named_parameters()}
    sampler.load_state_dict({"weights": weights, "p": p, "masked": sampler.masked})
    return sampler


@pytest.mark.parametrize("skip_first_layer", [True, False])
def test_masks_zero_input_columns_and_scale_survivors(skip_first_layer: bool) -> None:
    p, n = 0.4, 16
    sampler = loaded(conv_then_linear(), p, skip_first_layer)
    trained = sampler.weights
    draw = sampler.sample(n, generator=torch.Generator().manual_seed(3))
    masked = {"conv2.weight", "fc.weight"} | ({"conv1.weight"} if not skip_first_layer else set())
    assert set(sampler.masked) == masked
    for name, w in trained.items():
        if name not in masked:  # biases and the skipped first layer: exact copies
            for k in range(n):
                assert torch.equal(draw[name][k], w), name
            continue
        dropped = 0
        for k in range(n):
            for j in range(w.shape[1]):  # input unit / channel j: weight[:, j, ...]
                column = draw[name][k][:, j]
                if column.abs().sum() == 0:
                    dropped += 1
                else:
                    torch.testing.assert_close(column, w[:, j] / (1 - p), rtol=1e-6, atol=0)
        # Not every unit survives and not every unit is dropped, over 16 networks.
        assert 0 < dropped < n * w.shape[1], f"{name}: {dropped} of {n * w.shape[1]} dropped"


def test_masked_weights_equal_dropout_on_layer_inputs() -> None:
    """Zeroing weight columns is dropping the layer's inputs: conv2 of net k on h equals
    conv2 with the trained weights on h * z_k / (1 - p)."""
    p, n = 0.3, 5
    sampler = loaded(conv_then_linear(), p, skip_first_layer=True)
    masks = sampler.draw_masks(n, torch.Generator().manual_seed(11))
    weights = sampler.apply_masks(sampler.weights, masks)
    h = torch.randn(7, 3, 4, 4)
    conv = nn.functional.conv2d
    for k in range(n):
        dropped_input = h * masks["conv2.weight"][k].view(1, 3, 1, 1) / (1 - p)
        expected = conv(
            dropped_input, sampler.weights["conv2.weight"], sampler.weights["conv2.bias"]
        )
        got = conv(h, weights["conv2.weight"][k], weights["conv2.bias"][k])
        torch.testing.assert_close(got, expected)


def test_drop_rate_is_p() -> None:
    p, n = 0.25, 400
    sampler = loaded(conv_then_linear(), p, skip_first_layer=True)
    masks = sampler.draw_masks(n, torch.Generator().manual_seed(5))["fc.weight"]
    rate, trials = 1 - masks.mean().item(), masks.numel()
    # Within 4 binomial standard deviations of p.
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / trials), rate


def test_bad_settings_are_user_errors() -> None:
    data = tiny_benchmark()
    with pytest.raises(UserError, match=r"mcdropout.p=1.0 is invalid"):
        MCDropout(data.make_target(), MCDropout.Config(p=1.0), task=data.task)
    with pytest.raises(UserError, match="not fitted"):
        MCDropout(data.make_target(), task=data.task).sample(2)
    sampler = make_tiny_sampler(MCDropout, overrides=TINY["mcdropout"])
    sampler.config.masks_per_step = 10_000
    with pytest.raises(UserError, match="slices"):
        sampler.fit(data.train, seed=0)


def test_learns_tiny_images() -> None:
    data = tiny_benchmark()
    sampler = make_tiny_sampler(MCDropout, overrides=TINY["mcdropout"])
    sampler.fit(data.train, seed=0)
    x, y = as_tensors(data.test)
    probs = stacked_forward(sampler.target, sampler.sample(50), x).softmax(-1)
    accuracy = (probs.mean(0).argmax(-1) == y).float().mean().item()
    assert accuracy >= 0.95, f"accuracy of 50 masked nets {accuracy:.3f}"


def test_toy1d_fits_and_is_unsure_outside_the_data() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20, 1, generator=g) * 8 - 4
    y = x[:, 0] ** 3 + 3 * torch.randn(20, generator=g)
    grid = torch.linspace(-6, 6, 121).unsqueeze(1)
    sampler = MCDropout(
        toy1d_mlp(),
        MCDropout.make_config(benchmark="toy1d"),
        task=Task("regression", noise_std=3.0),
    )
    sampler.fit(TensorDataset(x, y), seed=0)
    mean_k = stacked_forward(sampler.target, sampler.sample(200, generator=g), grid)[..., 0]
    inside = grid[:, 0].abs() <= 4
    rmse_in = (mean_k.mean(0) - grid[:, 0] ** 3)[inside].pow(2).mean().sqrt().item()
    std = mean_k.std(0, correction=0)
    std_in, std_out = std[inside].mean().item(), std[~inside].mean().item()
    assert rmse_in < 2 * 3.0, f"rmse inside the training range {rmse_in:.2f}"
    assert std_out >= 2 * std_in, f"epistemic std out {std_out:.3f} vs in {std_in:.3f}"


def test_noise_data_and_init_streams_never_coincide_across_seeds(monkeypatch) -> None:
    """Each purpose draws from its own derive_seeds stream: seed 0's training masks are not
    seed 1's data order (the old ``seed + 1`` scheme made them equal)."""
    import uqbench.baselines.mcdropout as module

    used: list[int] = []
    real = module.seeded_generator
    monkeypatch.setattr(module, "seeded_generator", lambda s, *a: used.append(s) or real(s, *a))
    data = tiny_benchmark()
    val = TensorDataset(*(t[:30] for t in data.test.tensors))
    overrides = {**TINY["mcdropout"], "epochs": 1}
    streams = {}
    for seed in (0, 1):
        used.clear()
        make_tiny_sampler(MCDropout, overrides=overrides).fit(data.train, seed=seed, val=val)
        streams[seed] = set(used)
        assert len(streams[seed]) == 3  # data order, training noise, validation masks
    assert not streams[0] & streams[1]


def test_non_finite_loss_is_fit_diverged() -> None:
    data = tiny_benchmark()
    x, y = (t.clone() for t in data.train.tensors)
    x[3] = float("inf")
    sampler = make_tiny_sampler(MCDropout, overrides=TINY["mcdropout"])
    with pytest.raises(FitDiverged, match=r"mcdropout: the training loss became nan at step \d"):
        sampler.fit(TensorDataset(x, y), seed=0)


def test_validation_reported_once_per_epoch() -> None:
    data = tiny_benchmark()
    calls: list[dict] = []
    sampler = make_tiny_sampler(MCDropout, overrides={**TINY["mcdropout"], "keep_best": True})
    val = TensorDataset(*(t[:60] for t in data.test.tensors))
    sampler.fit(data.train, seed=0, val=val, progress=lambda s, t, **m: calls.append(m))
    reports = [m for m in calls if "val_nll" in m]
    assert len(reports) == TINY["mcdropout"]["epochs"]
    assert reports[-1]["val_acc"] >= 0.9
    assert sampler.extra_metrics["best_epoch"] >= 1
