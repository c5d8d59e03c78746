"""Comparison tables on a hand-made long-format frame; figures on arrays in the saved layout."""

from __future__ import annotations

import statistics

import numpy as np
import pandas as pd
import pytest
import torch

from uqbench.errors import UserError
from uqbench.evaluation import metrics as M
from uqbench.evaluation import plots
from uqbench.evaluation.tables import default_metrics, summary_table, to_markdown

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def long_frame() -> pd.DataFrame:
    rows = []
    for seed, (acc, nll) in enumerate([(0.90, 0.30), (0.92, 0.25), (0.94, 0.20)]):
        rows += [
            ("hypergan", "mnist5k-split", seed, "acc", acc),
            ("hypergan", "mnist5k-split", seed, "nll", nll),
            ("hypergan", "mnist5k-split", seed, "params", 1_234_567.0),
        ]
    rows += [
        ("ensemble", "mnist5k-split", 0, metric, value)
        for metric, value in [
            ("acc", 0.95),
            ("nll", 0.18),
            ("ece", 0.0123456),
            ("acc@5", 0.951),
            ("auroc/mnist-5-9/entropy", 0.87),
            ("auroc/mnist-5-9/mi", 0.8),
            ("fit_s", 81.26),
        ]
    ]
    return pd.DataFrame(rows, columns=["method", "benchmark", "seed", "metric", "value"])


def test_summary_is_mean_and_sample_std_over_seeds() -> None:
    s = summary_table(long_frame()).set_index(["method", "metric"])
    assert s.loc[("hypergan", "acc"), "mean"] == pytest.approx(statistics.mean([0.90, 0.92, 0.94]))
    assert s.loc[("hypergan", "acc"), "std"] == pytest.approx(statistics.stdev([0.90, 0.92, 0.94]))
    assert s.loc[("hypergan", "nll"), "seeds"] == 3
    assert pd.isna(s.loc[("ensemble", "acc"), "std"]) and s.loc[("ensemble", "acc"), "seeds"] == 1


def test_markdown_table_layout_and_formatting() -> None:
    text = to_markdown(long_frame())
    lines = text.strip().splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "method",
        "seeds",
        "acc",
        "acc@5",
        "nll",
        "ece",
        "auroc/mnist-5-9/entropy",
        "params",
        "fit_s",
    ]
    assert len({line.count("|") for line in lines}) == 1  # every row has every column
    hypergan = next(line for line in lines if line.startswith("| hypergan"))
    assert "0.9200 ± 0.0200" in hypergan and "0.2500 ± 0.0500" in hypergan
    assert "1,234,567" in hypergan and "—" in hypergan  # no ece for hypergan
    assert hypergan.startswith("| hypergan | 3 (0,1,2) |")
    ensemble = next(line for line in lines if line.startswith("| ensemble"))
    assert "0.0123 |" in ensemble and "±" not in ensemble  # one seed: just the value
    assert "81.3" in ensemble and ensemble.startswith("| ensemble | 1 (0) |")
    assert "auroc/mnist-5-9/mi" not in text  # only the entropy AUROCs by default

    only = to_markdown(long_frame(), metrics=["nll", "acc"]).splitlines()[0]
    assert [c.strip() for c in only.strip("|").split("|")] == ["method", "seeds", "nll", "acc"]
    with pytest.raises(UserError, match="no results for metric"):
        to_markdown(long_frame(), metrics=["brier"])
    with pytest.raises(UserError, match="lacks column"):
        to_markdown(long_frame().drop(columns="seed"))


def test_several_benchmarks_get_a_benchmark_column() -> None:
    df = long_frame()
    other = df[df.method == "ensemble"].assign(benchmark="mnist5000", value=lambda d: d.value / 2)
    lines = to_markdown(pd.concat([df, other])).splitlines()
    assert lines[0].startswith("| benchmark | method |")
    assert sum("ensemble" in line for line in lines) == 2
    assert default_metrics(["fit_s", "brier", "acc@100", "acc", "rmse"]) == [
        "acc",
        "acc@100",
        "brier",
        "rmse",
        "fit_s",
    ]


def _assert_png(path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000


def classification_cell(n: int, seed: int) -> dict[str, np.ndarray]:
    """Arrays in the layout the harness saves (see ``Evaluation``), from random networks."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.softmax(3 * torch.randn(n, 300, 5, generator=g), -1)
    labels = torch.randint(0, 5, (300,), generator=g)
    ood = torch.softmax(torch.randn(n, 200, 5, generator=g), -1)
    bins = M.reliability_bins(probs, labels)
    return {
        "test_probs": probs.mean(0).numpy(),
        "test_labels": labels.numpy(),
        "ood_probs/flat": ood.mean(0).numpy(),
        "acc_curve": M.accuracy_curve(probs, labels),
        "reliability/edges": bins.edges,
        "reliability/confidence": bins.confidence,
        "reliability/accuracy": bins.accuracy,
        "reliability/count": bins.count,
    }


def test_classification_figures(tmp_path) -> None:
    cells = {"noisy": classification_cell(12, 0), "small": classification_cell(3, 1)}
    paths = plots.make_figures(cells, tmp_path / "figures", "classification")
    assert [p.name for p in paths] == [
        "reliability.png",
        "entropy_ecdf.png",
        "accuracy_vs_samples.png",
    ]
    for path in paths:
        _assert_png(path)
    with pytest.raises(ValueError, match="unknown task kind"):
        plots.make_figures(cells, tmp_path, "ranking")


def test_regression_bands_figure(tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = np.linspace(-6, 6, 61)
    train_x = rng.uniform(-4, 4, 20)
    epistemic = 1 + np.abs(x) ** 2
    cell = {
        "grid_x": x,
        "grid_mean": x**3,
        "grid_std_epistemic": epistemic,
        "grid_std_total": np.sqrt(epistemic**2 + 9),
        "test_y": x**3,
        "train_x": train_x,
        "train_y": train_x**3 + rng.normal(0, 3, 20),
        "train_range": np.array([-4.0, 4.0]),
    }
    paths = plots.make_figures({"a": cell, "b": cell}, tmp_path, "regression")
    assert [p.name for p in paths] == ["regression_bands.png"]
    _assert_png(paths[0])
