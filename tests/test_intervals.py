"""The paired bootstrap: cases with a known answer, and agreement with sklearn / normal theory."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from uqbench.errors import UserError
from uqbench.evaluation import metrics as M
from uqbench.evaluation.intervals import (
    DIFF_COLUMNS,
    baseline_report,
    difference_table,
    paired_bootstrap,
    weighted_auroc,
)


def _cell(rng: np.random.Generator, n: int = 200, classes: int = 4, sharp: float = 2.0) -> dict:
    logits = sharp * rng.normal(size=(n, classes))
    labels = rng.integers(0, classes, size=n)
    logits[np.arange(n), labels] += 1.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    flat = rng.dirichlet(np.full(classes, 2.0), size=n // 2)
    return {
        "test_probs": probs.astype(np.float32),
        "test_labels": labels,
        "ood_probs/far": flat.astype(np.float32),
    }


def test_identical_methods_differ_by_exactly_zero() -> None:
    rng = np.random.default_rng(0)
    cells = [_cell(rng) for _ in range(3)]
    out = paired_bootstrap({"same": cells}, cells, replicates=300)["same"]
    assert list(out["metric"]) == ["acc", "nll", "brier", "ece", "auroc/far/entropy"]
    assert (out["diff"] == 0).all() and (out["low"] == 0).all() and (out["high"] == 0).all()
    assert not out["excludes_zero"].any()


def test_point_estimates_match_the_metrics_module() -> None:
    rng = np.random.default_rng(1)
    a, b = _cell(rng), _cell(rng)
    b["test_labels"] = a["test_labels"]
    out = paired_bootstrap({"a": [a]}, [b], replicates=50)["a"].set_index("metric")["diff"]
    pa, pb = a["test_probs"].astype(np.float64), b["test_probs"].astype(np.float64)
    y = a["test_labels"]
    assert out["acc"] == pytest.approx(M.accuracy(pa, y) - M.accuracy(pb, y))
    assert out["brier"] == pytest.approx(M.brier_score(pa, y) - M.brier_score(pb, y))
    assert out["ece"] == pytest.approx(
        M.expected_calibration_error(pa, y) - M.expected_calibration_error(pb, y)
    )
    nll = M.negative_log_likelihood(np.log(pa), y) - M.negative_log_likelihood(np.log(pb), y)
    assert out["nll"] == pytest.approx(nll)

    def auroc(cell):
        s_in = M.predictive_entropy(cell["test_probs"]).numpy()
        s_out = M.predictive_entropy(cell["ood_probs/far"]).numpy()
        return M.auroc(s_in, s_out)

    assert out["auroc/far/entropy"] == pytest.approx(auroc(a) - auroc(b))


def test_weighted_auroc_equals_sklearn_with_sample_weights() -> None:
    rng = np.random.default_rng(2)
    s_in = np.round(rng.normal(size=60), 1)  # rounded: many ties
    s_out = np.round(rng.normal(0.7, 1, size=40), 1)
    c_in = rng.integers(0, 4, size=(5, 60)).astype(float)
    c_out = rng.integers(0, 4, size=(5, 40)).astype(float)
    got = weighted_auroc(s_in, s_out, c_in.T, c_out.T)
    y = np.r_[np.zeros(60), np.ones(40)]
    for r in range(5):
        want = roc_auc_score(y, np.r_[s_in, s_out], sample_weight=np.r_[c_in[r], c_out[r]])
        assert got[r] == pytest.approx(want, abs=1e-12)


def test_a_constructed_shift_is_covered_and_detected() -> None:
    # The method is right on 60 % of the points, the baseline on 50 %: the true shift in
    # accuracy is +0.10 (by construction, per seed, exactly).
    rng = np.random.default_rng(3)
    n, classes = 2000, 2
    base_cells, method_cells = [], []
    for _ in range(4):
        labels = rng.integers(0, classes, size=n)
        right_b = rng.permutation(n) < n // 2
        right_m = rng.permutation(n) < int(0.6 * n)

        def probs(right, labels=labels):
            p = np.full((n, classes), 0.2)
            pred = np.where(right, labels, 1 - labels)
            p[np.arange(n), pred] = 0.8
            return p.astype(np.float32)

        base_cells.append({"test_probs": probs(right_b), "test_labels": labels})
        method_cells.append({"test_probs": probs(right_m), "test_labels": labels})
    out = paired_bootstrap({"m": method_cells}, base_cells, replicates=1000)["m"]
    acc = out.set_index("metric").loc["acc"]
    assert acc["diff"] == pytest.approx(0.10)
    assert acc["low"] < 0.10 < acc["high"] and acc["excludes_zero"]
    assert acc["high"] - acc["low"] < 0.06
    assert list(out["metric"]) == ["acc", "nll", "brier", "ece"]  # no OOD set here


def test_percentile_interval_matches_normal_theory_on_a_large_sample() -> None:
    # One seed, per-point NLL differences d_i: the bootstrap interval of the mean should
    # be mean ± 1.96 sd / sqrt(N) up to bootstrap noise.
    rng = np.random.default_rng(4)
    n = 5000
    labels = np.zeros(n, dtype=np.int64)
    pa = rng.uniform(0.2, 0.99, size=n)
    pb = rng.uniform(0.2, 0.99, size=n)
    a = {"test_probs": np.stack([pa, 1 - pa], 1).astype(np.float32), "test_labels": labels}
    b = {"test_probs": np.stack([pb, 1 - pb], 1).astype(np.float32), "test_labels": labels}
    out = paired_bootstrap({"a": [a]}, [b], replicates=4000, seed=1)["a"].set_index("metric")
    d = -np.log(a["test_probs"][:, 0].astype(np.float64)) + np.log(
        b["test_probs"][:, 0].astype(np.float64)
    )
    half = norm.ppf(0.975) * d.std(ddof=1) / np.sqrt(n)
    row = out.loc["nll"]
    assert row["diff"] == pytest.approx(d.mean(), abs=1e-12)
    assert row["low"] == pytest.approx(d.mean() - half, abs=0.08 * half)
    assert row["high"] == pytest.approx(d.mean() + half, abs=0.08 * half)


def test_resampling_seeds_widens_the_interval_when_seeds_disagree() -> None:
    # Two seeds whose per-seed differences are +0.1 and −0.1 with little point noise: the
    # interval must reach both sides of 0, while the point-only spread is small.
    rng = np.random.default_rng(5)
    n = 4000
    labels = np.zeros(n, dtype=np.int64)

    def cell(p):
        return {"test_probs": np.stack([p, 1 - p], 1).astype(np.float32), "test_labels": labels}

    base = [cell(np.full(n, 0.5)), cell(np.full(n, 0.5))]
    method = [cell(np.full(n, 0.5 + 0.1)), cell(np.full(n, 0.5 - 0.1))]
    for cells in (base, method):
        for c in cells:
            c["test_probs"][:, 0] += rng.normal(0, 1e-3, size=n).astype(np.float32)
    out = paired_bootstrap({"m": method}, base, replicates=500)["m"].set_index("metric")
    row = out.loc["nll"]  # per seed: log(0.5/0.6) = −0.18 and log(0.5/0.4) = +0.22
    assert row["low"] < -0.15 and row["high"] > 0.2


def test_difference_table_uses_common_seeds_and_reports_seeds() -> None:
    rng = np.random.default_rng(6)
    shared = _cell(rng)
    cells = {}
    for seed in (0, 1, 2):
        for method in ("ens", "hg"):
            c = _cell(rng)
            c["test_labels"] = shared["test_labels"]
            cells[(method, seed)] = c
    cells[("mcd", 1)] = dict(cells[("ens", 1)])  # identical to the baseline on seed 1
    cells[("lonely", 7)] = _cell(rng)
    table = difference_table(cells, "ens", replicates=200)
    assert tuple(table.columns) == DIFF_COLUMNS
    assert list(dict.fromkeys(table["method"])) == ["hg", "mcd"]
    assert set(table.query("method == 'hg'")["seeds"]) == {"0,1,2"}
    mcd = table.query("method == 'mcd'")
    assert set(mcd["seeds"]) == {"1"} and (mcd["diff"] == 0).all()
    text = baseline_report(cells, "ens", replicates=200)
    assert "| hg | 0,1,2 |" in text and "| mcd | 1 | +0.0000 [+0.0000, +0.0000]" in text
    assert "over seeds and test points" in text
    # With one seed per method the interval can only speak of the test points.
    single = {key: c for key, c in cells.items() if key[1] == 1}
    assert "over test points only (one seed per method" in baseline_report(
        single, "ens", replicates=50
    )
    with pytest.raises(UserError, match="--baseline nope: no cell of that method"):
        difference_table(cells, "nope")


def test_bad_inputs_are_user_errors() -> None:
    rng = np.random.default_rng(7)
    a, b = _cell(rng), _cell(rng, n=150)
    with pytest.raises(UserError, match="same test set"):
        paired_bootstrap({"a": [a]}, [b])
    with pytest.raises(UserError, match="classification cells"):
        paired_bootstrap({"a": [{"grid_x": np.zeros(3)}]}, [a])
    with pytest.raises(UserError, match="replicates"):
        paired_bootstrap({"a": [a]}, [a], replicates=0)


def test_a_diverged_cell_gives_nan_not_a_number_from_garbage() -> None:
    rng = np.random.default_rng(10)
    a, b = _cell(rng), _cell(rng)
    b["test_labels"] = a["test_labels"]
    a["test_probs"][3] = np.nan
    out = paired_bootstrap({"a": [a]}, [b], replicates=20)["a"]
    assert out[["diff", "low", "high"]].isna().all().all() and not out["excludes_zero"].any()


def test_same_seed_gives_the_same_interval() -> None:
    rng = np.random.default_rng(8)
    a, b = _cell(rng), _cell(rng)
    b["test_labels"] = a["test_labels"]
    one = paired_bootstrap({"a": [a]}, [b], replicates=100, seed=3)["a"]
    two = paired_bootstrap({"a": [a]}, [b], replicates=100, seed=3)["a"]
    assert one.equals(two)


def test_report_baseline_writes_the_difference_table(tmp_path, capsys) -> None:
    import json

    from uqbench.app.cli import main
    from uqbench.app.outputs import STORE_NAME, prepare_out_dir, save_outcome
    from uqbench.app.runner import CellOutcome, CellSpec
    from uqbench.app.store import ResultsStore

    rng = np.random.default_rng(9)
    out = prepare_out_dir(tmp_path / "run")
    labels = rng.integers(0, 4, size=200)
    stems = []
    with ResultsStore(out / STORE_NAME) as store:
        for method in ("ensemble", "hypergan"):
            for seed in (0, 1):
                arrays = _cell(rng)
                arrays["test_labels"] = labels
                spec = CellSpec(method=method, benchmark="tiny", seed=seed, config={})
                metrics = {"acc": float(np.mean(arrays["test_probs"].argmax(1) == labels))}
                bins = M.reliability_bins(arrays["test_probs"].astype(np.float64), labels)
                arrays["acc_curve"] = np.array([metrics["acc"]])
                for key in ("edges", "confidence", "accuracy", "count"):
                    arrays[f"reliability/{key}"] = getattr(bins, key)
                save_outcome(out, CellOutcome(spec, metrics, arrays, {}), store)
                stems.append(spec.file_stem)
    (out / "config.json").write_text(json.dumps({"cells": stems, "task": "classification"}))
    assert main(["report", str(out), "--baseline", "ensemble"]) == 0
    text = (out / "differences.md").read_text()
    assert text.startswith("Difference to ensemble") and "| hypergan | 0,1 |" in text
    assert "auroc/far/entropy" in text and "| ensemble |" not in text
    assert "Difference to ensemble" in capsys.readouterr().out
    assert main(["report", str(out), "--baseline", "nosuch"]) == 2
    assert "--baseline nosuch: no cell of that method" in capsys.readouterr().err
