"""Settings for seconds-long fits on ``uqbench.testing``'s tiny data, per method.

Test fixtures, not presets: they live with the tests so that no method ships a "tiny"
benchmark entry. Pass one as ``check_sampler_contract(cls, overrides=TINY[name])``.
"""

from __future__ import annotations

from typing import Any

TINY: dict[str, dict[str, Any]] = {
    "ensemble": {"members": 4, "epochs": 8, "batch_size": 32, "lr": 1e-2, "lr_schedule": "cosine"},
    "mcdropout": {
        "epochs": 8,
        "batch_size": 32,
        "masks_per_step": 4,
        "lr": 1e-2,
        "p": 0.1,
        "lr_schedule": "cosine",
    },
    "mnf": {"epochs": 25, "batch_size": 50, "lr": 1e-2, "flow_hidden": 16},
    "hypergan": {
        "noise_dim": 32,
        "code_dim": 16,
        "mixer_hidden": 64,
        "generator_hidden": 64,
        "discriminator_hidden": 64,
        "steps": 150,
        "init_scale": 0.25,
        "nets_per_step": 4,
        "noise_batch": 16,
        "lr_mixer": 3e-3,
        "lr_generator": 3e-3,
        "lr_discriminator": 1e-3,
        "pretrain_steps": 20,
        "pretrain_batch": 256,
        "val_every": 75,
        "val_nets": 3,
        "diversity_samples": 20,
        "bn_calibration": 256,
    },
    "apd": {
        "chains": 2,
        "steps": 200,
        "burn_in": 60,
        "thin": 10,
        "batch_size": 32,
        "step_size": 5e-4,
        "prior_std": 1.0,
        "buffer_size": 14,
        "noise_dim": 8,
        "gen_hidden": 32,
        "gen_layers": 2,
        "critic_hidden": 32,
        "critic_layers": 2,
        "gan_batch": 16,
        "final_gan_iters": 40,
        "val_every": 20,
    },
}
TINY["hypergan-engineered"] = {**TINY["hypergan"], "lr_mean": 1e-2, "pretrain_steps": 0}
TINY["hypergan-repulsive"] = TINY["hypergan"]
TINY["hypergan-engineered-repulsive"] = TINY["hypergan-engineered"]
TINY["swag"] = {"epochs": 12, "burn_in": 4, "rank": 6, "batch_size": 32, "lr": 3e-3, "swa_lr": 1e-3}
