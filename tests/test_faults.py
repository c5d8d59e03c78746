"""Fault injection: every bad input or failing cell ends in one clear line, and the output
folder and its store hold exactly the finished cells.

Runs ``uqbench`` in-process (``main([...])``) on the tiny in-memory benchmark, with the
failing samplers of ``tests/fault_plugins.py`` registered as a plugin package.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
import time
from pathlib import Path

import fault_plugins
import numpy as np
import pandas as pd
import pytest
import torch

from uqbench.app.cli import main
from uqbench.data.registry import BENCHMARKS, BenchmarkSpec
from uqbench.evaluation import load_arrays
from uqbench.testing import TINY_IMAGE, tiny_benchmark

BENCH = "faults-tiny"


@pytest.fixture(scope="module", autouse=True)
def plugins_and_benchmark(tmp_path_factory):
    """The fault plugins as an installed package (an entry-point dist-info on sys.path,
    seen by child processes too) and the tiny benchmark under a name."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "uqbench_fault_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: uqbench-faults\nVersion: 0.1\n")
    lines = "".join(f"{k} = {v}\n" for k, v in fault_plugins.ENTRY_POINTS.items())
    (dist / "entry_points.txt").write_text("[uqbench.methods]\n" + lines)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        mp.syspath_prepend(str(Path(fault_plugins.__file__).parent))
        mp.setitem(BENCHMARKS, BENCH, BenchmarkSpec(BENCH, "tiny bars", lambda s: tiny_benchmark()))
        yield


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()


def compare(out: Path, *args: str) -> tuple[int, str, str]:
    base = ["compare", "--benchmark", BENCH, "--samples", "2", "--device", "cpu"]
    return run(*base, "--out", str(out), *args)


def snapshot(folder: Path) -> dict[str, str]:
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def rows(out: Path) -> list[tuple[str, int, str]]:
    db = sqlite3.connect(out / "results.sqlite")
    try:
        return db.execute("SELECT method, seed, status FROM cells ORDER BY method, seed").fetchall()
    finally:
        db.close()


