"""The results store survives what a run can throw at it; one reader and writer per artefact;
the registry finds built-ins by entry point."""

from __future__ import annotations

import dataclasses
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


# --- one reader and one writer per artefact -------------------------------------------------
def test_cell_arrays_round_trip_and_read_the_old_key_format(tmp_path):
    import numpy as np

    from uqbench.evaluation import load_arrays
    from uqbench.evaluation.arrays import save_arrays

    arrays = {"test_probs": np.eye(3, dtype=np.float32), "ood_probs/my_set": np.ones((2, 3))}
    save_arrays(tmp_path / "c.npz", arrays)
    back = load_arrays(tmp_path / "c.npz")
    assert set(back) == set(arrays)
    np.testing.assert_array_equal(back["ood_probs/my_set"], arrays["ood_probs/my_set"])
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left
    np.savez_compressed(tmp_path / "old.npz", ood_probs__x=np.zeros(2), acc_curve=np.ones(2))
    assert set(load_arrays(tmp_path / "old.npz")) == {"ood_probs/x", "acc_curve"}


def test_unreadable_cell_arrays_are_a_user_error(tmp_path):
    import pytest

    from uqbench.errors import UserError
    from uqbench.evaluation import load_arrays

    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="unreadable"):
        load_arrays(tmp_path / "bad.npz")
    with pytest.raises(UserError, match="do not exist"):
        load_arrays(tmp_path / "missing.npz")


def test_checkpoint_round_trip_and_refusals(tmp_path, monkeypatch):
    import errno
    import os

    import pytest
    import torch

    from uqbench.app.checkpoints import load_checkpoint, save_checkpoint
    from uqbench.errors import UserError

    spec = {"method": "m", "benchmark": "b", "n_samples": 3, "config": {"lr": 0.1}}
    state = {"w": torch.arange(4.0), "step": 7, "names": ["a"]}
    save_checkpoint(tmp_path / "c.pt", spec, state)
    spec_back, state_back = load_checkpoint(tmp_path / "c.pt")
    assert spec_back == spec and state_back["step"] == 7
    torch.testing.assert_close(state_back["w"], state["w"])
    with pytest.raises(UserError, match=r"weights_only=True"):
        save_checkpoint(tmp_path / "f.pt", spec, {"f": len})
    assert not (tmp_path / "f.pt").exists()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full_disk)  # the data is flushed to a full disk
    with pytest.raises(UserError, match="No space left on device"):
        save_checkpoint(tmp_path / "d.pt", spec, state)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt"]  # no .pt.tmp left behind
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a uqbench checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_config_json_round_trip_and_invalid_file(tmp_path):
    import pytest

    from uqbench.app.outputs import read_config, write_config
    from uqbench.errors import UserError

    write_config(tmp_path, {"cells": ["a"], "methods": {"m": {"lr": 0.5}}})
    assert read_config(tmp_path) == {"cells": ["a"], "methods": {"m": {"lr": 0.5}}}
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        read_config(tmp_path)


def test_failed_rows_and_a_store_copied_as_one_file(tmp_path):
    import shutil

    with ResultsStore(tmp_path / "r.sqlite") as store:
        store.record(_record(0))
        failed = _record(1)
        failed.status, failed.error, failed.metrics = "failed", "FitDiverged: loss nan", {}
        store.record(failed)
        shutil.copy(tmp_path / "r.sqlite", tmp_path / "copy.sqlite")  # while still open
    with ResultsStore(tmp_path / "copy.sqlite", readonly=True) as copy:
        assert [r.seed for r in copy.records()] == [0]
        assert [(r.seed, r.error) for r in copy.failures()] == [(1, "FitDiverged: loss nan")]
        assert not copy.is_finished("m", "b", 1, "abc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.sqlite", "r.sqlite"]


def test_a_store_of_the_first_schema_is_read_and_upgraded(tmp_path):
    db = sqlite3.connect(tmp_path / "old.sqlite")
    db.execute(
        "CREATE TABLE cells (method TEXT, benchmark TEXT, seed INTEGER, config_hash TEXT, "
        "status TEXT, metrics TEXT, config TEXT, checkpoint TEXT, arrays TEXT, history TEXT, "
        "finished_at REAL, PRIMARY KEY (method, benchmark, seed, config_hash))"
    )
    db.execute("INSERT INTO cells VALUES ('m','b',0,'h','finished','{}','{}',NULL,NULL,'[]',0)")
    db.commit()
    db.close()
    with ResultsStore(tmp_path / "old.sqlite", readonly=True) as store:
        assert [r.data_files for r in store.records()] == [None]
    with ResultsStore(tmp_path / "old.sqlite") as store:
        store.record(_record(1))
        assert [r.seed for r in store.records()] == [0, 1]


def test_corrupt_store_is_a_user_error(tmp_path):
    import pytest

    from uqbench.errors import UserError

    (tmp_path / "r.sqlite").write_bytes(b"SQLite format 3\x00" + b"\x07" * 300)
    with pytest.raises(UserError, match="not a readable results store"):
        ResultsStore(tmp_path / "r.sqlite", readonly=True)


def test_output_lock_is_exclusive_and_names_its_holder(tmp_path):
    import subprocess
    import sys

    import pytest

    from uqbench.app.lock import OutputLock
    from uqbench.errors import UserError

    code = (
        "import sys, time; from pathlib import Path; from uqbench.app.lock import OutputLock\n"
        "with OutputLock(Path(sys.argv[1]), 'uqbench compare --seeds 0'):\n"
        "    print('held', flush=True); time.sleep(30)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=rf"pid {holder.pid}: uqbench compare --seeds 0"):
            with OutputLock(tmp_path, "second"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(tmp_path, "third"):  # released when its holder died
        pass


def test_cell_key_is_unchanged_without_ood_limit_and_changes_with_it() -> None:
    """Stores written before ``ood_limit`` existed keep their keys; a cut OOD set is another
    cell (its scores differ), never a reuse of the full-set one."""
    from uqbench.app.runner import CellSpec

    spec = CellSpec(method="ensemble", benchmark="toy1d", seed=0, config={"epochs": 3})
    assert spec.config_hash == "6f40a76e64bf"  # recorded before the field existed
    assert dataclasses.replace(spec, ood_limit=5).config_hash != spec.config_hash
