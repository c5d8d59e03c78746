"""Score one fitted sampler on one benchmark, the same way for every method.

One set of n weight sets is drawn with a CPU ``torch.Generator`` seeded with ``seed``; the
n networks run together (``vmap``, chunked against ``memory_budget``) on the test set and
on every OOD set; every metric below is computed from those outputs. Classification keeps
per-network log-softmax outputs so the NLL never takes the log of a rounded 0.

Metric names (values as fractions, entropies in nats):

- classification: ``acc``, ``acc@k`` (k in 1, 5, 10, 100 with k ≤ n), ``nll``, ``brier``,
  ``ece``, ``auroc/<ood>/<score>``, ``aupr/<ood>/<score>``, ``fpr95/<ood>/<score>``
  (score in entropy, mi, maxprob), ``disagreement@k``, ``pairwise_disagreement@k``;
- regression: ``rmse``, ``gnll``, ``std_in``, ``std_out``, ``coverage68``, ``coverage95``
  and, with a training range, ``coverage68_in`` / ``_out``, ``coverage95_in`` / ``_out``;
- always: ``n_samples`` (n actually drawn; capped at ``sampler.max_samples``),
  ``diversity_l2_rel_std@k``, ``sample_eval_s`` (wall time to draw the n weight sets and
  run them on test + OOD), and whatever the sampler puts in ``extra_metrics``;
- diversity is reported at equal n for every method: ``@5`` on the first 5 of the drawn
  networks (a 5-member ensemble's M) and ``@100`` on the first 100 where the draw has 100
  (:func:`uqbench.evaluation.metrics.diversity_at`; a draw of n < 5 reports ``@n``).
  Stores written before diversity was reported at equal n hold ``disagreement`` and
  ``diversity_l2_rel_std`` (population std) over all n drawn networks; tables still show
  them under those names, but they compare only at equal ``n_samples``;
- every metric of each of ``sampler.reference_views()`` (e.g. APD's teacher), scored the
  same way with the same seed, as ``<view>:<metric>`` (:func:`split_view_metric`).

See :mod:`uqbench.evaluation.metrics` and :mod:`uqbench.evaluation.regression` for
each metric's definition.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from uqbench.data.benchmark import BenchmarkData
from uqbench.errors import UserError
from uqbench.evaluation import arrays as arrays_io
from uqbench.evaluation import metrics as M
from uqbench.evaluation import regression as R
from uqbench.functional import DEFAULT_MEMORY_BUDGET, batched_predict
from uqbench.measure import synchronize
from uqbench.sampler import WeightSampler
from uqbench.testing import check_samples
from uqbench.training import as_tensors

#: Joins a reference view's name and its metric (``teacher:acc``).
VIEW_SEPARATOR = ":"

#: The ``acc@k`` rows of the paper's Table 2.
ACC_AT_K = (1, 5, 10, 100)


@dataclass
class Evaluation:
    """What :func:`evaluate` returns for one (sampler, benchmark, seed) cell.

    ``metrics``: metric name -> value (see the module docstring).
    ``arrays``: what goes into the cell's ``.npz`` and feeds the figures:

    - classification: ``test_probs`` p̄ on the test set ``[N, C]`` float32, ``test_labels``
      ``[N]`` int64, ``ood_probs/<name>`` p̄ per OOD set, ``acc_curve`` ``[n]`` (accuracy of
      the first k networks, k = 1..n), ``reliability/edges`` ``[16]``,
      ``reliability/confidence``, ``reliability/accuracy`` (NaN in empty bins),
      ``reliability/count`` ``[15]``;
    - regression with 1-D inputs: ``grid_x`` (test inputs, sorted), ``grid_mean``,
      ``grid_std_epistemic``, ``grid_std_total``, ``test_y`` (in ``grid_x`` order),
      ``train_x``, ``train_y``, and ``train_range`` ``[2]`` when the benchmark has one.
    """

    metrics: dict[str, float] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def save_arrays(self, path: str | Path) -> Path:
        """Write ``arrays`` to a compressed ``.npz`` (see :mod:`uqbench.evaluation.arrays`)."""
        return arrays_io.save_arrays(path, self.arrays)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Read a cell's ``.npz`` back into a plain dict (the ``cells`` values of the plots);
    reads the cells of every results folder (see :mod:`uqbench.evaluation.arrays`)."""
    return arrays_io.load_arrays(path)


