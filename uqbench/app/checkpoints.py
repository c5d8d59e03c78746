"""The one writer and reader of cell checkpoints (``checkpoints/<cell>.pt``).

A checkpoint is ``{"spec": <the cell's spec as JSON-friendly dict>, "state":
sampler.state_dict()}`` saved with ``torch.save`` and read with
``torch.load(weights_only=True)``, so loading never runs code from the file. A sampler
whose state does not survive that round trip (a function or an arbitrary object in its
``state_dict``) fails its cell when the cell finishes, not later in ``evaluate``.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from uqbench.errors import UserError
from uqbench.files import atomic_write


def state_bytes(state: dict, *, owner: str) -> bytes:
    """``torch.save`` of ``state``, checked to load back with ``weights_only=True``."""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unloadable checkpoint
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"{owner}: state_dict() cannot be saved and loaded with torch.load(weights_only=True)"
            f" ({type(exc).__name__}: {first[:160]}); keep only tensors, numbers, strings, "
            "lists and dicts in it"
        ) from None
    return buffer.getvalue()


def save_checkpoint(path: str | os.PathLike[str], spec: dict[str, Any], state: dict) -> Path:
    """Write a checkpoint atomically (:func:`uqbench.files.atomic_write`).

    A write that fails (e.g. a full disk) leaves no temporary file behind and raises a
    :class:`UserError` naming the file and the reason.
    """
    path = Path(path)
    data = state_bytes({"spec": spec, "state": state}, owner=str(spec.get("method", "?")))
    try:
        atomic_write(path, data)
    except OSError as exc:
        raise UserError(
            f"cannot write checkpoint {path} ({exc.strerror or exc}); free space or choose "
            "another --out, then re-run: finished cells are kept"
        ) from None
    return path


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict]:
    """``(spec, state)`` of a checkpoint; a UserError when the file is not one."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; look in <out>/checkpoints/")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        spec, state = saved["spec"], saved["state"]
        if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
            raise TypeError("spec")
        for key in ("method", "benchmark", "n_samples"):
            spec[key]  # noqa: B018 - presence check
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the caller's to fix
        raise UserError(
            f"{path} is not a uqbench checkpoint ({type(exc).__name__}); "
            "pass a file from <out>/checkpoints/"
        ) from None
    return spec, state
