"""Figures from the per-cell arrays (see :class:`uqbench.evaluation.harness.Evaluation`).

``cells`` maps a method's name to the dict of arrays saved in its ``.npz``. Figures are
drawn on :class:`matplotlib.figure.Figure` objects directly (Agg canvas, no pyplot), so
importing this module never changes a user's matplotlib backend.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from uqbench.evaluation.metrics import predictive_entropy

Cells = Mapping[str, Mapping[str, np.ndarray]]

_OOD_PREFIX = "ood_probs/"


def _panels(count: int, *, width: float = 4.0, height: float = 3.4) -> tuple[Figure, list]:
    if count < 1:
        raise ValueError("no method has the arrays this figure needs")
    cols = min(count, 3)
    rows = math.ceil(count / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[count:]:
        ax.set_visible(False)
    return fig, axes[:count]


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def reliability_diagram(cells: Cells, path: str | Path) -> Path:
    """Accuracy vs mean confidence per top-label confidence bin, one panel per method."""
    methods = [m for m, a in cells.items() if "reliability/count" in a]
    fig, axes = _panels(len(methods))
    for ax, method in zip(axes, methods, strict=True):
        a = cells[method]
        edges, count = a["reliability/edges"], a["reliability/count"]
        conf, acc = a["reliability/confidence"], a["reliability/accuracy"]
        full = count > 0
        left, width = edges[:-1], np.diff(edges)
        ax.bar(
            left[full],
            acc[full],
            width=width[full],
            align="edge",
            color="tab:blue",
            edgecolor="black",
            linewidth=0.5,
            label="accuracy",
        )
        ax.bar(
            left[full],
            conf[full] - acc[full],
            bottom=acc[full],
            width=width[full],
            align="edge",
            color="tab:red",
            alpha=0.3,
            label="gap to confidence",
        )
        ax.plot([0, 1], [0, 1], "k--", linewidth=1)
        ece = float(np.sum(count[full] / count.sum() * np.abs(acc[full] - conf[full])))
        ax.set(
            xlim=(0, 1),
            ylim=(0, 1),
            xlabel="confidence",
            ylabel="accuracy",
            title=f"{method} (ECE {ece:.4f})",
        )
        ax.legend(loc="upper left", fontsize="small")
    return _save(fig, path)


def _ecdf(ax, values: np.ndarray, label: str) -> None:
    xs = np.sort(values)
    ax.step(xs, np.arange(1, len(xs) + 1) / len(xs), where="post", label=label)


def entropy_ecdf(cells: Cells, path: str | Path) -> Path:
    """Empirical CDF of the predictive entropy H[p̄] (nats), test set vs each OOD set, per method.

    A good uncertainty model keeps the in-distribution curve high and to the left and the
    OOD curves low and to the right.
    """
    methods = [m for m, a in cells.items() if "test_probs" in a]
    fig, axes = _panels(len(methods))
    for ax, method in zip(axes, methods, strict=True):
        a = cells[method]
        _ecdf(ax, predictive_entropy(a["test_probs"]).numpy(), "test (in-distribution)")
        for key in sorted(k for k in a if k.startswith(_OOD_PREFIX)):
            _ecdf(ax, predictive_entropy(a[key]).numpy(), key[len(_OOD_PREFIX) :])
        ax.set(
            xlim=(0, math.log(a["test_probs"].shape[-1])),
            ylim=(0, 1),
            xlabel="predictive entropy (nats)",
            ylabel="share of inputs",
            title=method,
        )
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def accuracy_vs_samples(cells: Cells, path: str | Path) -> Path:
    """Test accuracy of the ensemble of the first k sampled networks, k = 1..n, all methods."""
    methods = [m for m, a in cells.items() if "acc_curve" in a]
    if not methods:
        raise ValueError("no method has the arrays this figure needs")
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for method in methods:
        curve = cells[method]["acc_curve"]
        ax.plot(
            np.arange(1, len(curve) + 1),
            curve,
            marker="." if len(curve) < 20 else None,
            label=method,
        )
    ax.set(
        xscale="log",
        xlabel="number of sampled networks k",
        ylabel="test accuracy",
        title="accuracy vs number of sampled networks",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


def regression_bands(cells: Cells, path: str | Path) -> Path:
    """toy1d, per method: training points, true function x³, predictive mean ± 2 std
    (total, light; epistemic, dark) — the shape of the HyperGAN paper's Figure 2."""
    methods = [m for m, a in cells.items() if "grid_x" in a]
    fig, axes = _panels(len(methods))
    for ax, method in zip(axes, methods, strict=True):
        a = cells[method]
        x, mean = a["grid_x"], a["grid_mean"]
        total, epistemic = a["grid_std_total"], a["grid_std_epistemic"]
        if "train_range" in a:
            ax.axvspan(*a["train_range"], color="0.93", zorder=0, label="training range")
        ax.fill_between(
            x,
            mean - 2 * total,
            mean + 2 * total,
            color="tab:blue",
            alpha=0.2,
            linewidth=0,
            label="± 2 std total",
        )
        ax.fill_between(
            x,
            mean - 2 * epistemic,
            mean + 2 * epistemic,
            color="tab:blue",
            alpha=0.45,
            linewidth=0,
            label="± 2 std epistemic",
        )
        ax.plot(x, x**3, "k--", linewidth=1, label="x³")
        ax.plot(x, mean, color="tab:blue", linewidth=1.5, label="predictive mean")
        if "train_x" in a:
            ax.scatter(
                a["train_x"], a["train_y"], s=12, color="tab:red", zorder=3, label="training points"
            )
        # Fixed y-range (true function and data, +50%) so one wild band cannot flatten the rest.
        seen = np.concatenate([x**3, a.get("train_y", np.zeros(0))])
        pad = 0.5 * (seen.max() - seen.min())
        ax.set(xlabel="x", ylabel="y", title=method, ylim=(seen.min() - pad, seen.max() + pad))
        ax.legend(loc="upper left", fontsize="x-small")
    return _save(fig, path)


def training_history(histories: Mapping[str, list[dict]], path: str | Path) -> Path:
    """What each method recorded during training (e.g. HyperGAN's diversity and validation
    score): one panel per recorded quantity (every key but ``step``), one line per method."""
    keys = sorted({k for h in histories.values() for row in h for k in row if k != "step"})
    fig, axes = _panels(max(1, len(keys)), width=4.5)
    for ax, key in zip(axes, keys, strict=False):
        for method, rows in histories.items():
            points = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker=".", label=method)
        ax.set(xlabel="training step", title=key)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _save(fig, path)


def make_figures(cells: Cells, out_dir: str | Path, task_kind: str) -> list[Path]:
    """Every figure that fits ``task_kind`` ("classification" or "regression") into ``out_dir``.

    Classification: ``reliability.png``, ``entropy_ecdf.png`` (when some method has OOD
    arrays), ``accuracy_vs_samples.png``; regression: ``regression_bands.png`` (1-D inputs).
    """
    out = Path(out_dir)
    paths: list[Path] = []
    if task_kind == "classification":
        paths.append(reliability_diagram(cells, out / "reliability.png"))
        if any(k.startswith(_OOD_PREFIX) for a in cells.values() for k in a):
            paths.append(entropy_ecdf(cells, out / "entropy_ecdf.png"))
        paths.append(accuracy_vs_samples(cells, out / "accuracy_vs_samples.png"))
    elif task_kind == "regression":
        if any("grid_x" in a for a in cells.values()):
            paths.append(regression_bands(cells, out / "regression_bands.png"))
    else:
        raise ValueError(f"unknown task kind {task_kind!r}; expected classification or regression")
    return paths