@torch.no_grad()
def evaluate(
    sampler: WeightSampler,
    data: BenchmarkData,
    *,
    n_samples: int,
    seed: int,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Evaluation:
    """Draw ``n_samples`` networks from a fitted ``sampler`` and score them on ``data``.

    ``n_samples`` is capped at ``sampler.max_samples`` (an ensemble of 5 reports acc@1 and
    acc@5 only); the count used is the ``n_samples`` metric. Runs on ``sampler.device``;
    inputs are moved there chunk by chunk. Every draw (the sampler's and each reference
    view's) is checked against the sampler contract before it is scored
    (:func:`uqbench.testing.check_samples`): a UserError names the method and the
    parameter when a key is missing or extra, a shape, dtype or device is wrong, or a
    weight is not finite.
    """
    return _evaluate(
        sampler,
        data,
        n_samples=n_samples,
        seed=seed,
        memory_budget=memory_budget,
        label=getattr(sampler, "name", type(sampler).__name__),
    )


def _evaluate(
    sampler: WeightSampler,
    data: BenchmarkData,
    *,
    n_samples: int,
    seed: int,
    memory_budget: int,
    label: str,
) -> Evaluation:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise UserError(f"asked for {n_samples!r} sampled networks; use a whole number >= 1")
    n = n_samples if sampler.max_samples is None else min(n_samples, sampler.max_samples)
    sampler.check_n(n)
    device = sampler.device
    target = sampler.target
    x_test, y_test = as_tensors(data.test)

    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    start = time.perf_counter()
    draw = sampler.sample(n, generator=generator)
    check_samples(draw, target, n, device=device, label=label)
    weights = {k: v.detach() for k, v in draw.items()}
    if data.task.is_classification:

        def predict(x: Tensor) -> Tensor:
            out = batched_predict(
                target,
                weights,
                x,
                memory_budget=memory_budget,
                transform=lambda logits: torch.log_softmax(logits.float(), dim=-1),
            )
            return out.cpu()

        test_log_probs = predict(x_test)
        ood_log_probs = {name: predict(x) for name, x in data.ood.items()}
    else:
        test_outputs = batched_predict(target, weights, x_test, memory_budget=memory_budget).cpu()
    synchronize(device)
    elapsed = time.perf_counter() - start

    result = Evaluation()
    if data.task.is_classification:
        _classification(result, test_log_probs, y_test, ood_log_probs)
    else:
        _regression(result, test_outputs, x_test, y_test, data)
    per_network = test_log_probs.double().exp() if data.task.is_classification else None
    # Diversity in weight space is over the parameters (not batch-norm statistics).
    params = {k: weights[k] for k, _ in target.named_parameters()}
    result.metrics.update(M.diversity_at(per_network, params))
    result.metrics["n_samples"] = float(n)
    result.metrics["sample_eval_s"] = elapsed
    result.metrics.update({k: float(v) for k, v in sampler.extra_metrics.items()})
    for name, view in sampler.reference_views().items():
        scored = _evaluate(
            view,
            data,
            n_samples=n_samples,
            seed=seed,
            memory_budget=memory_budget,
            label=f"{label}{VIEW_SEPARATOR}{name}",
        )
        result.metrics.update({f"{name}{VIEW_SEPARATOR}{k}": v for k, v in scored.metrics.items()})
    return result


def split_view_metric(metric: str) -> tuple[str | None, str]:
    """``"teacher:acc"`` -> ``("teacher", "acc")``; a sampler's own metric -> ``(None, metric)``."""
    view, sep, rest = metric.partition(VIEW_SEPARATOR)
    return (view, rest) if sep else (None, metric)


def _classification(
    result: Evaluation, log_probs: Tensor, labels: Tensor, ood_log_probs: dict[str, Tensor]
) -> None:
    probs = log_probs.double().exp()  # [n, N, C]
    pbar = probs.mean(0)
    m = result.metrics
    m["acc"] = M.accuracy(pbar, labels)
    curve = M.accuracy_curve(probs, labels)
    for k in ACC_AT_K:
        if k <= len(curve):
            m[f"acc@{k}"] = float(curve[k - 1])
    m["nll"] = M.negative_log_likelihood(log_probs, labels)
    m["brier"] = M.brier_score(pbar, labels)
    bins = M.reliability_bins(pbar, labels)
    m["ece"] = bins.ece
    for name, ood_lp in ood_log_probs.items():
        for key, value in M.ood_detection(probs, ood_lp.double().exp()).items():
            metric, score = key.split("/")
            m[f"{metric}/{name}/{score}"] = value

    a = result.arrays
    a["test_probs"] = pbar.float().numpy()
    a["test_labels"] = labels.to(torch.int64).numpy()
    for name, ood_lp in ood_log_probs.items():
        a[f"ood_probs/{name}"] = ood_lp.double().exp().mean(0).float().numpy()
    a["acc_curve"] = curve
    a["reliability/edges"] = bins.edges
    a["reliability/confidence"] = bins.confidence
    a["reliability/accuracy"] = bins.accuracy
    a["reliability/count"] = bins.count


def _regression(
    result: Evaluation, outputs: Tensor, x: Tensor, y: Tensor, data: BenchmarkData
) -> None:
    pred = R.gaussian_predictive(outputs, data.task)
    m = result.metrics
    m["rmse"] = R.rmse(pred, y)
    m["gnll"] = R.gaussian_nll(pred, y)
    if data.train_range is not None:
        m.update(R.std_inside_outside(pred, x, data.train_range))
    m.update(R.coverage(outputs, data.task, x, y, data.train_range))

    if x.reshape(len(x), -1).shape[1] != 1:
        return  # the bands figure is for 1-D inputs only
    a = result.arrays
    xs = x.reshape(-1).double()
    order = torch.argsort(xs)
    a["grid_x"] = xs[order].numpy()
    a["grid_mean"] = pred.mean[order].numpy()
    a["grid_std_epistemic"] = pred.epistemic_std[order].numpy()
    a["grid_std_total"] = pred.total_std[order].numpy()
    a["test_y"] = y.reshape(-1).double()[order].numpy()
    train_x, train_y = as_tensors(data.train)
    a["train_x"] = train_x.reshape(-1).double().numpy()
    a["train_y"] = train_y.reshape(-1).double().numpy()
    if data.train_range is not None:
        a["train_range"] = np.asarray(data.train_range, dtype=np.float64)
