"""Settings for seconds-long fits on ``uqbench.testing``'s tiny data, per method.

Test fixtures, not presets: they live with the tests so that no method ships a "tiny"
benchmark entry. Methods not listed here still use their own ``presets["tiny"]``.
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
}
