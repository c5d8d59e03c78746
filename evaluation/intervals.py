"""Confidence intervals on differences between methods: a paired bootstrap over seeds and
test points.

"Method A is 0.33 points better than the baseline" needs an error bar that accounts for
both sources of noise in a benchmark table: which test points happen to be in the test
set, and which seeds (initialisation, data order, sampled networks) were run. For a
method and a baseline scored on the same test set with the same seeds, one bootstrap
replicate

1. draws S seeds with replacement from the S common seeds;
2. for each drawn seed, draws N test points with replacement (and, for OOD detection,
   as many points of each OOD set), the *same* indices for method and baseline (paired);
3. computes metric(method) − metric(baseline) on that resample and averages over the
   drawn seeds.

The interval is the central ``level`` percentile interval of B replicates (B = 2000 by
default); the point estimate is the mean over seeds of the difference on the full test
set. Everything is recomputed from each cell's saved predictive p̄ (``test_probs``
float32, ``test_labels``, ``ood_probs/<name>``), so the estimates may differ from the
table's numbers in the last decimals (the table's NLL uses every network's log-softmax).

Per replicate, a resample is represented by its counts c_i (how often point i was
drawn); every metric is then a function of counts, which keeps the bootstrap vectorised:

- ``acc``, ``nll``, ``brier``: (1/N) Σ_i c_i q_i of the per-point correctness 1[argmax p̄ = y],
  −log p̄_y (clamped at float64's tiny) and Σ_c (p̄_c − 1[y = c])²;
- ``ece``: Σ_b |Σ_{i in bin b} c_i (correct_i − conf_i)| / N over the 15 bins of
  :func:`uqbench.evaluation.metrics.reliability_bins`;
- ``auroc/<ood>/<score>``: the weighted Mann-Whitney statistic (sklearn's
  ``roc_auc_score`` with ``sample_weight`` = counts, ties ½), for the scores computable
  from p̄: ``entropy`` and ``maxprob`` (mutual information needs every network's output,
  which the cells do not keep).

Hand-written because no library offers a paired, two-level (seeds × points) bootstrap
of these metrics; ``scipy.stats.bootstrap`` resamples one level and calls the statistic
once per replicate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from uqbench.errors import UserError
from uqbench.evaluation.metrics import ECE_BINS

#: Bootstrap replicates unless told otherwise.
DEFAULT_REPLICATES = 2000
#: OOD scores whose AUROC difference is reported by default (the table's column).
DEFAULT_OOD_SCORES = ("entropy",)
#: Per-point metrics, in table order.
POINT_METRICS = ("acc", "nll", "brier")
#: Columns of :func:`difference_table`.
DIFF_COLUMNS = ("method", "metric", "diff", "low", "high", "excludes_zero", "seeds")

Arrays = Mapping[str, np.ndarray]
#: Bound on the elements of one block of count vectors (rows × points), 16 MB per float64 block.
_BLOCK = 2_000_000


class _Cell:
    """Per-point quantities of one (method, seed) cell, from its saved arrays."""

    def __init__(self, arrays: Arrays, label: str, ood_scores: Sequence[str]) -> None:
        if "test_probs" not in arrays or "test_labels" not in arrays:
            raise UserError(
                f"{label}: its arrays hold no test_probs / test_labels; differences with "
                "intervals need classification cells"
            )
        p = np.asarray(arrays["test_probs"], dtype=np.float64)
        y = np.asarray(arrays["test_labels"], dtype=np.int64).reshape(-1)
        if p.ndim != 2 or len(p) != len(y):
            raise UserError(f"{label}: test_probs {p.shape} does not match test_labels {y.shape}")
        self.labels = y
        self.finite = bool(np.isfinite(p).all()) and all(
            np.isfinite(v).all() for k, v in arrays.items() if k.startswith("ood_probs/")
        )
        p = np.nan_to_num(p, nan=0.0, posinf=0.0, neginf=0.0)  # its results are NaN-ed
        rows = np.arange(len(y))
        picked = p[rows, y]
        conf = p.max(1)
        correct = (p.argmax(1) == y).astype(np.float64)
        onehot = np.zeros_like(p)
        onehot[rows, y] = 1.0
        self.points = np.stack(
            [
                correct,
                -np.log(np.maximum(picked, np.finfo(np.float64).tiny)),
                ((p - onehot) ** 2).sum(1),
            ],
            axis=1,
        )  # [N, 3] in POINT_METRICS order
        edges = np.linspace(0.0, 1.0, ECE_BINS + 1)
        bins = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, ECE_BINS - 1)
        self.ece_terms = np.zeros((len(y), ECE_BINS))
        self.ece_terms[rows, bins] = correct - conf
        self.scores_in = {s: _score(p, s) for s in ood_scores}
        self.scores_out = {
            (key.split("/", 1)[1], s): _score(np.asarray(v, dtype=np.float64), s)
            for key, v in arrays.items()
            if key.startswith("ood_probs/")
            for s in ood_scores
        }
        self.ranks: dict[tuple[str, str], tuple[np.ndarray, ...]] = {}


def _score(p: np.ndarray, name: str) -> np.ndarray:
    if name == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.where(p > 0, p * np.log(p), 0.0).sum(1)
    if name == "maxprob":
        return 1.0 - p.max(1)
    raise UserError(f"OOD score {name!r} cannot be computed from p̄; use entropy or maxprob")


def weighted_auroc(
    score_in: np.ndarray, score_out: np.ndarray, c_in: np.ndarray, c_out: np.ndarray
) -> np.ndarray:
    """AUROC (OOD = positive, ties ½) under each column of integer weights ``c_in [N_in, R]``,
    ``c_out [N_out, R]``: Σ_j c_out_j (W_in(< s_j) + ½ W_in(= s_j)) / (Σ c_in Σ c_out).

    Equals sklearn's ``roc_auc_score(labels, scores, sample_weight=weights)`` per column;
    O(N) per column through a cumulative sum over the sorted in-distribution scores, in
    exact integer arithmetic (twice the numerator is an integer). Points are the leading
    axis so that every gather moves whole contiguous rows.
    """
    return _auroc_of_ranks(_ranks(score_in, score_out), c_in, c_out)


def _ranks(score_in: np.ndarray, score_out: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sort order of the in-distribution scores and, per OOD score, how many lie below /
    at or below it."""
    order = np.argsort(score_in, kind="stable")
    s_sorted = score_in[order]
    lo = np.searchsorted(s_sorted, score_out, side="left")
    hi = np.searchsorted(s_sorted, score_out, side="right")
    return order, lo, hi


