"""docs/plugins.md works as written: its files, pip-installed, give a method `compare` can run.

The test takes the files straight out of the guide (the blocks after ``<!-- file: NAME -->``),
installs them with pip into a throwaway folder, and drives the real ``uqbench`` command.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from uqbench.data import load_benchmark

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
FILE_BLOCK = re.compile(r"<!-- file: (\S+) -->\n```\w*\n(.*?)```", re.S)


def guide_files() -> dict[str, str]:
    return dict(FILE_BLOCK.findall(GUIDE.read_text()))


def test_guide_needs_under_50_lines_of_user_code():
    files = guide_files()
    assert set(files) == {"mapnoise.py", "pyproject.toml", "test_mapnoise.py"}
    code_lines = sum(1 for text in files.values() for line in text.splitlines() if line.strip())
    assert code_lines < 70  # all three files, blank lines excluded
    python = sum(
        1
        for name, text in files.items()
        if name.endswith(".py")
        for line in text.splitlines()
        if line.strip()
    )
    assert python < 50


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("plugin")
    package = root / "mapnoise-pkg"
    package.mkdir()
    for name, text in guide_files().items():
        (package / name).write_text(text)
    site = root / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(package),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    # A second, broken plugin: its entry point names a module that does not exist.
    broken = site / "uqbench_broken-0.1.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: uqbench-broken\nVersion: 0.1\n")
    (broken / "entry_points.txt").write_text("[uqbench.methods]\nbroken = no_such_module:Nothing\n")
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), str(package)]),
        "UQBENCH_NO_DOWNLOAD": "1",
    }


def test_plugin_is_listed_and_a_broken_one_breaks_nothing(plugin_env):
    result = subprocess.run(
        [sys.executable, "-m", "uqbench.app.cli", "list"],
        env=plugin_env,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert "uqbench-mapnoise" in lines["mapnoise"]
    assert "FAILED TO IMPORT" in lines["broken"] and "no_such_module" in lines["broken"]
    assert "FAILED" not in lines["hypergan"] and "uqbench" in lines["hypergan"]


def test_plugin_passes_its_own_contract_test(plugin_env, tmp_path):
    package = Path(plugin_env["PYTHONPATH"].split(os.pathsep)[1])
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(package / "test_mapnoise.py"),
        ],
        env=plugin_env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_compare_runs_the_plugin_beside_hypergan(plugin_env, tmp_path):
    out = tmp_path / "out"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "uqbench.app.cli",
            "compare",
            "--methods",
            "mapnoise,hypergan",
            "--benchmark",
            "toy1d",
            "--samples",
            "10",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--set",
            "hypergan.steps=200",
        ],
        env=plugin_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    df = pd.read_csv(out / "table.csv")
    assert set(df.method) == {"mapnoise", "hypergan"}
    rmse = df[(df.method == "mapnoise") & (df.metric == "rmse")].value.item()
    targets = load_benchmark("toy1d").test.tensors[1]
    assert (
        rmse < 0.75 * targets.std().item()
    )  # clearly better than predicting the mean of x^3 (extrapolation to ±6 dominates)
