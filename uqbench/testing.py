"""Tiny offline data and the sampler contract test, for built-in methods and plugins alike.

A plugin author runs the same checks the built-ins pass::

    from uqbench.testing import check_sampler_contract
    def test_my_method():
        check_sampler_contract(MyMethod)

Each check fits on a few hundred 12x12 images (or 64 1D points) with the sampler's
defaults plus ``overrides`` — settings for seconds-long fits, kept with the tests
(``check_sampler_contract(MyMethod, overrides={"epochs": 2})``) — so a whole contract run
takes seconds.
"""

from __future__ import annotations

import dataclasses
import io
from collections import OrderedDict
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from uqbench.data.benchmark import BenchmarkData
from uqbench.errors import UserError
from uqbench.functional import stacked_forward
from uqbench.sampler import Task, WeightSampler
from uqbench.targets import batch_norm_statistics
from uqbench.training import as_tensors

TINY_IMAGE = 12


def tiny_target(num_classes: int = 3, image_size: int = TINY_IMAGE) -> nn.Sequential:
    """A 2-layer CNN (conv 1->4 3x3, ReLU, pool 2, linear) for 12x12 images."""
    side = (image_size - 2) // 2
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(1, 4, 3),
            act=nn.ReLU(),
            pool=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(4 * side * side, num_classes),
        )
    )


def tiny_regression_target(hidden: int = 32) -> nn.Sequential:
    """1 -> hidden -> 1 MLP for the tiny 1D regression set."""
    return nn.Sequential(
        OrderedDict(fc1=nn.Linear(1, hidden), act=nn.Tanh(), fc2=nn.Linear(hidden, 1))
    )


def tiny_images(n: int = 300, num_classes: int = 3, seed: int = 0) -> TensorDataset:
    """Images of class c carry a bright horizontal bar in band c plus noise: learnable in
    seconds."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    x = 0.3 * torch.rand(n, 1, TINY_IMAGE, TINY_IMAGE, generator=g)
    band = TINY_IMAGE // num_classes
    for c in range(num_classes):
        start = c * band
        x[y == c, :, start : start + max(1, band // 2), :] += 0.7
    return TensorDataset(x.clamp(0, 1), y)


def tiny_regression(n: int = 64, seed: int = 0) -> TensorDataset:
    """y = sin(2x) + N(0, 0.1^2) with x ~ U[-2, 2]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(n, generator=g)
    return TensorDataset(x, y)


def tiny_benchmark(kind: str = "classification") -> BenchmarkData:
    """A complete BenchmarkData for end-to-end tests: 'classification' (with an OOD set) or
    'regression', each with a small validation split (a fresh draw of the training
    generator) so every method's selection on ``val`` runs in its tests."""
    sources = {"train": "generated", "val": "generated", "test": "generated"}
    if kind == "regression":
        grid = torch.linspace(-4, 4, 81).unsqueeze(1)
        train, val = tiny_regression(), tiny_regression(32, seed=2)
        test = TensorDataset(grid, torch.sin(2 * grid[:, 0]))
        return BenchmarkData(
            name="tiny-regression",
            task=Task(kind="regression", noise_std=0.1),
            make_target=tiny_regression_target,
            train=train,
            val=val,
            test=test,
            train_range=(-2.0, 2.0),
            sources=sources,
            split_info=_split_info(train, val, test, test_seed=None),
        )
    g = torch.Generator().manual_seed(1)
    train, val, test = tiny_images(300, seed=0), tiny_images(60, seed=2), tiny_images(120, seed=1)
    return BenchmarkData(
        name="tiny",
        task=Task(num_classes=3),
        make_target=tiny_target,
        train=train,
        val=val,
        test=test,
        ood={"noise": torch.rand(120, 1, TINY_IMAGE, TINY_IMAGE, generator=g)},
        sources=sources | {"ood/noise": "generated"},
        split_info=_split_info(train, val, test, test_seed=1),
    )


def _split_info(
    train: TensorDataset, val: TensorDataset, test: TensorDataset, *, test_seed: int | None
) -> dict[str, dict[str, object]]:
    """Sizes and value hashes of the generated splits (seeds 0, 2 and ``test_seed``)."""
    from uqbench.data.registry import values_entry

    return {
        "train": values_entry(train, 0),
        "val": values_entry(val, 2),
        "test": values_entry(test, test_seed),
    }


def make_tiny_sampler(
    cls: type[WeightSampler],
    kind: str = "classification",
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
) -> WeightSampler:
    """``cls`` on the tiny benchmark's target: its default config, then ``overrides``."""
    data = tiny_benchmark(kind)
    torch.manual_seed(0)
    config = dataclasses.replace(cls.make_config(), **(overrides or {}))
    return cls(data.make_target(), config, task=data.task, device=device)


