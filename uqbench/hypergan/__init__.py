"""HyperGAN (Ratzlaff & Li, ICML 2019), its ablations and two variants.

``config``: the settings (the paper's MNIST ones by default); ``networks``: the mixer, the
per-layer generators and the code discriminator; ``sampler``: :class:`HyperGAN`, the
paper's model; ``diagnostics``: what it records while training (weight-space spread,
pairwise disagreement); ``ablations``: no discriminator / no mixer; ``engineered``: the
departures earlier mnist5000 runs chose; ``repulsive``: a function-space repulsion.
"""

from uqbench.hypergan.ablations import HyperGANNoDiscriminator, HyperGANNoMixer
from uqbench.hypergan.config import HyperGANConfig
from uqbench.hypergan.engineered import HyperGANEngineered
from uqbench.hypergan.networks import code_moment_loss, layer_specs
from uqbench.hypergan.repulsive import (
    HyperGANEngineeredRepulsive,
    HyperGANRepulsive,
    kernel_repulsion,
)
from uqbench.hypergan.sampler import HyperGAN

__all__ = [
    "HyperGAN",
    "HyperGANConfig",
    "HyperGANEngineered",
    "HyperGANEngineeredRepulsive",
    "HyperGANNoDiscriminator",
    "HyperGANNoMixer",
    "HyperGANRepulsive",
    "code_moment_loss",
    "kernel_repulsion",
    "layer_specs",
]
