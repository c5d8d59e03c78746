"""Run many sampled networks at once: ``vmap(functional_call)`` over stacked weights.

This is the one place the library evaluates sampled networks; there is no Python loop
over networks anywhere in training or evaluation. Memory is bounded by chunking the
inputs (and, if needed, the networks) against a byte budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from uqbench import fast_forward
from uqbench.targets import leaf_outputs

#: Default budget for the activations of one batched forward pass (bytes).
DEFAULT_MEMORY_BUDGET = 1 << 30


def stacked_forward(target: nn.Module, weights: dict[str, Tensor], x: Tensor) -> Tensor:
    """Outputs ``[n, B, ...]`` of the n networks in ``weights`` on the same inputs ``x [B, ...]``.

    Differentiable in ``weights`` (used for training HyperGAN). Supported Sequential
    targets on CPU take the exact faster path of :mod:`uqbench.fast_forward` (one GEMM for
    the shared first layer, grouped convolutions), with or without autograd: a HyperGAN
    step at the mnist5000 preset measured 45 ms instead of 69-78 ms with ``vmap``.
    """
    if fast_forward.preferred(target, weights, x):
        return fast_forward.fast_stacked_forward(target, weights, x)
    buffers = _shared_buffers(target, weights)

    def one(params: dict[str, Tensor], inputs: Tensor) -> Tensor:
        return functional_call(target, (params, buffers), (inputs,))

    return vmap(one, in_dims=(0, None))(weights, x)


def stacked_forward_per_net(target: nn.Module, weights: dict[str, Tensor], x: Tensor) -> Tensor:
    """Outputs ``[n, B, ...]`` where network k sees its own inputs ``x[k]`` (``x: [n, B, ...]``)."""
    buffers = _shared_buffers(target, weights)

    def one(params: dict[str, Tensor], inputs: Tensor) -> Tensor:
        return functional_call(target, (params, buffers), (inputs,))

    return vmap(one, in_dims=(0, 0))(weights, x)


def _shared_buffers(target: nn.Module, weights: dict[str, Tensor]) -> dict[str, Tensor]:
    """The target's buffers that ``weights`` does not give per network (e.g. batch-norm
    statistics a sampler recomputed for each network are taken from ``weights``)."""
    return {k: v for k, v in target.named_buffers() if k not in weights}


def activation_floats_per_example(target: nn.Module, example: Tensor) -> int:
    """Floats one network materialises per input example (sum over every module's output).

    Measured with forward hooks on one example; used to size chunks.
    """
    total = sum(output.numel() for _, output in leaf_outputs(target, example))
    return max(total + example[:1].numel(), 1)


@torch.no_grad()
def batched_predict(
    target: nn.Module,
    weights: dict[str, Tensor],
    x: Tensor,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    transform=None,
) -> Tensor:
    """Outputs ``[n, N, ...]`` of all n networks on all N inputs, within ``memory_budget`` bytes.

    Inputs are moved to the weights' device chunk by chunk; ``transform`` (e.g. softmax)
    is applied per chunk so only its result is kept. The target runs in evaluation mode
    (batch-norm normalises with each network's statistics, not the batch's) and is put
    back in the mode it had.
    """
    was_training = target.training
    target.eval()
    try:
        return _predict_in_chunks(target, weights, x, memory_budget, transform)
    finally:
        target.train(was_training)


def _predict_in_chunks(
    target: nn.Module,
    weights: dict[str, Tensor],
    x: Tensor,
    memory_budget: int,
    transform: Callable[[Tensor], Tensor] | None,
) -> Tensor:
    n = next(iter(weights.values())).shape[0]
    device = next(iter(weights.values())).device
    per_example = activation_floats_per_example(target, x[:1].to(device)) * 4
    # x2: vmap keeps an input and an output buffer alive per layer.
    images_per_chunk = max(1, memory_budget // (2 * per_example * n))
    nets_per_chunk = n
    if images_per_chunk == 1 and 2 * per_example * n > memory_budget:
        nets_per_chunk = max(1, memory_budget // (2 * per_example))
    outputs = []
    for start in range(0, n, nets_per_chunk):
        w = {k: v[start : start + nets_per_chunk] for k, v in weights.items()}
        parts = []
        for i in range(0, x.shape[0], images_per_chunk):
            out = stacked_forward(target, w, x[i : i + images_per_chunk].to(device))
            parts.append(transform(out) if transform is not None else out)
        outputs.append(torch.cat(parts, dim=1))
    return torch.cat(outputs, dim=0)


def flat_weight_norms(weights: dict[str, Tensor]) -> Tensor:
    """L2 norm of each sampled network's whole flattened weight vector, shape ``[n]``."""
    squares = sum(v.flatten(1).double().pow(2).sum(1) for v in weights.values())
    return torch.sqrt(squares)


def fan_in(shape: torch.Size) -> int:
    """Fan-in of a Linear / Conv2d weight shape (input units x kernel size)."""
    return math.prod(shape[1:]) if len(shape) > 1 else 1