def check_samples(
    draw: object,
    target: nn.Module,
    n: int,
    *,
    device: str | torch.device,
    label: str,
) -> None:
    """Raise a UserError unless ``draw`` is what ``sample(n)`` must return for ``target``.

    The contract: a dict with exactly the names of ``target.named_parameters()`` (and,
    for a target with batch-norm, of its running statistics:
    :func:`uqbench.targets.batch_norm_statistics`), each a tensor of shape
    ``[n, *tensor.shape]``, of the target tensor's dtype, on ``device``, and finite. The
    message names ``label`` (the method, e.g. ``apd:teacher``) and the first offending
    entry. The harness runs this on every draw before scoring it, so a missing parameter
    (or statistic) is never filled in with the target's own.
    """
    call = f"{label}.sample({n})"
    if not isinstance(draw, dict):
        raise UserError(f"{call} returned {type(draw).__name__}; it must return a dict")
    buffers = dict(target.named_buffers())
    params = {
        **dict(target.named_parameters()),
        **{k: buffers[k] for k in batch_norm_statistics(target)},
    }
    for name in params:
        if name not in draw:
            what = "parameter" if name not in buffers else "batch-norm statistic"
            raise UserError(f"{call} is missing {what} {name}")
    for name in draw:
        if name not in params:
            raise UserError(
                f"{call} returned {name!r}, which is not a parameter of the target "
                f"(parameters: {', '.join(params)})"
            )
    want = torch.device(device)
    for name, param in params.items():
        value = draw[name]
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{call} returned {type(value).__name__} for {name}, not a tensor")
        shape = tuple(param.shape)
        if value.ndim == len(shape) + 1 and tuple(value.shape[1:]) == shape:
            if value.shape[0] != n:
                raise UserError(f"{call} returned {value.shape[0]} networks for {name}")
        elif tuple(value.shape) != (n, *shape):
            raise UserError(
                f"{call} returned shape {list(value.shape)} for {name}; expected {[n, *shape]}"
            )
        if value.dtype != param.dtype:
            raise UserError(
                f"{call} returned {name} as {value.dtype}; the target's is {param.dtype}"
            )
        if value.device.type != want.type or (
            want.index is not None and value.device.index != want.index
        ):
            raise UserError(f"{call} returned {name} on {value.device}; expected {want}")
        if not bool(torch.isfinite(value).all()):
            kind = "NaN" if bool(torch.isnan(value).any()) else "inf"
            raise UserError(f"{call} has {kind} in {name}")


def check_sampler_contract(
    cls: type[WeightSampler],
    n: int = 4,
    device: str = "cpu",
    overrides: dict[str, Any] | None = None,
) -> None:
    """Assert the WeightSampler contract for ``cls`` on classification and regression.

    Checks: :func:`check_samples` (names, shapes, dtypes, device, finite values; the same
    check the harness runs before scoring); the n networks of one draw differ;
    the same seeds give the same samples (fit and draw); ``state_dict`` survives a
    ``torch.save`` / ``torch.load(weights_only=True)`` round trip into a fresh instance;
    samples run through the vmapped forward; ``sample(0)`` is a UserError.
    """
    for kind in ("classification", "regression"):
        data = tiny_benchmark(kind)
        sampler = make_tiny_sampler(cls, kind, device, overrides)
        sampler.fit(data.train, seed=0, val=data.val)
        if sampler.max_samples is not None:
            n = min(n, sampler.max_samples)
        draw = sampler.sample(n, generator=torch.Generator().manual_seed(7))
        check_samples(draw, sampler.target, n, device=device, label=cls.name)
        flat = torch.cat([v.flatten(1) for v in draw.values()], dim=1)
        assert (flat[1:] - flat[0]).abs().amax() > 0, (
            "all sampled networks in one draw are identical"
        )

        again = sampler.sample(n, generator=torch.Generator().manual_seed(7))
        for name in draw:
            torch.testing.assert_close(
                again[name], draw[name], msg=f"{name}: same generator, new draw"
            )

        twin = make_tiny_sampler(cls, kind, device, overrides)
        twin.fit(data.train, seed=0, val=data.val)
        twin_draw = twin.sample(n, generator=torch.Generator().manual_seed(7))
        for name in draw:
            torch.testing.assert_close(
                twin_draw[name], draw[name], msg=f"{name}: same seed, new fit"
            )

        buffer = io.BytesIO()
        torch.save(sampler.state_dict(), buffer)
        buffer.seek(0)
        fresh = make_tiny_sampler(cls, kind, device, overrides)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        loaded = fresh.sample(n, generator=torch.Generator().manual_seed(7))
        for name in draw:
            torch.testing.assert_close(
                loaded[name], draw[name], msg=f"{name}: after state_dict round trip"
            )

        x, _ = as_tensors(data.test)
        out = stacked_forward(sampler.target, draw, x[:16].to(device))
        assert out.shape[:2] == (n, 16) and torch.isfinite(out).all()

        try:
            sampler.sample(0)
        except UserError:
            pass
        else:
            raise AssertionError("sample(0) must raise UserError")
