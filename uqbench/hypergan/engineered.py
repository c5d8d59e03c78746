"""``hypergan-engineered``: HyperGAN with the departures from the paper that earlier mnist5000
runs chose, kept as a method of its own so a table shows it beside the paper's model.

Departures from ``hypergan`` (the paper's settings), each with what validation says
(``results/hypergan_dev/validation_probes.md``: mnist5000's validation split, 500 images,
250 steps, seed 0; never the test set). The preset as a whole: val NLL 0.175 / acc 0.954
at 88 s, against the paper's model 0.154 / 0.960 at 426 s for the same 250 steps.

- A shared output bias ``mean`` in the target's weight units with a learning rate of its
  own, ``lr_mean`` 3e-3 (the paper: the generators' last-layer bias at the generators'
  1e-4). At 4 nets x 128-wide the paper's plain bias reached only 1.080 / 0.802 (and
  stayed at chance with lr_generator 1e-3), so at these sizes it is what makes the budget
  suffice. Its cost: the across-network spread of the weights stays at its initial value
  while the shared part grows (the paper's model grows both).
- No weight decay (the paper: 1e-4). Not supported: with 1e-4, val NLL 0.166 vs 0.175.
- A cosine learning-rate schedule to 0 (the authors: constant). Not supported: with
  constant, 0.166 vs 0.175.
- Fewer networks per step (8; 4 in the mnist5000 preset) with batch-norm statistics from a
  larger ``noise_batch`` (32), 64 images per step, no mixer pre-training, and in the
  mnist5000 preset generator width 128 (the paper: 512) with lr_generator 1e-3: the step
  is about 5x cheaper than the paper's (the cost, not validation, is the reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from uqbench.configs import LogUniform, positive, setting
from uqbench.hypergan.config import HyperGANConfig, redefault
from uqbench.hypergan.networks import LayerGenerator, ScaledLayerGenerator
from uqbench.hypergan.sampler import HyperGAN


@dataclass
class HyperGANEngineeredConfig(HyperGANConfig):
    """HyperGAN settings with the engineered defaults (see the module docstring)."""

    owner: ClassVar[str] = "hypergan-engineered"

    nets_per_step: int = redefault(HyperGANConfig, "nets_per_step", 8)
    batch_size: int = redefault(HyperGANConfig, "batch_size", 64)
    weight_decay: float = redefault(HyperGANConfig, "weight_decay", 0.0)
    lr_schedule: str = redefault(HyperGANConfig, "lr_schedule", "cosine")
    pretrain_steps: int = redefault(HyperGANConfig, "pretrain_steps", 0)
    val_nets: int = redefault(HyperGANConfig, "val_nets", 5)
    #: Learning rate of the generators' shared output bias, in the target's weight units.
    lr_mean: float = setting(3e-3, check=positive, search=LogUniform(1e-4, 1e-2))


class HyperGANEngineered(HyperGAN):
    """HyperGAN, engineered: fast shared bias, no weight decay, cosine lr, fewer nets per step.

    Departures from ``hypergan``, with mnist5000 validation NLL at 250 steps (paper's model
    0.154; this preset 0.175 at a fifth of the cost): the shared output bias in weight
    units at ``lr_mean`` 3e-3 (the paper's plain bias at these sizes: 1.080); weight decay
    0 (1e-4: 0.166, not supported); cosine schedule (constant: 0.166, not supported);
    8 nets x 64 images a step (noise batch 32), no mixer pre-training; mnist5000 preset:
    generator width 128, 4 nets, lr_generator 1e-3 (cost). Details in the module docstring.
    """

    name = "hypergan-engineered"
    Config = HyperGANEngineeredConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "mnist5000": {
            "generator_hidden": 128,
            "nets_per_step": 4,
            "steps": 1500,
            "lr_generator": 1e-3,
            "val_every": 250,
        },
        "mnist5k-split": {
            "generator_hidden": 128,
            "nets_per_step": 4,
            "steps": 500,
            "lr_generator": 1e-3,
            "val_every": 250,
        },
        "toy1d": {
            "steps": 1000,
            "nets_per_step": 8,
            "batch_size": 20,
            "lr_generator": 1e-3,
            "lr_mean": 1e-2,
            "val_every": 250,
        },
    }

    def _make_generator(self, n_out: int) -> LayerGenerator:
        return ScaledLayerGenerator(self.config.code_dim, self.config.generator_hidden, n_out)

    def _generator_groups(self) -> list[dict[str, Any]]:
        shared = {id(p) for gen in self.generators for p in gen.shared_parameters()}
        own = [p for p in self.generators.parameters() if id(p) not in shared]
        means = [p for p in self.generators.parameters() if id(p) in shared]
        return [
            {"params": own, "lr": self.config.lr_generator},
            {"params": means, "lr": self.config.lr_mean},
        ]