def _cumulative(order: np.ndarray, c_in: np.ndarray) -> np.ndarray:
    """``cum[k]`` = weight of the k lowest in-distribution scores, ``[N_in + 1, R]``."""
    cum = np.zeros((len(order) + 1, c_in.shape[1]), dtype=np.int64)
    np.cumsum(c_in[order], axis=0, out=cum[1:])
    return cum


def _auroc_of_ranks(
    ranks: tuple[np.ndarray, ...],
    c_in: np.ndarray,
    c_out: np.ndarray,
    cum: np.ndarray | None = None,
) -> np.ndarray:
    order, lo, hi = ranks
    c_in = np.asarray(c_in, dtype=np.int64)
    c_out = np.asarray(c_out, dtype=np.int64)
    if cum is None:
        cum = _cumulative(order, c_in)
    # 2 (W_in(<) + ½ W_in(=)) = W_in(<) + W_in(≤)
    twice = 2 * cum[lo] if np.array_equal(lo, hi) else cum[lo] + cum[hi]
    num = np.einsum("ij,ij->j", twice, c_out)
    return num / (2.0 * c_in.sum(0) * c_out.sum(0))


def _counts(rng: np.random.Generator, size: int, rows: int) -> np.ndarray:
    """``rows`` resamples of ``size`` points as counts ``[size, rows]``: column r holds how
    often each point was drawn (multinomial(size, uniform))."""
    idx = rng.integers(0, size, size=(rows, size)) * rows + np.arange(rows)[:, None]
    return np.bincount(idx.ravel(), minlength=rows * size).reshape(size, rows)


def _metric_names(cell: _Cell, ood_scores: Sequence[str]) -> list[str]:
    names = [*POINT_METRICS, "ece"]
    oods = list(dict.fromkeys(o for o, _ in cell.scores_out))
    names += [f"auroc/{o}/{s}" for o in oods for s in ood_scores]
    return names


def _values(
    cell: _Cell,
    c: np.ndarray,
    weights: np.ndarray,
    c_ood: Mapping[str, np.ndarray],
    names: Sequence[str],
) -> np.ndarray:
    """Every metric of ``cell`` under each column of counts ``c [N, R]`` (``weights``: the
    same as float64): ``[R, len(names)]``."""
    n = cell.points.shape[0]
    out = np.empty((c.shape[1], len(names)))
    out[:, : len(POINT_METRICS)] = (cell.points.T @ weights).T / n
    out[:, len(POINT_METRICS)] = np.abs(cell.ece_terms.T @ weights).sum(0) / n
    cums: dict[str, np.ndarray] = {}  # one cumulative sum per score, shared by the OOD sets
    for k, name in enumerate(names[len(POINT_METRICS) + 1 :], start=len(POINT_METRICS) + 1):
        _, ood, score = name.split("/")
        key = (ood, score)
        if key not in cell.ranks:
            cell.ranks[key] = _ranks(cell.scores_in[score], cell.scores_out[key])
        if score not in cums:
            cums[score] = _cumulative(cell.ranks[key][0], c)
        out[:, k] = _auroc_of_ranks(cell.ranks[key], c, c_ood[ood], cums[score])
    return out


