"""The library API: a comparison run from Python, its errors, presets and provenance."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
import pytest

import uqbench
from uqbench.app.cli import main
from uqbench.data.registry import BENCHMARKS, BenchmarkSpec
from uqbench.testing import tiny_benchmark

BENCH = "api-tiny"
FAST = {"ensemble": {"members": 2, "epochs": 3, "batch_size": 32, "lr": 0.01}}


@pytest.fixture(autouse=True)
def tiny_registered(monkeypatch):
    """The tiny in-memory classification set as a named benchmark, for these tests only."""
    monkeypatch.setitem(
        BENCHMARKS,
        BENCH,
        BenchmarkSpec(BENCH, "tiny bars (tests)", lambda search: tiny_benchmark()),
    )


def _request(out, **changes) -> uqbench.CompareRequest:
    base = dict(
        methods=["ensemble"],
        benchmark=BENCH,
        seeds=[0],
        samples=2,
        sets=FAST,
        out=out,
        device="cpu",
    )
    return uqbench.CompareRequest(**{**base, **changes})


def test_import_uqbench_does_not_load_the_application():
    code = "import sys, uqbench; assert 'uqbench.app' not in sys.modules; uqbench.CompareRequest"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_compare_from_python_matches_the_files_and_the_cli(tmp_path):
    result = uqbench.compare(_request(tmp_path / "py", seeds=[0, 1]))
    assert result.ok and result.failed == [] and len(result.ran) == 2
    assert list(result.table.columns) == ["method", "benchmark", "seed", "metric", "value"]
    assert set(result.table.seed) == {0, 1}
    acc = result.table[result.table.metric == "acc"].value
    assert len(acc) == 2 and (acc > 1 / 3).all()  # better than chance on 3 classes
    on_disk = pd.read_csv(result.out / "table.csv")
    pd.testing.assert_frame_equal(result.table.reset_index(drop=True), on_disk, check_dtype=False)
    assert (result.out / "table.md").read_text().strip() == result.markdown.strip()

    cli_out = tmp_path / "cli"
    sets = [f"--set=ensemble.{k}={v}" for k, v in FAST["ensemble"].items()]
    args = ["compare", "--methods", "ensemble", "--benchmark", BENCH, "--seeds", "0,1"]
    assert main([*args, "--samples", "2", "--device", "cpu", "--out", str(cli_out), *sets]) == 0
    from_cli = pd.read_csv(cli_out / "table.csv")
    timings = {"fit_s", "sample_eval_s", "peak_mb"}
    keep = ~on_disk.metric.isin(timings)
    pd.testing.assert_frame_equal(on_disk[keep], from_cli[keep])

    again = uqbench.compare(_request(tmp_path / "py", seeds=[0, 1]))
    assert again.ran == [] and len(again.skipped) == 2

    scored = uqbench.evaluate(
        uqbench.EvaluateRequest(
            sorted((result.out / "checkpoints").glob("*-s0-*.pt"))[0], device="cpu"
        )
    )
    stored = on_disk[(on_disk.seed == 0) & (on_disk.metric == "nll")].value.item()
    assert scored.metrics["nll"] == pytest.approx(stored, rel=1e-5)


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"samples": 0}, "samples=0"),
        ({"seeds": [-1]}, "seeds=-1"),
        ({"seeds": [2**32]}, "[0, 2**32"),
        ({"seeds": [0, 0]}, "listed twice"),
        ({"methods": []}, "at least one method"),
        ({"memory_budget_mb": 0}, "memory_budget_mb=0"),
        ({"cell_timeout_s": -1.0}, "cell_timeout_s=-1.0"),
        ({"sets": {"mcdropout": {"lr": 1}}}, "not among the methods"),
        ({"sets": {"ensemble": {"lr": float("nan")}}}, "ensemble.lr=nan"),
        ({"sets": {"ensemble": {"members": "two"}}}, "expected an integer"),
        ({"sets": {"ensemble": {"members": 2.5}}}, "expected an integer"),
    ],
)
def test_bad_requests_raise_value_errors_worded_for_python(tmp_path, changes, words):
    with pytest.raises(ValueError, match=None) as info:
        uqbench.compare(_request(tmp_path / "out", **changes))
    assert isinstance(info.value, uqbench.UserError)
    assert words in str(info.value) and "--" not in str(info.value), str(info.value)
    assert not (tmp_path / "out").exists()


def test_typed_and_string_settings_give_the_same_config(tmp_path):
    typed = uqbench.compare(_request(tmp_path / "a", sets={"ensemble": {**FAST["ensemble"]}}))
    text = {k: str(v) for k, v in FAST["ensemble"].items()}
    strings = uqbench.compare(_request(tmp_path / "b", sets={"ensemble": text}))
    config = [json.loads((r.out / "config.json").read_text())["methods"] for r in (typed, strings)]
    assert config[0] == config[1]


def _presets(path, methods):
    path.write_text(json.dumps({"format": 1, "benchmark": BENCH, "methods": methods}))
    return path


def test_presets_apply_after_builtin_and_before_sets(tmp_path):
    presets = _presets(tmp_path / "p.json", {"ensemble": {"config": {"epochs": 2, "lr": 0.02}}})
    sets = {"ensemble": {"members": 2, "epochs": 1}}
    result = uqbench.compare(_request(tmp_path / "out", presets=presets, sets=sets))
    config = json.loads((result.out / "config.json").read_text())
    assert config["methods"]["ensemble"]["lr"] == 0.02  # from the presets file
    assert config["methods"]["ensemble"]["epochs"] == 1  # sets win over presets
    assert config["presets"] == str(presets)


def test_built_in_tuned_presets_apply_without_presets_and_none_turns_them_off(
    tmp_path, monkeypatch
):
    from uqbench.app import presets as presets_module

    monkeypatch.setattr(presets_module, "TUNED_DIR", tmp_path / "tuned")
    (tmp_path / "tuned").mkdir()
    built_in = _presets(
        tmp_path / "tuned" / f"{BENCH}.json", {"ensemble": {"config": {"lr": 0.03}}}
    )
    sets = {"ensemble": {"members": 2, "epochs": 1}}
    result = uqbench.compare(_request(tmp_path / "a", sets=sets))
    config = json.loads((result.out / "config.json").read_text())
    assert config["methods"]["ensemble"]["lr"] == 0.03
    assert config["presets"].startswith(f"built-in:{built_in.name} (sha256 ")
    result = uqbench.compare(_request(tmp_path / "b", sets=sets, presets="none"))
    config = json.loads((result.out / "config.json").read_text())
    assert config["methods"]["ensemble"]["lr"] != 0.03 and config["presets"] is None


def test_packaged_tuned_presets_are_the_committed_tune_records():
    """Every built-in presets file is byte for byte results/presets/<benchmark>.json, the
    file its recorded tune commands wrote (results/reproduce.sh protocol)."""
    from pathlib import Path

    from uqbench.app.presets import TUNED_DIR, read_presets

    records = Path(__file__).resolve().parents[1] / "results" / "presets"
    packaged = sorted(TUNED_DIR.glob("*.json"))
    assert {p.name for p in packaged} >= {"mnist5000.json"}
    for path in packaged:
        assert path.read_bytes() == (records / path.name).read_bytes(), path.name
        assert read_presets(path).benchmark == path.stem


@pytest.mark.parametrize(
    ("methods", "words"),
    [
        ({"nosuch": {"config": {}}}, "unknown method 'nosuch'"),
        ({"ensemble": {"config": {"nosuch": 1}}}, "ensemble has no setting nosuch"),
    ],
)
def test_bad_presets_file_is_one_line_exit_2_nothing_written(tmp_path, capsys, methods, words):
    presets = _presets(tmp_path / "p.json", methods)
    out = tmp_path / "out"
    args = ["compare", "--methods", "ensemble", "--benchmark", BENCH, "--out", str(out)]
    assert main([*args, "--presets", str(presets)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("uqbench: error:") and words in err and "\n" not in err, err
    assert not out.exists()


def test_config_json_accumulates_cells_across_invocations(tmp_path):
    out = tmp_path / "out"
    uqbench.compare(_request(out, seeds=[0], command="first"))
    uqbench.compare(_request(out, seeds=[1], command="second"))
    config = json.loads((out / "config.json").read_text())
    assert [i["command"] for i in config["invocations"]] == ["first", "second"]
    assert all(i["finished"] for i in config["invocations"])
    cells = config["cell_provenance"]
    assert sorted((c["seed"], c["command"]) for c in cells.values()) == [
        (0, "first"),
        (1, "second"),
    ]
    for cell in cells.values():
        assert cell["config"]["members"] == 2 and cell["status"] == "finished"
        assert "split_info" in cell and "data_files" in cell
    assert config["cells"] == [s for s, c in cells.items() if c["seed"] == 1]  # the last command's
