"""The command line end to end: outputs, resume, report, evaluate, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from uqbench.app.cli import main

FAST_ENSEMBLE = ["--set", "ensemble.epochs=150", "--set", "ensemble.members=3"]


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``uqbench ARGS`` in a fresh interpreter, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "uqbench.app.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy") / "run"
    rc = main(
        [
            "compare",
            "--methods",
            "ensemble",
            "--benchmark",
            "toy1d",
            "--seeds",
            "0,1",
            "--samples",
            "3",
            "--out",
            str(out),
            "--device",
            "cpu",
            *FAST_ENSEMBLE,
        ]
    )
    assert rc == 0
    return out


def test_compare_writes_every_output(toy_run):
    out = toy_run
    for name in ("table.md", "table.csv", "config.json", "results.sqlite"):
        assert (out / name).stat().st_size > 0, name
    df = pd.read_csv(out / "table.csv")
    assert list(df.columns) == ["method", "benchmark", "seed", "metric", "value"]
    assert set(df.seed) == {0, 1}
    metrics = set(df.metric)
    assert {
        "rmse",
        "gnll",
        "std_in",
        "std_out",
        "fit_s",
        "params",
        "peak_mb",
        "sample_eval_s",
    } <= metrics
    assert "±" in (out / "table.md").read_text()  # two seeds -> mean ± std
    config = json.loads((out / "config.json").read_text())
    assert config["methods"]["ensemble"]["members"] == 3
    assert config["versions"]["torch"].startswith("2.")
    assert config["machine"]["cores"] >= 1
    assert len(list((out / "checkpoints").glob("*.pt"))) == 2
    cells = sorted((out / "cells").glob("*.npz"))
    assert len(cells) == 2
    with np.load(cells[0]) as arrays:
        assert {"grid_x", "grid_mean"} <= set(arrays.files)
    assert (out / "figures" / "regression_bands.png").stat().st_size > 0


def test_rerun_skips_finished_cells_and_report_rebuilds(toy_run, capsys):
    before = pd.read_csv(toy_run / "table.csv")
    rc = main(
        [
            "compare",
            "--methods",
            "ensemble",
            "--benchmark",
            "toy1d",
            "--seeds",
            "0,1",
            "--samples",
            "3",
            "--out",
            str(toy_run),
            "--device",
            "cpu",
            *FAST_ENSEMBLE,
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert printed.count("skipping") == 2
    (toy_run / "table.md").unlink()
    assert main(["report", str(toy_run)]) == 0
    assert (toy_run / "table.md").exists()
    after = pd.read_csv(toy_run / "table.csv")
    pd.testing.assert_frame_equal(before, after)


def test_report_all_covers_every_command_into_one_store(toy_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(toy_run, out)
    args = [
        "compare",
        "--methods",
        "ensemble",
        "--benchmark",
        "toy1d",
        "--samples",
        "3",
        "--out",
        str(out),
        "--device",
        "cpu",
        *FAST_ENSEMBLE,
    ]
    assert main([*args, "--seeds", "2"]) == 0
    assert set(pd.read_csv(out / "table.csv").seed) == {2}  # the last command's cells
    assert main(["report", str(out), "--all"]) == 0
    assert set(pd.read_csv(out / "table.csv").seed) == {0, 1, 2}
    assert main([*args, "--seeds", "0", "--set", "ensemble.members=2"]) == 0
    capsys.readouterr()
    assert main(["report", str(out), "--all"]) == 2  # two configs of seed 0 would be pooled
    assert "two configs of ensemble seed 0" in capsys.readouterr().err


def test_evaluate_checkpoint_rescores_without_training(toy_run, capsys):
    ckpt = sorted((toy_run / "checkpoints").glob("*-s0-*.pt"))[0]
    assert main(["evaluate", str(ckpt), "--samples", "3", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    scores = json.loads(printed[printed.index("{") :])
    df = pd.read_csv(toy_run / "table.csv")
    stored = df[(df.seed == 0) & (df.metric == "rmse")].value.item()
    assert scores["rmse"] == pytest.approx(stored, rel=1e-5)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["compare", "--methods", "nosuch"], "unknown method 'nosuch'"),
        (
            ["compare", "--methods", "ensemble", "--benchmark", "nosuch"],
            "unknown benchmark 'nosuch'",
        ),
        (["compare", "--methods", "ensemble", "--samples", "0"], "--samples 0"),
        (
            ["compare", "--methods", "ensemble", "--ood", "no-equals-sign"],
            "--ood expects NAME=PATH",
        ),
        (["compare", "--methods", "ensemble", "--set", "ensemble.nosuch=1"], "no setting 'nosuch'"),
        (
            ["compare", "--methods", "ensemble", "--set", "ensemble.epochs=abc"],
            "expected an integer",
        ),
        (["compare", "--methods", "ensemble", "--seeds", "a,b"], "--seeds"),
        (["compare", "--methods", "ensemble", "--ood-limit", "0"], "--ood-limit 0"),
        (
            ["compare", "--methods", "ensemble", "--benchmark", "toy1d", "--out", "/dev/null/x"],
            "cannot write there",
        ),
        (["evaluate", "/nonexistent.pt"], "does not exist"),
        (["report", "/nonexistent-dir"], "holds no config.json"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uqbench: error:") and expected in err, err
    assert "\n" not in err
    assert not (tmp_path / "runs").exists(), "nothing is written before the input is checked"


def test_corrupt_data_file_is_one_line_error_without_traceback(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02")
    result = run_cli(
        "compare",
        "--methods",
        "ensemble",
        "--benchmark",
        "mnist5000",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
        env={"UQBENCH_DATA": str(tmp_path), "UQBENCH_NO_DOWNLOAD": "1"},
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "t10k-images-idx3-ubyte" in lines[0], result.stderr


def test_missing_data_names_the_file_and_the_fix(tmp_path):
    result = run_cli(
        "compare",
        "--methods",
        "ensemble",
        "--benchmark",
        "mnist5000",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "out"),
        env={
            "UQBENCH_DATA": str(tmp_path),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
            "UQBENCH_NO_DOWNLOAD": "1",
        },
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "t10k-images-idx3-ubyte" in result.stderr and "--data-root" in result.stderr


def test_kill_9_loses_at_most_the_running_cell(tmp_path):
    out = tmp_path / "run"
    args = [
        "compare",
        "--methods",
        "ensemble",
        "--benchmark",
        "toy1d",
        "--seeds",
        "0,1,2,3,4,5",
        "--samples",
        "3",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--set",
        "ensemble.epochs=400",
        "--set",
        "ensemble.members=3",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "uqbench.app.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = out / "results.sqlite"
    deadline = time.time() + 240
    finished = 0
    while time.time() < deadline and proc.poll() is None:
        if store.exists():
            try:
                finished = (
                    sqlite3.connect(store).execute("SELECT count(*) FROM cells").fetchone()[0]
                )
            except sqlite3.OperationalError:
                finished = 0
            if finished >= 2:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed; make the cells slower"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = sqlite3.connect(store).execute("PRAGMA integrity_check").fetchone()[0]
    assert kept == "ok"
    survived = sqlite3.connect(store).execute("SELECT count(*) FROM cells").fetchone()[0]
    assert survived >= finished >= 2
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("skipping") == survived
    assert sqlite3.connect(store).execute("SELECT count(*) FROM cells").fetchone()[0] == 6
