"""No method reads test or OOD data while it fits: `compare` on a benchmark whose test set
and OOD sets raise on any access during ``fit`` (tune has its own check in test_tune.py)."""

from __future__ import annotations

import functools

import pytest
from tiny_configs import TINY
from torch.utils.data import TensorDataset

import uqbench
from uqbench.data.registry import BENCHMARKS, BenchmarkSpec
from uqbench.registry import load_method
from uqbench.testing import tiny_benchmark

BENCH = "guarded-tiny"
METHODS = ["ensemble", "mcdropout", "mnf", "hypergan", "apd", "swag"]
_fitting: list[str] = []  # the method whose fit is running, if any


class _Guarded(TensorDataset):
    """A TensorDataset that refuses every attribute access while a fit runs."""

    def __getattribute__(self, name: str):
        if _fitting:
            raise AssertionError(f"{_fitting[0]}.fit read the test set ({name})")
        return super().__getattribute__(name)


class _GuardedDict(dict):
    """OOD sets that refuse to be read while a fit runs."""

    def _check(self) -> None:
        if _fitting:
            raise AssertionError(f"{_fitting[0]}.fit read an OOD set")

    def __getitem__(self, key):
        self._check()
        return super().__getitem__(key)

    def items(self):
        self._check()
        return super().items()

    def values(self):
        self._check()
        return super().values()

    def __iter__(self):
        self._check()
        return super().__iter__()


def _guarded_benchmark(search):
    data = tiny_benchmark()
    data.test = _Guarded(*data.test.tensors)
    data.ood = _GuardedDict(data.ood)
    return data


@pytest.fixture
def guarded(monkeypatch):
    monkeypatch.setitem(
        BENCHMARKS, BENCH, BenchmarkSpec(BENCH, "guarded (tests)", _guarded_benchmark)
    )
    for name in METHODS:
        cls = load_method(name)
        fit = cls.fit

        @functools.wraps(fit)
        def watched(self, *args, _fit=fit, _name=name, **kwargs):
            _fitting.append(_name)
            try:
                return _fit(self, *args, **kwargs)
            finally:
                _fitting.pop()

        monkeypatch.setattr(cls, "fit", watched)


def test_fits_never_read_test_or_ood_data(guarded, tmp_path):
    result = uqbench.compare(
        uqbench.CompareRequest(
            methods=METHODS,
            benchmark=BENCH,
            seeds=[0],
            samples=4,
            sets={m: TINY[m] for m in METHODS},
            out=tmp_path / "out",
            device="cpu",
        )
    )
    assert result.failed == [], [f"{c.label}: {c.reason}" for c in result.failed]
    # The test set was read after the fits: every method has a test accuracy.
    acc = result.table[result.table.metric == "acc"]
    assert set(acc.method) >= set(METHODS)
