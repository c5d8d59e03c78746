r"""What HyperGAN records while it trains: how different its networks are, in weights and in
function.

For one layer with :math:`P` generated numbers (weight and bias) and :math:`n` sampled
networks :math:`w_1..w_n \in \mathbb R^P`, with :math:`\bar w` their mean:

- ``shared_var/<layer>`` :math:`= \lVert \bar w \rVert^2 / P`, the mean square of the part
  every network shares;
- ``spread_var/<layer>`` :math:`= \frac1P \sum_j \frac{1}{n-1} \sum_k (w_{kj} - \bar w_j)^2`,
  the across-network (unbiased) variance averaged over the layer's numbers.

A layer whose spread is a small share of shared + spread holds one network plus small
perturbations. In function space, ``val_disagreement`` is the pairwise disagreement: the
mean over pairs of distinct networks of the share of points whose argmaxes differ (its
expectation does not depend on n; the harness's metric of the same name).
"""

from __future__ import annotations

import torch
from torch import Tensor

from uqbench.hypergan.networks import LayerSpec


def weight_spread(draw: dict[str, Tensor], specs: list[LayerSpec]) -> dict[str, float]:
    """``shared_var/<layer>`` and ``spread_var/<layer>`` of ``draw`` (see the module doc)."""
    out: dict[str, float] = {}
    for spec in specs:
        flat = torch.cat([draw[name].flatten(1) for name in spec.names], dim=1).double()
        mean = flat.mean(0)
        out[f"shared_var/{spec.layer}"] = float(mean.pow(2).mean())
        out[f"spread_var/{spec.layer}"] = float(flat.var(0, unbiased=True).mean())
    return out


def pairwise_disagreement(outputs: Tensor) -> float:
    """Mean over pairs of distinct networks of the share of points where their argmaxes
    differ; ``outputs`` [n, B, C] (logits or probabilities), n >= 2."""
    n = outputs.shape[0]
    if n < 2:
        raise ValueError("pairwise disagreement needs at least 2 networks")
    labels = outputs.argmax(-1)  # [n, B]
    differ = (labels[:, None, :] != labels[None, :, :]).double().mean(-1)  # [n, n]
    return float(differ.sum() / (n * (n - 1)))
