r"""``hypergan-repulsive``: HyperGAN with a term that rewards disagreement in function space.

The paper's discriminator sees only the codes, so nothing in its objective asks the
generated networks to *predict* differently; the authors' follow-up code replaced the GAN
term with an SVGD repulsion on network outputs. Here the paper's objective gets a kernel
repulsion on the networks' predictive distributions on the step's batch: with
:math:`p_k \in \mathbb R^{B \times C}` the softmax outputs of network :math:`k` (the
regression mean for regression) and
:math:`d_{kl} = \frac1B \lVert p_k - p_l \rVert^2`,

.. math::

    \lambda\, \frac{1}{n(n-1)} \sum_{k \ne l} \exp(-d_{kl} / h)

is added to the generators' loss (``repulsion`` = :math:`\lambda`). :math:`h` is
``repulsion_bandwidth``, or with 0 the SVGD median heuristic
:math:`\mathrm{med}(d) / \log(n + 1)`, held fixed within the step. Lowering the mean
kernel value pushes the networks' predictions apart; the task loss keeps each one
accurate. Not the default: it is a variant to compare against the paper's model.

``hypergan-engineered-repulsive`` adds the same term to ``hypergan-engineered`` (the fast
shared bias, 4 networks a step in the mnist presets): the engineered model trains within
the protocol's tuning budget where the paper's does not, so a tune of the repulsion
weight on validation can say whether rewarding disagreement pays there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from uqbench.configs import LogUniform, non_negative, positive, setting
from uqbench.hypergan.config import HyperGANConfig, redefault
from uqbench.hypergan.engineered import HyperGANEngineered, HyperGANEngineeredConfig
from uqbench.hypergan.sampler import HyperGAN
from uqbench.sampler import Task


def kernel_repulsion(outputs: Tensor, task: Task, bandwidth: float = 0.0) -> Tensor:
    """Mean RBF kernel between the n networks' predictions on one batch (see the module doc).

    ``outputs`` [n, B, ...]; ``bandwidth`` 0 uses the median heuristic (detached).
    """
    n, b = outputs.shape[:2]
    preds = outputs.softmax(-1) if task.is_classification else outputs[..., :1]
    flat = preds.reshape(n, -1)
    sq = (flat[:, None, :] - flat[None, :, :]).pow(2).sum(-1) / b  # [n, n]
    off = ~torch.eye(n, dtype=torch.bool, device=outputs.device)
    if bandwidth > 0:
        h = torch.tensor(bandwidth, dtype=sq.dtype, device=sq.device)
    else:
        h = (sq.detach()[off].median() / math.log(n + 1)).clamp_min(1e-8)
    return torch.exp(-sq / h)[off].mean()


@dataclass
class HyperGANRepulsiveConfig(HyperGANConfig):
    """HyperGAN settings plus the weight and bandwidth of the function-space repulsion."""

    owner: ClassVar[str] = "hypergan-repulsive"
    #: Weight λ of the kernel repulsion on the networks' predictions. On mnist5000's
    #: validation split (250 steps, 4 nets) 1 and 10 kept the networks at chance; 0.01
    #: learned (results/hypergan_dev/validation_probes.md).
    repulsion: float = setting(0.01, check=positive, search=LogUniform(1e-3, 1.0))
    #: Kernel bandwidth h on the per-point squared distance; 0: median heuristic.
    repulsion_bandwidth: float = setting(0.0, check=non_negative)


class HyperGANRepulsive(HyperGAN):
    """HyperGAN plus a kernel repulsion on the networks' predictions (a variant, not the paper).

    The paper's model and settings, with ``repulsion`` x the mean RBF kernel between the
    step's networks' predictive distributions on the batch added to the generators' loss
    (median-heuristic bandwidth), so disagreement in function space is rewarded.
    """

    name = "hypergan-repulsive"
    Config = HyperGANRepulsiveConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = dict(HyperGAN.presets)

    def _function_term(self, outputs: Tensor, y: Tensor) -> Tensor | None:
        c = self.config
        if outputs.shape[0] < 2:
            return None
        return c.repulsion * kernel_repulsion(outputs, self.task, c.repulsion_bandwidth)


@dataclass
class HyperGANEngineeredRepulsiveConfig(HyperGANEngineeredConfig):
    """``hypergan-engineered`` settings plus the repulsion's weight and bandwidth."""

    owner: ClassVar[str] = "hypergan-engineered-repulsive"
    repulsion: float = redefault(HyperGANRepulsiveConfig, "repulsion", 0.01)
    repulsion_bandwidth: float = redefault(HyperGANRepulsiveConfig, "repulsion_bandwidth", 0.0)


class HyperGANEngineeredRepulsive(HyperGANEngineered):
    """The engineered HyperGAN plus the kernel repulsion on its networks' predictions."""

    name = "hypergan-engineered-repulsive"
    Config = HyperGANEngineeredRepulsiveConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = dict(HyperGANEngineered.presets)
    _function_term = HyperGANRepulsive._function_term
