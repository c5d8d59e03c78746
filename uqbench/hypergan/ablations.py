"""HyperGAN's ablations as methods of their own, so one ``compare`` shows them side by side.

``hypergan-nodisc``: no discriminator (β term off); ``hypergan-nomixer``: no mixer (per-layer
codes drawn independently from N(0, I)). Same presets and budget as ``hypergan``
otherwise — the paper's diversity ablation (Figure 7).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from uqbench.hypergan.sampler import HyperGAN


def _with(
    overrides: dict[str, Any], presets: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    return {name: {**preset, **overrides} for name, preset in presets.items()}


class HyperGANNoDiscriminator(HyperGAN):
    """HyperGAN without the discriminator on the codes (ablation)."""

    name: ClassVar[str] = "hypergan-nodisc"
    Config: ClassVar[type] = dataclasses.make_dataclass(
        "HyperGANNoDiscriminatorConfig", [("discriminator", bool, False)], bases=(HyperGAN.Config,)
    )
    presets: ClassVar[dict[str, dict[str, Any]]] = _with({"discriminator": False}, HyperGAN.presets)


class HyperGANNoMixer(HyperGAN):
    """HyperGAN without the mixer: independent per-layer codes (ablation)."""

    name: ClassVar[str] = "hypergan-nomixer"
    Config: ClassVar[type] = dataclasses.make_dataclass(
        "HyperGANNoMixerConfig", [("mixer", bool, False)], bases=(HyperGAN.Config,)
    )
    presets: ClassVar[dict[str, dict[str, Any]]] = _with({"mixer": False}, HyperGAN.presets)