def _full(cell: _Cell, names: Sequence[str]) -> np.ndarray:
    """Every metric of ``cell`` on its full test set (AUROC through sklearn)."""
    n = cell.points.shape[0]
    values = [*cell.points.mean(0), np.abs(cell.ece_terms.sum(0)).sum() / n]
    for name in names[len(POINT_METRICS) + 1 :]:
        _, ood, score = name.split("/")
        s_in, s_out = cell.scores_in[score], cell.scores_out[(ood, score)]
        if not (np.isfinite(s_in).all() and np.isfinite(s_out).all()):
            values.append(float("nan"))
            continue
        y = np.r_[np.zeros(len(s_in)), np.ones(len(s_out))]
        values.append(roc_auc_score(y, np.r_[s_in, s_out]))
    return np.asarray(values, dtype=np.float64)


def paired_bootstrap(
    methods: Mapping[str, Sequence[Arrays]],
    baseline: Sequence[Arrays],
    *,
    replicates: int = DEFAULT_REPLICATES,
    level: float = 0.95,
    seed: int = 0,
    ood_scores: Sequence[str] = DEFAULT_OOD_SCORES,
) -> dict[str, pd.DataFrame]:
    """Differences method − baseline with percentile intervals (see the module docstring).

    ``methods``: name -> that method's cell arrays, one per seed, in the same seed order
    as ``baseline``. All methods share the same resamples. Returns name -> a frame with
    columns ``metric, diff, low, high, excludes_zero`` (one row per metric that every
    cell has: acc, nll, brier, ece, auroc/<ood>/<score>). A method (or baseline) with a
    non-finite probability in any cell gets NaN throughout.
    """
    if replicates < 1 or not 0 < level < 1:
        raise UserError(f"replicates {replicates} must be >= 1 and level {level} in (0, 1)")
    n_seeds = len(baseline)
    if n_seeds == 0:
        raise UserError("no common seed between the methods and the baseline")
    base = [_Cell(a, f"baseline seed #{s}", ood_scores) for s, a in enumerate(baseline)]
    cells: dict[str, list[_Cell]] = {}
    for name, arrays in methods.items():
        if len(arrays) != n_seeds:
            raise UserError(f"{name}: {len(arrays)} cells for {n_seeds} baseline seeds")
        cells[name] = [_Cell(a, f"{name} seed #{s}", ood_scores) for s, a in enumerate(arrays)]
        for s, (mine, theirs) in enumerate(zip(cells[name], base, strict=True)):
            if not np.array_equal(mine.labels, theirs.labels):
                raise UserError(
                    f"{name} and the baseline were not scored on the same test set "
                    f"(seed #{s}); a paired comparison needs the same test points"
                )
    names = _metric_names(base[0], ood_scores)
    for group in [base, *cells.values()]:
        for cell in group:
            names = [m for m in names if m in _metric_names(cell, ood_scores)]
    oods = list(dict.fromkeys(m.split("/")[1] for m in names if m.startswith("auroc/")))

    point = {
        name: np.mean([_full(m, names) - _full(b, names) for m, b in zip(cs, base, strict=True)], 0)
        for name, cs in cells.items()
    }
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n_seeds, size=(replicates, n_seeds))  # seed positions per replicate
    sums = {name: np.zeros((replicates, len(names))) for name in cells}
    for s in range(n_seeds):
        rows = np.flatnonzero((drawn == s).ravel()) // n_seeds  # replicate of each draw of s
        sizes = [len(base[s].labels)] + [len(base[s].scores_out[(o, ood_scores[0])]) for o in oods]
        block = max(1, _BLOCK // max(sizes))
        for start in range(0, len(rows), block):
            part = rows[start : start + block]
            c = _counts(rng, sizes[0], len(part))
            c_ood = {
                o: _counts(rng, size, len(part)) for o, size in zip(oods, sizes[1:], strict=True)
            }
            weights = c.astype(np.float64)
            ref = _values(base[s], c, weights, c_ood, names)
            for name, cs in cells.items():
                np.add.at(sums[name], part, _values(cs[s], c, weights, c_ood, names) - ref)
    alpha = (1 - level) / 2
    out = {}
    for name in cells:
        reps = sums[name] / n_seeds
        low, high = np.quantile(reps, [alpha, 1 - alpha], axis=0)
        if not all(c.finite for c in [*cells[name], *base]):  # a diverged cell: no number
            point[name] = low = high = np.full(len(names), np.nan)
        out[name] = pd.DataFrame(
            {
                "metric": names,
                "diff": point[name],
                "low": low,
                "high": high,
                "excludes_zero": (low > 0) | (high < 0),
            }
        )
    return out


def difference_table(
    cells: Mapping[tuple[str, int], Arrays],
    baseline: str,
    *,
    replicates: int = DEFAULT_REPLICATES,
    level: float = 0.95,
    seed: int = 0,
    ood_scores: Sequence[str] = DEFAULT_OOD_SCORES,
) -> pd.DataFrame:
    """Every method's difference to ``baseline`` on the seeds it shares with it.

    ``cells``: (method, seed) -> that cell's arrays (:attr:`Evaluation.arrays`). Returns a
    frame with columns :data:`DIFF_COLUMNS` (``seeds``: the common seeds, e.g. "0,1,2");
    methods with no seed in common with the baseline are left out.
    """
    methods = list(dict.fromkeys(m for m, _ in cells))
    if baseline not in methods:
        raise UserError(
            f"--baseline {baseline}: no cell of that method here; methods: {', '.join(methods)}"
        )
    seeds_of = {m: sorted(s for mm, s in cells if mm == m) for m in methods}
    groups: dict[tuple[int, ...], list[str]] = {}
    for m in methods:
        if m != baseline:
            common = tuple(s for s in seeds_of[m] if s in seeds_of[baseline])
            if common:
                groups.setdefault(common, []).append(m)
    frames = []
    for common, group in groups.items():
        result = paired_bootstrap(
            {m: [cells[(m, s)] for s in common] for m in group},
            [cells[(baseline, s)] for s in common],
            replicates=replicates,
            level=level,
            seed=seed,
            ood_scores=ood_scores,
        )
        for m in group:
            frame = result[m]
            frame.insert(0, "method", m)
            frame["seeds"] = ",".join(str(s) for s in common)
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(DIFF_COLUMNS))
    order = {m: i for i, m in enumerate(methods)}
    table = pd.concat(frames, ignore_index=True)
    table = table.sort_values("method", key=lambda s: s.map(order), kind="stable")
    return table[list(DIFF_COLUMNS)].reset_index(drop=True)


