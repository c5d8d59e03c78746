"""Comparison tables from long-format results (columns method, benchmark, seed, metric, value).

The CSV keeps raw values; the Markdown table shows mean ± std over seeds (sample std,
ddof = 1; a single seed shows just the value), fractions with 4 decimals, and in its
``seeds`` column how many seeds each row averages and which (``3 (0,1,2)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from uqbench.errors import UserError

LONG_COLUMNS = ("method", "benchmark", "seed", "metric", "value")

_HEAD = ["acc", "acc@1", "acc@5", "acc@10", "acc@100", "nll", "brier", "ece"]
_DIVERSITY = [
    f"{name}@{k}"
    for k in (5, 100)
    for name in ("pairwise_disagreement", "disagreement", "diversity_l2_rel_std")
] + ["diversity_l2_rel_std", "disagreement"]  # the last two: stores from before equal n
_REGRESSION = ["rmse", "gnll", "std_in", "std_out"] + [
    f"coverage{level}{side}" for level in (68, 95) for side in ("", "_in", "_out")
]
_COST = ["n_samples", "params", "fit_s", "sample_eval_s", "peak_mb"]
#: Decimals per metric when rendered; everything else gets 4.
_DECIMALS = {"n_samples": 0, "params": 0, "fit_s": 1, "sample_eval_s": 2, "peak_mb": 1}


def _check(df: pd.DataFrame) -> None:
    missing = [c for c in LONG_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(
            f"results table lacks column(s) {', '.join(missing)}; "
            f"expected {', '.join(LONG_COLUMNS)}"
        )


def default_metrics(available: Iterable[str]) -> list[str]:
    """The table's columns, in order: accuracy, nll, brier, ece, OOD AUROC of the predictive
    entropy (one per OOD set), diversity, regression, cost; only those in ``available``."""
    present = list(dict.fromkeys(available))
    auroc_entropy = [m for m in present if m.startswith("auroc/") and m.endswith("/entropy")]
    wanted = _HEAD + auroc_entropy + _DIVERSITY + _REGRESSION + _COST
    return [m for m in wanted if m in present]


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and sample std (ddof = 1) over seeds per benchmark × method × metric.

    Returns columns ``benchmark, method, metric, mean, std, seeds``; ``std`` is NaN for a
    single seed. Methods and benchmarks keep their order of first appearance.
    """
    _check(df)
    grouped = df.groupby(["benchmark", "method", "metric"], sort=False)["value"]
    out = grouped.agg(mean="mean", std=lambda v: v.std(ddof=1), seeds="count").reset_index()
    return out


def _format(value: float, decimals: int) -> str:
    if not np.isfinite(value):
        return str(float(value))  # "nan", "inf"
    return f"{value:,.{decimals}f}" if decimals == 0 else f"{value:.{decimals}f}"


def _cell(mean: float, std: float, decimals: int) -> str:
    if np.isnan(std):
        return _format(mean, decimals)
    return f"{_format(mean, decimals)} ± {_format(std, decimals)}"


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def render_markdown(
    header: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool]
) -> str:
    """A GitHub-flavoured Markdown table (numeric columns right-aligned)."""
    align = ["---:" if num else ":---" for num in numeric]
    lines = [
        "| " + " | ".join(_escape(h) for h in header) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def to_markdown(df: pd.DataFrame, *, metrics: Sequence[str] | None = None) -> str:
    """One row per method (and benchmark, when there are several), one column per metric.

    ``df`` is the long format. ``metrics`` picks and orders the columns (default:
    :func:`default_metrics`). Cells are ``mean ± std`` over seeds, ``—`` when a method has
    no value for that metric (e.g. ``acc@10`` for a 5-member ensemble). The ``seeds``
    column gives the number of seeds and their list.
    """
    summary = summary_table(df)
    available = list(dict.fromkeys(summary["metric"]))
    if metrics is None:
        columns = default_metrics(available)
    else:
        unknown = [m for m in metrics if m not in available]
        if unknown:
            raise UserError(
                f"no results for metric(s) {', '.join(unknown)}; available: {', '.join(available)}"
            )
        columns = list(metrics)
    index = {(r.benchmark, r.method, r.metric): r for r in summary.itertuples(index=False)}
    keys = list(dict.fromkeys(zip(summary["benchmark"], summary["method"], strict=True)))
    several = len({b for b, _ in keys}) > 1

    seeds = df.groupby(["benchmark", "method"], sort=False)["seed"].agg(
        lambda v: sorted({int(s) for s in v})
    )
    header = (["benchmark"] if several else []) + ["method", "seeds"] + columns
    numeric = [False] * (len(header) - len(columns)) + [True] * len(columns)
    rows = []
    for benchmark, method in keys:
        used = seeds[(benchmark, method)]
        row = ([benchmark] if several else []) + [
            method,
            f"{len(used)} ({','.join(map(str, used))})",
        ]
        for metric in columns:
            r = index.get((benchmark, method, metric))
            row.append("—" if r is None else _cell(r.mean, r.std, _DECIMALS.get(metric, 4)))
        rows.append(row)
    return render_markdown(header, rows, numeric)
