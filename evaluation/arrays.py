"""The one reader and writer of a cell's ``.npz`` arrays (see :class:`Evaluation.arrays`).

Keys are stored verbatim, ``/`` included (``ood_probs/notmnist``, ``reliability/edges``),
and read back as written. Files from uqbench 0.1 stored ``a/b`` as ``a__b``; the reader
maps those back, so every results folder reads the same way. Writes go to a temporary
file unique to the process and are renamed into place, so a reader (or a crash) never
sees half a file.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from uqbench.errors import UserError

_LEGACY_SEPARATOR = "__"


def save_arrays(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> Path:
    """Write ``arrays`` to a compressed ``.npz`` at ``path`` atomically; returns the path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp.npz")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez_compressed(handle, **{k: np.asarray(v) for k, v in arrays.items()})
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
