"""What ``sample()`` returns is checked against the contract before anything is scored."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch import nn

from uqbench.errors import UserError
from uqbench.evaluation import evaluate
from uqbench.sampler import WeightSampler
from uqbench.testing import check_sampler_contract, check_samples, tiny_benchmark


class Broken(WeightSampler):
    """Test double: initial weights plus noise, breaking the contract as ``breach`` says."""

    name = "noisy"
    breach = "none"

    @dataclass
    class Config:
        scale: float = 0.5

    def fit(self, train, *, seed, val=None, progress=None) -> None:
        self.base = {k: p.detach().clone() for k, p in self.target.named_parameters()}

    def sample(self, n, *, generator=None):
        self.check_n(n)
        draw = {
            k: v + self.config.scale * torch.randn((n, *v.shape), generator=generator)
            for k, v in self.base.items()
        }
        name = list(draw)[-1]
        if self.breach == "missing":
            draw.pop(name)
        elif self.breach == "extra_networks":
            draw[name] = torch.cat([draw[name], draw[name][:3]])
        elif self.breach == "nan":
            draw[name][0].view(-1)[0] = float("nan")
        elif self.breach == "float64":
            draw[name] = draw[name].double()
        return draw

    def state_dict(self) -> dict:
        return {"base": self.base}

    def load_state_dict(self, state: dict) -> None:
        self.base = state["base"]


def _fitted(breach: str = "none") -> tuple[Broken, object]:
    data = tiny_benchmark()
    torch.manual_seed(0)
    sampler = Broken(data.make_target(), task=data.task)
    sampler.fit(data.train, seed=0)
    sampler.breach = breach
    return sampler, data


def _target() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 3))


def _good(target: nn.Module, n: int) -> dict[str, torch.Tensor]:
    return {k: torch.randn(n, *p.shape) for k, p in target.named_parameters()}


def test_a_draw_that_keeps_the_contract_passes() -> None:
    target = _target()
    check_samples(_good(target, 4), target, 4, device="cpu", label="m")


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda d: d.pop("2.bias"), "m.sample(4) is missing parameter 2.bias"),
        (lambda d: d.update(extra=torch.zeros(4)), "m.sample(4) returned 'extra', which is not"),
        (lambda d: d.update({"0.weight": torch.zeros(7, 2, 1, 3, 3)}), "returned 7 networks for"),
        (lambda d: d.update({"0.bias": torch.zeros(4, 3)}), "returned shape [4, 3] for 0.bias"),
        (lambda d: d.update({"0.bias": torch.zeros(2)}), "returned shape [2] for 0.bias"),
        (lambda d: d["2.weight"].__setitem__((1, 0, 0), float("nan")), "has NaN in 2.weight"),
        (lambda d: d["0.bias"].__setitem__((0, 1), float("inf")), "has inf in 0.bias"),
        (
            lambda d: d.update({"2.bias": torch.zeros(4, 3, dtype=torch.float64)}),
            "returned 2.bias as torch.float64",
        ),
        (lambda d: d.update({"2.bias": [0.0]}), "returned list for 2.bias, not a tensor"),
    ],
)
def test_each_breach_is_named(corrupt, message: str) -> None:
    target = _target()
    draw = _good(target, 4)
    corrupt(draw)
    with pytest.raises(UserError, match=re.escape(message)):
        check_samples(draw, target, 4, device="cpu", label="m")


def test_wrong_device_and_not_a_dict() -> None:
    target = _target()
    with pytest.raises(UserError, match=r"on cpu; expected meta"):
        check_samples(_good(target, 2), target, 2, device="meta", label="m")
    with pytest.raises(UserError, match="returned list; it must return a dict"):
        check_samples([1], target, 2, device="cpu", label="m")


def test_property_random_breaches_are_caught_and_clean_draws_pass() -> None:
    """Seeded random targets and random corruptions: every breach raises, naming the
    parameter it touched; every untouched draw passes."""
    rng = np.random.default_rng(0)
    for trial in range(200):
        width = int(rng.integers(1, 5))
        layers = [nn.Linear(int(rng.integers(1, 4)), width) for _ in range(int(rng.integers(1, 4)))]
        target = nn.Sequential(*layers)
        if rng.uniform() < 0.3:
            target = target.double()
        params = dict(target.named_parameters())
        n = int(rng.integers(1, 6))
        draw = {k: torch.randn(n, *p.shape, dtype=p.dtype) for k, p in params.items()}
        names = list(params)
        victim = names[int(rng.integers(len(names)))]
        kind = ["none", "drop", "extra", "count", "shape", "dtype", "nan", "inf"][trial % 8]
        value = draw[victim]
        if kind == "drop":
            del draw[victim]
        elif kind == "extra":
            victim = f"ghost{trial}"
            draw[victim] = torch.zeros(n)
        elif kind == "count":
            draw[victim] = torch.zeros(n + int(rng.integers(1, 4)), *value.shape[1:])
        elif kind == "shape":
            draw[victim] = torch.zeros(n, *value.shape[1:], 2, dtype=value.dtype)
        elif kind == "dtype":
            other = torch.float16 if value.dtype != torch.float16 else torch.float32
            draw[victim] = value.to(other)
        elif kind in ("nan", "inf"):
            flat = value.view(-1)
            flat[int(rng.integers(flat.numel()))] = float(kind)
        if kind == "none":
            check_samples(draw, target, n, device="cpu", label="prop")
            continue
        with pytest.raises(UserError) as info:
            check_samples(draw, target, n, device="cpu", label="prop")
        text = str(info.value)
        assert text.startswith(f"prop.sample({n})") and victim in text, (kind, text)
        if kind in ("nan", "inf"):
            assert ("NaN" if kind == "nan" else "inf") in text


@pytest.mark.parametrize(
    ("breach", "message"),
    [
        ("missing", "noisy.sample(10) is missing parameter fc.bias"),
        ("extra_networks", "noisy.sample(10) returned 13 networks for fc.bias"),
        ("nan", "noisy.sample(10) has NaN in fc.bias"),
        ("float64", "noisy.sample(10) returned fc.bias as torch.float64"),
    ],
)
def test_the_harness_refuses_a_draw_that_breaks_the_contract(breach: str, message: str) -> None:
    sampler, data = _fitted(breach)
    with pytest.raises(UserError, match=re.escape(message)):
        evaluate(sampler, data, n_samples=10, seed=0)


def test_a_reference_view_is_checked_too() -> None:
    view, data = _fitted("nan")

    class WithView(Broken):
        def reference_views(self):
            return {"teacher": view}

    sampler = WithView(data.make_target(), task=data.task)
    sampler.fit(data.train, seed=0)
    with pytest.raises(UserError, match=re.escape("noisy:teacher.sample(4) has NaN in fc.bias")):
        evaluate(sampler, data, n_samples=4, seed=0)
    view.breach = "none"
    assert evaluate(sampler, data, n_samples=4, seed=0).metrics["teacher:n_samples"] == 4


def test_the_contract_check_uses_the_same_validator() -> None:
    check_sampler_contract(Broken)

    class Float64(Broken):
        breach = "float64"

    with pytest.raises(UserError, match=re.escape("returned fc.bias as torch.float64")):
        check_sampler_contract(Float64)
