"""The one reader and writer of a cell's ``.npz`` arrays (see :class:`Evaluation.arrays`).

Keys are stored verbatim, ``/`` included (``ood_probs/notmnist``, ``reliability/edges``),
and read back as written. Files from uqbench 0.1 stored ``a/b`` as ``a__b``; the reader
maps those back, so every results folder reads the same way. Writes go to a temporary
file unique to the process and are renamed into place, so a reader (or a crash) never
sees half a file.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from uqbench.errors import UserError
from uqbench.files import atomic_write

_LEGACY_SEPARATOR = "__"


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to a compressed ``.npz`` at ``path`` atomically; returns the path."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
    return atomic_write(path, buffer.getvalue())


def load_arrays(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a cell's ``.npz`` back into a plain dict with its original ``a/b`` names.

    Raises a :class:`UserError` naming the file when it is missing or not a readable
    ``.npz`` (no pickled objects are ever loaded).
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise UserError(f"cell arrays {path} do not exist") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"cell arrays {path} are unreadable ({type(exc).__name__})") from None
    if not any("/" in k for k in arrays):
        arrays = {k.replace(_LEGACY_SEPARATOR, "/"): v for k, v in arrays.items()}
    return arrays
