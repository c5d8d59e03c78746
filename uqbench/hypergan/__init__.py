"""HyperGAN (Ratzlaff & Li, ICML 2019) and its two ablations.

``sampler``: the mixer, the per-layer generators, the code discriminator and the
:class:`HyperGAN` sampler; ``ablations``: the same model without its discriminator or
without its mixer, registered as methods of their own.
"""

from uqbench.hypergan.ablations import HyperGANNoDiscriminator, HyperGANNoMixer
from uqbench.hypergan.sampler import HyperGAN, HyperGANConfig, code_moment_loss, layer_specs

__all__ = [
    "HyperGAN",
    "HyperGANConfig",
    "HyperGANNoDiscriminator",
    "HyperGANNoMixer",
    "code_moment_loss",
    "layer_specs",
]
