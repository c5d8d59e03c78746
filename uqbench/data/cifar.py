"""CIFAR-10 "python version" batches, as torchvision downloads them.

``cifar-10-batches-py/`` holds ``data_batch_1`` .. ``data_batch_5`` (train, 10,000 each)
and ``test_batch``: pickled dicts with ``data`` (uint8 ``[N, 3072]``, the red, green and
blue 32x32 planes of each image in row-major order) and ``labels`` (N ints 0..9).

The pickles are read with an unpickler that can only rebuild numpy arrays, so a file
that is not a CIFAR batch cannot run code while it is loaded.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from uqbench.errors import UserError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCHES = ("test_batch",)
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 [N, 3, 32, 32], labels int64 [N])`` from one batch file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            entry = _ArrayUnpickler(f, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8)
        labels = np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64)
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"{path} is not a readable CIFAR-10 python batch ({exc}); download it again"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (len(data),):
        raise UserError(
            f"{path}: expected data [N, 3072] and N labels, found {data.shape} and "
            f"{labels.shape}; download it again"
        )
    return data.reshape(-1, 3, 32, 32), labels


def read_cifar10(folder: str | os.PathLike[str], split: str) -> tuple[np.ndarray, np.ndarray]:
    """All batches of ``split`` ("train" or "test") in ``cifar-10-batches-py/``, in order."""
    names = TRAIN_BATCHES if split == "train" else TEST_BATCHES
    parts = [read_cifar_batch(Path(folder) / name) for name in names]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
