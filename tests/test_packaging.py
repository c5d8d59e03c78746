"""The built wheel (not the editable install) imports whole from outside the checkout.

The folders `baselines/` and `evaluation/` sit at the top of the repository and are linked
into `uqbench/`; this checks the wheel really carries them, and every module imports from
it with the checkout out of reach.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMPORT_ALL = """
import importlib, pkgutil, sys
import uqbench
assert uqbench.__file__.startswith(sys.argv[1]), uqbench.__file__
names = [m.name for m in pkgutil.walk_packages(uqbench.__path__, "uqbench.")]
for name in names:
    module = importlib.import_module(name)
    assert module.__file__.startswith(sys.argv[1]), (name, module.__file__)
print(len(names))
"""


def test_wheel_installs_and_imports_every_module(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("uqbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
    assert "uqbench/baselines/mnf.py" in files
    assert "uqbench/evaluation/metrics.py" in files
    assert "uqbench/app/cli.py" in files
    assert "uqbench/app/tuned_presets/mnist5000.json" in files  # the built-in tuned presets
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(site)!r}); "
            + "exec(compile(sys.stdin.read(), 'import_all', 'exec'))",
            str(site),
        ],
        input=IMPORT_ALL,
        cwd=outside,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) >= 30  # every module of the package, app layer included
