"""HyperGAN's settings: the paper's MNIST configuration as the defaults, each field checked.

Defaults follow Ratzlaff & Li (ICML 2019) and the authors' MNIST-5000 script
(neale/HyperGAN ``hypermnist5000.py``): noise 256, codes 128, 512-wide mixer, generators
and discriminator, 32 networks per step on a batch of 32 images, Adam with betas
(0.5, 0.9) and weight decay 1e-4, learning rates 5e-4 (mixer), 1e-4 (generators,
discriminator), mixer pre-training on. Where the authors' script differs from the paper
(discriminator lr 1e-5, the task loss scaled by 1000 instead of the adversarial term by
β), the paper is followed and β's search range covers the script's ratio (1e-3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from uqbench.configs import (
    CheckedConfig,
    Choice,
    IntRange,
    LogUniform,
    at_least,
    in_range,
    non_negative,
    one_of,
    positive,
    require,
    setting,
)


@dataclass
class HyperGANConfig(CheckedConfig):
    """HyperGAN settings (the paper's MNIST ones; see the module docstring)."""

    owner: ClassVar[str] = "hypergan"

    #: Width of the noise s fed to the mixer (paper: 256 for MNIST, 512 for CIFAR).
    noise_dim: int = setting(256, check=at_least(1))
    #: Width d of each per-layer code (paper: 128 for MNIST, 256 for CIFAR).
    code_dim: int = setting(128, check=at_least(1), search=Choice((32, 64, 128, 256)))
    mixer_hidden: int = setting(512, check=at_least(1))
    #: Generator hidden width h: every network is G(z) with h(z) this wide (paper: 512).
    generator_hidden: int = setting(512, check=at_least(1))
    discriminator_hidden: int = setting(512, check=at_least(1))
    #: False: ablation without mixer, per-layer codes drawn independently from N(0, I)
    #: (then there is no discriminator either: the codes are exactly the prior).
    mixer: bool = setting(True)
    #: False: ablation without discriminator (no D, no beta term).
    discriminator: bool = setting(True)
    #: Weight of the adversarial term on the codes.
    beta: float = setting(1.0, check=non_negative, search=LogUniform(1e-3, 10.0))
    #: Std of the first generated weights as a fraction of Kaiming's sqrt(2 / fan_in);
    #: the generators' last layer is rescaled once at the start of ``fit`` to reach it.
    init_scale: float = setting(0.5, check=positive, search=LogUniform(0.1, 2.0))
    #: Optimisation steps (each: one data batch, ``nets_per_step`` generated networks).
    steps: int = setting(2000, check=at_least(0), search=IntRange(500, 4000, log=True))
    #: Generated networks evaluated on each step's data batch (paper: 32).
    nets_per_step: int = setting(32, check=at_least(1), search=IntRange(4, 32, log=True))
    #: Noise draws per step through the mixer and generator bodies (batch-norm statistics
    #: and the discriminator's fakes); the first ``nets_per_step`` become networks.
    noise_batch: int = setting(32, check=at_least(2))
    batch_size: int = setting(32, check=at_least(1))
    lr_mixer: float = setting(5e-4, check=positive, search=LogUniform(1e-5, 3e-3))
    lr_generator: float = setting(1e-4, check=positive, search=LogUniform(1e-5, 3e-3))
    lr_discriminator: float = setting(1e-4, check=positive)
    #: Adam's (coupled) L2 on mixer and generators (paper: 1e-4).
    weight_decay: float = setting(1e-4, check=non_negative, search=Choice((0.0, 1e-4)))
    adam_beta1: float = setting(0.5, check=in_range(0.0, 1.0, include_high=False))
    adam_beta2: float = setting(0.9, check=in_range(0.0, 1.0, include_high=False))
    #: "constant" (the authors) or "cosine" (decay to 0 over ``steps``).
    lr_schedule: str = setting(
        "constant", check=one_of("constant", "cosine"), search=Choice(("constant", "cosine"))
    )
    #: Mixer pre-training steps (codes -> N(0, I) in mean and covariance); 0 = off.
    pretrain_steps: int = setting(500, check=at_least(0))
    pretrain_batch: int = setting(1000, check=at_least(2))
    #: Pre-training stops early once the moment loss per code dimension falls below this
    #: (its sampling floor with 1,000 draws of 128-d codes is about d / n = 0.13).
    pretrain_tolerance: float = setting(0.25, check=non_negative)
    #: Validate (val NLL and accuracy of ``val_nets`` networks, diversity) this often.
    val_every: int = setting(200, check=at_least(1))
    val_nets: int = setting(10, check=at_least(1))
    #: At most this many validation examples are used: a fixed random subset drawn with
    #: ``val_subset_seed`` (splits can be sorted by class, so never the first ones).
    val_max_examples: int = setting(1000, check=at_least(1))
    val_subset_seed: int = setting(0, check=at_least(0))
    #: Keep the state with the lowest validation NLL (needs ``val``; else: the last state).
    keep_best: bool = setting(True)
    #: Networks drawn at each validation for the weight-space diagnostics.
    diversity_samples: int = setting(100, check=at_least(2))
    #: Noise draws used to re-estimate the batch-norm statistics used by ``sample``.
    bn_calibration: int = setting(2048, check=at_least(2))

    def check_together(self) -> None:
        require(
            self.noise_batch >= self.nets_per_step,
            self.owner,
            f"noise_batch={self.noise_batch} must be >= nets_per_step={self.nets_per_step} "
            "(batch-norm statistics come from the noise batch)",
        )


def redefault(config_cls: type, name: str, default: object) -> object:
    """``config_cls``'s setting ``name`` with another default (same check and search range),
    for a variant's Config that only changes defaults."""
    meta = config_cls.__dataclass_fields__[name].metadata
    return setting(default, check=meta.get("check"), search=meta.get("search"))


__all__ = ["HyperGANConfig", "redefault"]