def difference_markdown(
    table: pd.DataFrame,
    baseline: str,
    *,
    level: float = 0.95,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
) -> str:
    """The difference table as Markdown: one row per method, ``diff [low, high]`` per metric,
    bold where the interval excludes 0."""
    from uqbench.evaluation.tables import render_markdown

    if table.empty:
        return f"No method shares a seed with the baseline {baseline}."
    metrics = list(dict.fromkeys(table["metric"]))
    index = {(r.method, r.metric): r for r in table.itertuples(index=False)}
    rows = []
    for method in dict.fromkeys(table["method"]):
        seeds = next(r.seeds for r in table.itertuples(index=False) if r.method == method)
        row = [method, seeds]
        for metric in metrics:
            r = index.get((method, metric))
            if r is None:
                row.append("—")
                continue
            text = f"{r.diff:+.4f} [{r.low:+.4f}, {r.high:+.4f}]"
            row.append(f"**{text}**" if r.excludes_zero else text)
        rows.append(row)
    header = ["method", "seeds", *metrics]
    numeric = [False, False] + [True] * len(metrics)
    one_seed = all("," not in str(s) for s in table["seeds"])
    over = (
        "test points only (one seed per method: the interval leaves out seed-to-seed variation)"
        if one_seed
        else "seeds and test points"
    )
    intro = (
        f"Difference to {baseline} (method − {baseline}), {level:.0%} paired bootstrap "
        f"interval over {over} (B = {replicates}, bootstrap seed {seed}); "
        "**bold**: the interval excludes 0."
    )
    return intro + "\n\n" + render_markdown(header, rows, numeric)


def baseline_report(
    cells: Mapping[tuple[str, int], Arrays],
    baseline: str,
    *,
    replicates: int = DEFAULT_REPLICATES,
    seed: int = 0,
) -> str:
    """``uqbench report DIR --baseline METHOD``: the Markdown difference table of a results
    folder's cells ((method, seed) -> arrays)."""
    table = difference_table(cells, baseline, replicates=replicates, seed=seed)
    return difference_markdown(table, baseline, replicates=replicates, seed=seed)