def one_error_line(err: str, *words: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uqbench: error:"), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in err


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """fast-ensemble finished for seed 0, raising-fit failed: the folder every case copies."""
    out = tmp_path_factory.mktemp("finished") / "run"
    rc, stdout, err = compare(out, "--methods", "fast-ensemble,raising-fit")
    assert rc == 1, err
    assert "failed raising-fit/faults-tiny/seed0: RuntimeError: plugin bug: fit exploded" in err
    assert "1 of 2 cells failed" in err and "failures.log" in err
    return out


def copy_of(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


# --- a failing method is isolated ------------------------------------------------------------
def test_failing_fit_is_a_failed_cell_and_the_rest_still_runs(finished):
    assert rows(finished) == [("fast-ensemble", 0, "finished"), ("raising-fit", 0, "failed")]
    table = pd.read_csv(finished / "table.csv")
    assert set(table.method) == {"fast-ensemble"}
    log = (finished / "failures.log").read_text()
    assert "Traceback" in log and "plugin bug: fit exploded" in log
    assert len(list((finished / "checkpoints").glob("*.pt"))) == 1
    assert not list(finished.glob("*.sqlite-*")), "every row is in the one results.sqlite file"
    config = json.loads((finished / "config.json").read_text())
    statuses = {c["method"]: c["status"] for c in config["cell_provenance"].values()}
    assert statuses == {"fast-ensemble": "finished", "raising-fit": "failed"}


def test_a_failed_cell_is_retried_and_a_finished_one_skipped(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    rc, stdout, err = compare(out, "--methods", "fast-ensemble,raising-fit")
    assert rc == 1
    assert "skipping fast-ensemble/faults-tiny/seed0" in stdout
    assert "recomputing raising-fit/faults-tiny/seed0: it failed before" in stdout


def test_diverged_fit_and_unloadable_state_fail_their_cells(tmp_path):
    out = tmp_path / "run"
    rc, _, err = compare(out, "--methods", "diverging-fit,function-state")
    assert rc == 1
    assert "diverging-fit: the nll loss became nan at step 3" in err
    assert "function-state: state_dict() cannot be saved and loaded" in err
    assert rows(out) == [("diverging-fit", 0, "failed"), ("function-state", 0, "failed")]
    assert not list((out / "checkpoints").iterdir()) and not (out / "table.md").exists()


def test_a_fit_that_never_returns_is_stopped_by_the_cell_timeout(tmp_path):
    out = tmp_path / "run"
    start = time.perf_counter()
    rc, _, err = run(
        "compare", "--methods", "hanging-fit", "--benchmark", "toy1d", "--samples", "2",
        "--device", "cpu", "--out", str(out), "--cell-timeout", "2",
    )  # fmt: skip
    assert rc == 1 and time.perf_counter() - start < 60
    assert "hanging-fit/toy1d/seed0: did not finish within --cell-timeout 2 s" in err
    assert rows(out) == [("hanging-fit", 0, "failed")]


def test_a_cell_under_a_timeout_runs_on_its_pool_share_of_the_cores(tmp_path, monkeypatch):
    """With --cell-timeout each cell runs in a child process of its pool worker; the child
    keeps the worker's cores // jobs threads instead of starting at every core."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # the suite's 1: spawned at defaults
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "run"
    rc, _, err = run(
        "compare", "--methods", "threads-fit", "--benchmark", "toy1d", "--seeds", "0,1",
        "--samples", "2", "--device", "cpu", "--out", str(out), "--jobs", "2",
        "--cell-timeout", "120",
    )  # fmt: skip
    share = max(1, (os.cpu_count() or 1) // 2)
    reports = [line for line in err.splitlines() if "fit ran on" in line]
    assert rc == 1 and {"seed0", "seed1"} <= {r.split(":")[0][-5:] for r in reports}, err
    assert all(f"fit ran on {share} torch threads" in r for r in reports), err


# --- rejected commands change nothing ---------------------------------------------------------
def _bad_presets(tmp: Path) -> str:
    path = tmp / "presets.json"
    path.write_text(
        json.dumps({"format": 1, "benchmark": BENCH, "methods": {"nosuch": {"config": {}}}})
    )
    return str(path)


REJECTED = [
    (["--set", "fast-ensemble.epochs=-5"], ["ensemble.epochs"]),
    (["--set", "fast-ensemble.lr=nan"], ["fast-ensemble.lr=nan", "finite"]),
    (["--seeds", "99999999999999999999"], ["--seeds 99999999999999999999", "2**32"]),
    (["--seeds", "4294967296"], ["--seeds 4294967296", "2**32"]),
    (["--seeds", "0,0"], ["--seeds 0,0", "listed twice"]),
    (["--samples", "100000000"], ["--samples 100000000", "GiB"]),
    (["--memory-budget-mb", "0"], ["--memory-budget-mb 0"]),
    (["--cell-timeout", "0"], ["--cell-timeout 0"]),
    (["--ood", "a=x.idx", "--ood", "a=y.idx"], ["--ood a is given twice"]),
    (["--presets", "PRESETS"], ["unknown method 'nosuch'"]),
    (["--executor", "ray", "--ray-address", "bogus"], ["'bogus' is not HOST:PORT"]),
    (["--set", "raising-fit.members=0"], ["members=0"]),  # checked before fast-ensemble trains
]


@pytest.mark.parametrize(("args", "words"), REJECTED, ids=[" ".join(a) for a, _ in REJECTED])
def test_rejected_command_leaves_the_folder_unchanged(finished, tmp_path, args, words):
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    args = [_bad_presets(tmp_path) if a == "PRESETS" else a for a in args]
    if args[:2] == ["--executor", "ray"]:
        pytest.importorskip("ray")
    start = time.perf_counter()
    rc, _, err = compare(out, "--methods", "fast-ensemble,raising-fit", *args)
    assert rc == 2 and time.perf_counter() - start < 15
    one_error_line(err, *words)
    assert snapshot(out) == before


def test_nothing_is_created_for_a_rejected_command(tmp_path):
    rc, _, err = compare(tmp_path / "new", "--methods", "fast-ensemble", "--seeds", "0,0")
    assert rc == 2 and not (tmp_path / "new").exists()


def test_a_locked_folder_names_its_holder_and_is_left_alone(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    code = (
        "import sys, time; from pathlib import Path; from uqbench.app.lock import OutputLock\n"
        "with OutputLock(Path(sys.argv[1]), 'uqbench compare (holder)'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before[".uqbench.lock"] = snapshot(out)[".uqbench.lock"]
        rc, _, err = compare(out, "--methods", "fast-ensemble")
        assert rc == 2
        one_error_line(err, f"in use by another uqbench command (pid {holder.pid}")
        assert snapshot(out) == before
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("command", ["compare", "report"])
def test_corrupt_store_and_config_are_one_line(finished, tmp_path, command):
    out = copy_of(finished, tmp_path)
    store = out / "results.sqlite"
    store.write_bytes(store.read_bytes()[:1000])  # truncated
    before = snapshot(out)
    rc, _, err = (
        compare(out, "--methods", "fast-ensemble")
        if command == "compare"
        else run("report", str(out))
    )
    assert rc == 2
    one_error_line(err, "results.sqlite is not a readable results store")
    assert snapshot(out) == before
    shutil.copy(finished / "results.sqlite", store)
    (out / "config.json").write_text('{"cells": ')
    before = snapshot(out)
    rc, _, err = (
        compare(out, "--methods", "fast-ensemble")
        if command == "compare"
        else run("report", str(out))
    )
    assert rc == 2
    one_error_line(err, "config.json is not valid JSON")
    assert snapshot(out) == before


# --- stale or missing artefacts are recomputed ------------------------------------------------
def test_missing_or_garbage_cell_arrays_are_recomputed(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    (npz,) = (out / "cells").glob("fast-ensemble-*.npz")
    npz.write_bytes(b"garbage")
    rc, _, err = run("report", str(out))
    assert rc == 2
    one_error_line(err, npz.name, "unreadable", "re-run")
    rc, stdout, _ = compare(out, "--methods", "fast-ensemble")
    assert (
        rc == 0
        and "recomputing fast-ensemble/faults-tiny/seed0" in stdout
        and "unreadable" in stdout
    )
    before = pd.read_csv(finished / "table.csv").set_index(["metric"]).value
    after = pd.read_csv(out / "table.csv").set_index(["metric"]).value
    assert after["acc"] == before["acc"]  # same seed, same cell
    npz.unlink()
    rc, stdout, _ = compare(out, "--methods", "fast-ensemble")
    assert rc == 0 and "recomputing fast-ensemble/faults-tiny/seed0" in stdout and npz.exists()


def _write_idx(path: Path, images: np.ndarray) -> None:
    header = struct.pack(">I", 0x803) + struct.pack(">III", *images.shape)
    path.write_bytes(header + images.astype(np.uint8).tobytes())


def test_a_changed_data_file_recomputes_the_cell_and_says_why(tmp_path):
    out, ood = tmp_path / "run", tmp_path / "mine.idx"
    rng = np.random.default_rng(0)
    _write_idx(ood, rng.integers(0, 255, (50, TINY_IMAGE, TINY_IMAGE)))
    args = ["--methods", "fast-ensemble", "--ood", f"mine={ood}"]
    assert compare(out, *args)[0] == 0
    (npz,) = (out / "cells").glob("*.npz")
    first = load_arrays(npz)["ood_probs/mine"]
    rc, stdout, _ = compare(out, *args)
    assert rc == 0 and "skipping" in stdout
    _write_idx(ood, np.zeros((50, TINY_IMAGE, TINY_IMAGE)))  # same name, new content
    rc, stdout, _ = compare(out, *args)
    assert rc == 0
    assert (
        f"recomputing fast-ensemble/faults-tiny/seed0: the content of {ood.resolve()} changed"
        in stdout
    )
    assert np.abs(load_arrays(npz)["ood_probs/mine"] - first).max() > 1e-3  # scored on the new data


def test_figures_of_another_benchmark_are_not_left_behind(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    assert (out / "figures" / "reliability.png").exists()
    rc, _, err = run(
        "compare", "--methods", "fast-ensemble", "--benchmark", "toy1d", "--samples", "2",
        "--device", "cpu", "--out", str(out),
    )  # fmt: skip
    assert rc == 0, err
    assert {p.name for p in (out / "figures").iterdir()} >= {"regression_bands.png"}
    assert not (out / "figures" / "reliability.png").exists()


# --- disk full, evaluate, checkpoints ---------------------------------------------------------
def test_disk_full_while_writing_a_cell_is_one_line_and_leaves_no_temporary_file(
    tmp_path, monkeypatch
):
    out = tmp_path / "run"
    real_fsync = os.fsync

    def full(fd):
        name = os.readlink(f"/proc/self/fd/{fd}")  # .<cell>.npz.<random>.tmp, or .pt.
        if name.endswith(".tmp") and (".npz." in name or ".pt." in name):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    rc, _, err = compare(out, "--methods", "fast-ensemble")
    assert rc == 2
    assert err.strip().splitlines()[-1].startswith("uqbench: error: cannot write")
    assert "No space left on device" in err and "Traceback" not in err
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
    assert rows(out) == []


def test_evaluate_refuses_bad_counts_and_damaged_checkpoints(finished, tmp_path):
    (ckpt,) = (finished / "checkpoints").glob("*.pt")
    for flag, value in (("--samples", "0"), ("--memory-budget-mb", "0")):
        rc, _, err = run("evaluate", str(ckpt), flag, value, "--device", "cpu")
        assert rc == 2
        one_error_line(err, f"{flag} {value}")
    saved = torch.load(ckpt, weights_only=True)
    unknown = tmp_path / "unknown.pt"
    torch.save(
        {**saved, "spec": {**saved["spec"], "config": {**saved["spec"]["config"], "nosuch": 1}}},
        unknown,
    )
    rc, _, err = run("evaluate", str(unknown), "--device", "cpu")
    assert rc == 2
    one_error_line(err, "its config does not fit fast-ensemble's settings")
    members = {k: v[:, :1] for k, v in saved["state"]["members"].items()}  # impossible shapes
    impossible = tmp_path / "impossible.pt"
    torch.save({**saved, "state": {"members": members}}, impossible)
    rc, _, err = run("evaluate", str(impossible), "--device", "cpu")
    assert rc == 2
    one_error_line(err, "does not match the target's parameters")
    rc, _, err = run("evaluate", str(ckpt), "--device", "cpu", "--samples", "2")
    assert rc == 0, err


# --- the command line itself ------------------------------------------------------------------
def test_usage_hint_and_list_columns(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--bogus"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "see `uqbench --help`" in err and "uqbench uqbench" not in err
    rc, stdout, _ = run("list")
    assert rc == 0
    lines = [line for line in stdout.splitlines() if line.startswith("  ")]
    methods = lines[
        : next(i for i, line in enumerate(stdout.splitlines()[1:]) if line == "benchmarks:")
    ]
    starts = {line.index(line.split()[1], len(line.split()[0]) + 2) for line in methods}
    assert len(starts) == 1, "the package column starts at the same place on every line"
