"""--executor ray on a local Ray instance gives the table the local executor gives."""

from __future__ import annotations

import pandas as pd
import pytest

from uqbench.app.cli import main

pytest.importorskip("ray", reason="the optional ray extra is not installed")

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
    "ensemble.epochs=100",
    "--set",
    "ensemble.members=3",
    "--set",
    "mcdropout.epochs=100",
]
TIMINGS = {"fit_s", "sample_eval_s", "peak_mb"}


@pytest.mark.ray
def test_ray_executor_matches_local(tmp_path):
    assert main([*ARGS, "--out", str(tmp_path / "local")]) == 0
    assert main([*ARGS, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    local = pd.read_csv(tmp_path / "local" / "table.csv")
    remote = pd.read_csv(tmp_path / "ray" / "table.csv")
    key = ["method", "benchmark", "seed", "metric"]
    merged = local.merge(remote, on=key, suffixes=("_local", "_ray"))
    assert len(merged) == len(local) == len(remote)
    scored = merged[~merged.metric.isin(TIMINGS)]
    pd.testing.assert_series_equal(
        scored.value_local, scored.value_ray, check_names=False, rtol=1e-4
    )
    assert len(list((tmp_path / "ray" / "checkpoints").glob("*.pt"))) == 4


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("bogus", "'bogus' is not HOST:PORT"),
        ("127.0.0.1:1", "cannot reach the Ray cluster at 127.0.0.1:1"),
    ],
)
def test_bad_or_unreachable_ray_address_is_one_line_within_a_timeout(
    tmp_path, capsys, address, words
):
    import time

    start = time.perf_counter()
    out = tmp_path / "out"
    rc = main([*ARGS, "--out", str(out), "--executor", "ray", "--ray-address", address])
    assert rc == 2 and time.perf_counter() - start < 30
    err = capsys.readouterr().err.strip()
    assert err.startswith("uqbench: error:") and words in err and "\n" not in err, err
    assert not out.exists()
