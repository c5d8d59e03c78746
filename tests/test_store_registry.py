"""The results store survives what a run can throw at it; the registry finds built-ins by entry point."""

from __future__ import annotations

import sqlite3

from uqbench.app.store import CellRecord, ResultsStore
from uqbench.registry import discover, load_method
from uqbench.sampler import WeightSampler

BUILTINS = {"ensemble", "mcdropout", "hypergan", "mnf", "apd"}


def _record(seed: int, acc: float = 0.9) -> CellRecord:
    return CellRecord(
        "m", "b", seed, "abc", {"acc": acc}, {"lr": 0.1}, "ck.pt", "a.npz", [{"step": 1}]
    )


def test_store_round_trip_and_replace(tmp_path):
    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.record(_record(0))
        store.record(_record(1))
        store.record(_record(0, acc=0.5))  # same key: replaced, not duplicated
        assert store.is_finished("m", "b", 0, "abc")
        assert not store.is_finished("m", "b", 2, "abc")
        records = store.records()
    assert [(r.seed, r.metrics["acc"]) for r in records] == [(0, 0.5), (1, 0.9)]
    assert records[0].history == [{"step": 1}]
    # readable by plain sqlite3, as a user would inspect it
    rows = sqlite3.connect(tmp_path / "r.sqlite").execute("SELECT count(*) FROM cells").fetchone()
    assert rows == (2,)


def test_builtins_are_registered_as_entry_points():
    found = discover()
    assert BUILTINS <= set(found)
    for name in BUILTINS:
        assert found[name].package == "uqbench"
        assert found[name].error is None, found[name].error
        cls = load_method(name)
        assert issubclass(cls, WeightSampler) and cls.name == name
