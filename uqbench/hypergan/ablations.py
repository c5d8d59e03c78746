"""HyperGAN's ablations as methods of their own, so one ``compare`` shows them side by side.

``hypergan-nodisc``: no discriminator (β term off); ``hypergan-nomixer``: no mixer (per-layer
codes drawn independently from N(0, I)). The paper's model, presets and budget otherwise —
the paper's diversity ablation (Figure 7).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from uqbench.hypergan.config import HyperGANConfig, redefault
from uqbench.hypergan.sampler import HyperGAN


def _with(
    overrides: dict[str, Any], presets: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    return {name: {**preset, **overrides} for name, preset in presets.items()}


@dataclass
class HyperGANNoDiscriminatorConfig(HyperGANConfig):
    """HyperGAN settings with the discriminator off."""

    owner: ClassVar[str] = "hypergan-nodisc"
    discriminator: bool = redefault(HyperGANConfig, "discriminator", False)


@dataclass
class HyperGANNoMixerConfig(HyperGANConfig):
    """HyperGAN settings with the mixer off (and so no discriminator)."""

    owner: ClassVar[str] = "hypergan-nomixer"
    mixer: bool = redefault(HyperGANConfig, "mixer", False)


class HyperGANNoDiscriminator(HyperGAN):
    """The paper's HyperGAN without the discriminator on the codes (ablation)."""

    name: ClassVar[str] = "hypergan-nodisc"
    Config: ClassVar[type] = HyperGANNoDiscriminatorConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = _with({"discriminator": False}, HyperGAN.presets)


class HyperGANNoMixer(HyperGAN):
    """The paper's HyperGAN without the mixer: independent per-layer codes (ablation)."""

    name: ClassVar[str] = "hypergan-nomixer"
    Config: ClassVar[type] = HyperGANNoMixerConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = _with({"mixer": False}, HyperGAN.presets)
