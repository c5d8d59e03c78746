"""SVHN cropped digits (``train_32x32.mat`` / ``test_32x32.mat``), as torchvision downloads them.

Each MATLAB file holds ``X`` uint8 ``[32, 32, 3, N]`` and ``y`` ``[N, 1]`` with digit 0
stored as label 10. Read with ``scipy.io.loadmat`` (what torchvision's SVHN uses).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from uqbench.errors import UserError

FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


def read_svhn(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 3, 32, 32], labels int64 [N] in 0..9)`` from one ``.mat`` file."""
    from scipy.io import loadmat

    path = Path(path)
    try:
        mat = loadmat(path)
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"{path} is not a readable SVHN .mat file ({exc}); download it again"
        ) from None
    if x.ndim != 4 or x.shape[2] != 3 or x.dtype != np.uint8 or y.size != x.shape[3]:
        raise UserError(
            f"{path}: expected X uint8 [H, W, 3, N] and N labels, found X {x.dtype} {x.shape} "
            f"and y {y.shape}; download it again"
        )
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise UserError(
            f"{path}: labels must be 1..10 (SVHN stores digit 0 as 10), found "
            f"{int(labels.min())}..{int(labels.max())}; download it again"
        )
    labels %= 10  # SVHN stores digit 0 as 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), labels
