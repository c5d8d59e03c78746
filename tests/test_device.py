"""On a CUDA machine: every sampler fits and samples on the GPU, and the harness agrees with
the CPU."""

from __future__ import annotations

import pytest
import torch
from tiny_configs import TINY

from uqbench.evaluation.harness import evaluate
from uqbench.registry import discover, load_method
from uqbench.testing import check_sampler_contract, make_tiny_sampler, tiny_benchmark

needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device on this machine"
)


@pytest.mark.device
@needs_cuda
@pytest.mark.parametrize("name", sorted(discover()))
def test_contract_on_cuda(name: str) -> None:
    check_sampler_contract(load_method(name), device="cuda", overrides=TINY.get(name))


@pytest.mark.device
@needs_cuda
def test_harness_on_cuda_matches_cpu() -> None:
    data = tiny_benchmark()
    sampler = make_tiny_sampler(load_method("ensemble"), overrides=TINY["ensemble"])
    sampler.fit(data.train, seed=0)
    on_cpu = evaluate(sampler, data, n_samples=4, seed=0).metrics
    on_cuda = make_tiny_sampler(load_method("ensemble"), device="cuda", overrides=TINY["ensemble"])
    on_cuda.load_state_dict(sampler.state_dict())
    on_gpu = evaluate(on_cuda, data, n_samples=4, seed=0).metrics
    for key in ("acc", "nll", "brier", "ece", "auroc/noise/entropy"):
        assert on_gpu[key] == pytest.approx(on_cpu[key], abs=1e-4), key
