"""The pools compare's cells and tune's trials both run on: results, errors, shared data."""

from __future__ import annotations

import pandas as pd
import pytest

from uqbench.app.cli import main
from uqbench.app.pool import ProcessPool, SerialPool, make_pool, shared_value

ARGS = [
    "compare",
    "--methods",
    "ensemble,mcdropout",
    "--benchmark",
    "toy1d",
    "--seeds",
    "0,1",
    "--samples",
    "3",
    "--device",
    "cpu",
    "--set",
    "ensemble.epochs=60",
    "--set",
    "ensemble.members=3",
    "--set",
    "mcdropout.epochs=60",
]
TIMINGS = {"fit_s", "sample_eval_s", "peak_mb"}


@pytest.mark.parametrize("pool_of", [lambda: SerialPool(shared=10), lambda: ProcessPool(2, 10, 2)])
def test_pool_hands_back_results_and_errors_by_key_with_the_shared_value(pool_of):
    pool = pool_of()
    try:
        pool.submit("shared", shared_value)  # what a task reads: the pool's shared object
        pool.submit("abs", abs, -3)
        pool.submit("error", int, "not a number")
        done = dict(pool.next_done() for _ in range(3))
    finally:
        pool.close()
    assert done["shared"] == 10 and done["abs"] == 3
    assert isinstance(done["error"], ValueError) and "not a number" in str(done["error"])


def test_make_pool_splits_the_cores_between_jobs():
    serial = make_pool("local", 1, cores=2)
    assert serial.capacity == 1 and serial.threads == 2
    serial.close()
    parallel = make_pool("local", 2, cores=2)
    try:
        assert parallel.capacity == 2 and parallel.threads == 1
    finally:
        parallel.close()


def test_compare_with_two_jobs_gives_the_serial_table(tmp_path):
    assert main([*ARGS, "--out", str(tmp_path / "serial")]) == 0
    assert main([*ARGS, "--out", str(tmp_path / "jobs"), "--jobs", "2"]) == 0
    serial = pd.read_csv(tmp_path / "serial" / "table.csv")
    jobs = pd.read_csv(tmp_path / "jobs" / "table.csv")
    key = ["method", "benchmark", "seed", "metric"]
    merged = serial.merge(jobs, on=key, suffixes=("_serial", "_jobs"))
    assert len(merged) == len(serial) == len(jobs)
    scored = merged[~merged.metric.isin(TIMINGS)]
    pd.testing.assert_series_equal(
        scored.value_serial, scored.value_jobs, check_names=False, rtol=1e-4
    )
    assert len(list((tmp_path / "jobs" / "checkpoints").glob("*.pt"))) == 4
    # A re-run skips every finished cell, whichever pool ran it.
    assert main([*ARGS, "--out", str(tmp_path / "jobs"), "--jobs", "2"]) == 0


def test_compare_jobs_must_be_positive(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main([*ARGS, "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uqbench: error:") and "--jobs 0" in err and "\n" not in err
    assert not (tmp_path / "runs").exists()
