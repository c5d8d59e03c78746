"""Classification metrics: one definition each, stated in the docstring.

Conventions shared by every function here:

- ``probs`` are per-network class probabilities ``[n, N, C]`` (softmax of each of the n
  sampled networks on N inputs). A 2-D ``[N, C]`` array is read as a single network
  (n = 1), so every function also accepts an already-averaged predictive p̄.
- The predictive distribution is p̄ = (1/n) Σ_k p_k (the Bayesian model average).
- Logarithms are natural (entropies and NLL in nats); 0 · log 0 = 0.
- Inputs may be torch tensors or numpy arrays; sums are taken in float64; scalar metrics
  are returned as Python floats, per-point scores as float64 tensors.
- Out-of-distribution detection: OOD inputs are the *positive* class; a higher score
  means "more likely OOD".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from torch import Tensor

from uqbench.functional import flat_weight_norms

ArrayLike = Tensor | np.ndarray

#: Number of equal-width confidence bins of the ECE (Guo et al. 2017).
ECE_BINS = 15
#: Scores used to separate OOD from in-distribution inputs (higher = more OOD).
OOD_SCORES = ("entropy", "mi", "maxprob")


def _per_network(probs: ArrayLike) -> Tensor:
    """``probs`` as a float64 tensor ``[n, N, C]`` (a 2-D input becomes n = 1)."""
    p = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    if p.ndim == 2:
        p = p.unsqueeze(0)
    if p.ndim != 3:
        raise ValueError(f"expected probabilities [n, N, C] or [N, C], got shape {tuple(p.shape)}")
    return p


def _labels(labels: ArrayLike) -> Tensor:
    return torch.as_tensor(labels).detach().to("cpu", torch.int64).reshape(-1)


def log_probs_from_probs(probs: ArrayLike) -> Tensor:
    """log p with p clamped at float64's smallest normal number, for callers without logits.

    Prefer ``log_softmax`` of the logits: it keeps log-probabilities far below
    log(float tiny) exactly.
    """
    p = torch.as_tensor(probs).detach().to("cpu", torch.float64)
    return p.clamp_min(torch.finfo(torch.float64).tiny).log()


def predictive_probs(probs: ArrayLike) -> Tensor:
    """p̄ = (1/n) Σ_k p_k, shape ``[N, C]``."""
    return _per_network(probs).mean(0)


def _entropy(p: Tensor) -> Tensor:
    """H[p] = −Σ_c p_c log p_c over the last axis (nats, 0 log 0 = 0)."""
    return -torch.special.xlogy(p, p).sum(-1)


def predictive_entropy(probs: ArrayLike) -> Tensor:
    """Total uncertainty H[p̄] = −Σ_c p̄_c log p̄_c per input, shape ``[N]`` (nats)."""
    return _entropy(predictive_probs(probs))


def expected_entropy(probs: ArrayLike) -> Tensor:
    """Aleatoric uncertainty (1/n) Σ_k H[p_k] per input, shape ``[N]`` (nats)."""
    return _entropy(_per_network(probs)).mean(0)


def mutual_information(probs: ArrayLike) -> Tensor:
    """Epistemic uncertainty I = H[p̄] − (1/n) Σ_k H[p_k] per input, shape ``[N]`` (nats).

    Non-negative by Jensen; float round-off below 0 is clamped to 0.
    """
    p = _per_network(probs)
    return (_entropy(p.mean(0)) - _entropy(p).mean(0)).clamp_min(0.0)


def _predictions(p: Tensor) -> Tensor:
    """argmax over the last axis (ties: lowest index); −1 (never correct) where a row is not
    finite, so a diverged network earns no accuracy (torch's argmax would pick the NaN)."""
    return p.argmax(-1).masked_fill(~p.isfinite().all(-1), -1)


def accuracy(probs: ArrayLike, labels: ArrayLike) -> float:
    """Share of inputs with argmax_c p̄_c = y (ties go to the lowest class index; an input
    with a non-finite p̄ counts as wrong)."""
    pred = _predictions(predictive_probs(probs))
    return (pred == _labels(labels)).double().mean().item()


def negative_log_likelihood(log_probs: ArrayLike, labels: ArrayLike) -> float:
    """NLL = −(1/N) Σ_i log p̄(y_i | x_i), in nats.

    Takes per-network *log*-probabilities ``[n, N, C]`` (``log_softmax`` of the logits) and
    computes log p̄(y) = logsumexp_k log p_k(y) − log n, so a class probability that
    rounds to 0 in float32 never becomes log 0.
    """
    lp = torch.as_tensor(log_probs).detach().to("cpu", torch.float64)
    if lp.ndim == 2:
        lp = lp.unsqueeze(0)
    y = _labels(labels)
    picked = lp.gather(2, y.view(1, -1, 1).expand(lp.shape[0], -1, 1)).squeeze(2)  # [n, N]
    log_pbar = torch.logsumexp(picked, dim=0) - np.log(lp.shape[0])
    return -log_pbar.mean().item()


def brier_score(probs: ArrayLike, labels: ArrayLike) -> float:
    """Brier = (1/N) Σ_i Σ_c (p̄_ic − 1[y_i = c])², range [0, 2] (not halved)."""
    pbar = predictive_probs(probs)
    onehot = torch.nn.functional.one_hot(_labels(labels), pbar.shape[-1]).double()
    return (pbar - onehot).pow(2).sum(-1).mean().item()


@dataclass(frozen=True)
class ReliabilityBins:
    """Top-label calibration per confidence bin (the reliability diagram's data).

    ``edges`` has ``n_bins + 1`` entries; bin b holds inputs with confidence in
    ``(edges[b], edges[b + 1]]``. ``confidence`` / ``accuracy`` are NaN for empty bins.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    @property
    def ece(self) -> float:
        """Σ_b (n_b / N) · |acc_b − conf_b| over non-empty bins."""
        full = self.count > 0
        weights = self.count[full] / self.count.sum()
        return float(np.sum(weights * np.abs(self.accuracy[full] - self.confidence[full])))


def reliability_bins(
    probs: ArrayLike, labels: ArrayLike, n_bins: int = ECE_BINS
) -> ReliabilityBins:
    """Bin inputs by top-label confidence max_c p̄_c into ``n_bins`` equal-width bins over (0, 1].

    Bin b = (b/n_bins, (b+1)/n_bins], right-closed (a confidence of exactly 1 lands in the
    last bin; top-label confidence is always ≥ 1/C > 0). Per bin: mean confidence, accuracy
    of argmax p̄, and count.
    """
    pbar = predictive_probs(probs)
    conf, pred = pbar.max(-1)
    correct = (pred == _labels(labels)).double()
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    # bucketize(right=False) gives i with edges[i-1] < x <= edges[i]: right-closed bins.
    idx = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, n_bins - 1)
    count = torch.bincount(idx, minlength=n_bins).double()
    conf_sum = torch.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = (conf_sum / count).numpy()
        mean_acc = (acc_sum / count).numpy()
    return ReliabilityBins(
        edges=edges.numpy(),
        confidence=mean_conf,
        accuracy=mean_acc,
        count=count.numpy().astype(np.int64),
    )


def expected_calibration_error(
    probs: ArrayLike, labels: ArrayLike, n_bins: int = ECE_BINS
) -> float:
    """ECE = Σ_b (n_b / N) · |acc_b − conf_b| (top-label, L1; Guo et al. 2017).

    15 equal-width bins over (0, 1], right-closed: see :func:`reliability_bins`.
    """
    return reliability_bins(probs, labels, n_bins).ece


# --- out-of-distribution detection -----------------------------------------------------
def ood_scores(probs: ArrayLike) -> dict[str, Tensor]:
    """Per-input OOD scores, higher = more likely OOD, each ``[N]``.

    ``entropy``: H[p̄] (the paper's); ``mi``: mutual information; ``maxprob``: 1 − max_c p̄_c.
    """
    p = _per_network(probs)
    pbar = p.mean(0)
    total = _entropy(pbar)
    return {
        "entropy": total,
        "mi": (total - _entropy(p).mean(0)).clamp_min(0.0),
        "maxprob": 1.0 - pbar.max(-1).values,
    }


def _ood_labels_scores(score_in: ArrayLike, score_out: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s_in = torch.as_tensor(score_in).detach().to("cpu", torch.float64).reshape(-1).numpy()
    s_out = torch.as_tensor(score_out).detach().to("cpu", torch.float64).reshape(-1).numpy()
    y = np.concatenate([np.zeros(len(s_in)), np.ones(len(s_out))])
    return y, np.concatenate([s_in, s_out])


def auroc(score_in: ArrayLike, score_out: ArrayLike) -> float:
    """Area under the ROC curve, OOD = positive (sklearn ``roc_auc_score``; ties count ½).

    1 = every OOD score above every in-distribution score; 0.5 = indistinguishable.
    NaN when a score is not finite (e.g. a diverged sampler).
    """
    y, s = _ood_labels_scores(score_in, score_out)
    if not np.isfinite(s).all():
        return float("nan")
    return float(roc_auc_score(y, s))


def aupr(score_in: ArrayLike, score_out: ArrayLike) -> float:
    """Area under the precision-recall curve, OOD = positive, as average precision.

    AP = Σ_j (R_j − R_{j−1}) P_j over decreasing thresholds (sklearn
    ``average_precision_score``; step-wise, no trapezoidal interpolation). Its chance
    level is the OOD share of the pooled inputs. NaN for non-finite scores.
    """
    y, s = _ood_labels_scores(score_in, score_out)
    if not np.isfinite(s).all():
        return float("nan")
    return float(average_precision_score(y, s))


def fpr_at_tpr(score_in: ArrayLike, score_out: ArrayLike, tpr: float = 0.95) -> float:
    """False-positive rate on in-distribution inputs at the first threshold with TPR ≥ ``tpr``.

    Thresholds run from high to low over the distinct pooled scores (sklearn ``roc_curve``,
    ``drop_intermediate=False``); at the first one where the share of OOD inputs flagged
    (score ≥ threshold) reaches ``tpr``, return the share of in-distribution inputs flagged.
    No interpolation between operating points. NaN for non-finite scores.
    """
    y, s = _ood_labels_scores(score_in, score_out)
    if not np.isfinite(s).all():
        return float("nan")
    fpr, tprs, _ = roc_curve(y, s, drop_intermediate=False)
    return float(fpr[np.argmax(tprs >= tpr)])


def ood_detection(probs_in: ArrayLike, probs_out: ArrayLike) -> dict[str, float]:
    """``{"auroc/<score>", "aupr/<score>", "fpr95/<score>"}`` for every score in ``OOD_SCORES``."""
    s_in, s_out = ood_scores(probs_in), ood_scores(probs_out)
    out: dict[str, float] = {}
    for name in OOD_SCORES:
        out[f"auroc/{name}"] = auroc(s_in[name], s_out[name])
        out[f"aupr/{name}"] = aupr(s_in[name], s_out[name])
        out[f"fpr95/{name}"] = fpr_at_tpr(s_in[name], s_out[name], 0.95)
    return out


# --- number of sampled networks ---------------------------------------------------------
def accuracy_curve(probs: ArrayLike, labels: ArrayLike) -> np.ndarray:
    """``acc[k-1]`` = accuracy of the ensemble of the first k sampled networks, k = 1..n."""
    p = _per_network(probs)
    # argmax of the running sum = argmax of the running mean.
    pred = _predictions(p.cumsum(0))  # [n, N]
    return (pred == _labels(labels).view(1, -1)).double().mean(1).numpy()


def accuracy_of_first_k(
    probs: ArrayLike, labels: ArrayLike, ks: tuple[int, ...] = (1, 5, 10, 100)
) -> dict[int, float]:
    """``{k: accuracy of argmax of (1/k) Σ_{j<k} p_j}`` for each k ≤ n (larger k are skipped)."""
    p = _per_network(probs)
    ks = tuple(k for k in ks if 1 <= k <= p.shape[0])
    if not ks:
        return {}
    curve = accuracy_curve(p[: max(ks)], labels)
    return {k: float(curve[k - 1]) for k in ks}


# --- diversity -------------------------------------------------------------------------
#: Numbers of networks at which the harness reports every diversity metric (``@5``:
#: a 5-member ensemble's M; ``@100`` where a method can draw 100), so that methods are
#: compared at the same n: both ``disagreement`` and the std of a few norms depend on n.
DIVERSITY_AT = (5, 100)


def diversity_l2_rel_std(weights: dict[str, Tensor]) -> float:
    """Relative std of the weight norms: s_k ‖w_k‖₂ / mean_k ‖w_k‖₂ (the HyperGAN paper's).

    ``‖w_k‖₂`` is the L2 norm of network k's whole flattened weight vector (all
    parameters); s is the *sample* std (ddof = 1, Bessel-corrected variance). For 5
    Gaussian norms its expectation is ≈ 6 % below σ (c₄(5) = 0.940), the population std's
    ≈ 16 % (0.841); compare methods at the same n regardless (see :data:`DIVERSITY_AT`).
    NaN for a single network.
    """
    norms = flat_weight_norms({k: v.detach() for k, v in weights.items()}).cpu()
    if len(norms) < 2:
        return float("nan")
    return (norms.std(correction=1) / norms.mean()).item()


def disagreement(probs: ArrayLike) -> float:
    """(1/(nN)) Σ_k Σ_i 1[argmax_c p_k(x_i) ≠ argmax_c p̄(x_i)]: function-space diversity.

    A share of (network, point) pairs, measured against the n networks' own p̄, so it
    grows with n (p̄ of few networks sits close to each of them); compare methods at the
    same n only, or use :func:`pairwise_disagreement`. NaN when any probability is not
    finite.
    """
    p = _per_network(probs)
    if not p.isfinite().all():
        return float("nan")
    return (p.argmax(-1) != p.mean(0).argmax(-1).unsqueeze(0)).double().mean().item()


def pairwise_disagreement(probs: ArrayLike) -> float:
    """Mean over unordered pairs j < k of distinct sampled networks of the share of points
    where their argmaxes differ: (2 / (n(n−1))) Σ_{j<k} (1/N) Σ_i 1[ŷ_j(x_i) ≠ ŷ_k(x_i)].

    For independently drawn networks its expectation is the probability that two networks
    disagree on a point, whatever n is (an unbiased U-statistic), so methods drawn at
    different n compare fairly. Computed from the class counts n_ic of the argmaxes per
    point: 1 − Σ_c n_ic (n_ic − 1) / (n(n−1)). Accepts per-network probabilities
    ``[n, N, C]`` or argmax labels ``[n, N]`` (integer). NaN for n < 2 or a non-finite
    probability.
    """
    t = torch.as_tensor(probs).detach().to("cpu")
    if t.is_floating_point():
        p = _per_network(t)
        if not p.isfinite().all():
            return float("nan")
        votes, classes = p.argmax(-1), p.shape[-1]
    else:
        if t.ndim != 2:
            raise ValueError(f"expected argmax labels [n, N], got shape {tuple(t.shape)}")
        votes = t.to(torch.int64)
        classes = int(votes.max().item()) + 1 if votes.numel() else 1
    n, size = votes.shape
    if n < 2:
        return float("nan")
    counts = torch.zeros(size, classes, dtype=torch.float64)
    counts.scatter_add_(1, votes.T, torch.ones(size, n, dtype=torch.float64))
    agree = (counts * (counts - 1)).sum(1) / (n * (n - 1))
    return (1.0 - agree).mean().item()


def diversity_at(probs: ArrayLike | None, weights: dict[str, Tensor]) -> dict[str, float]:
    """Every diversity metric on the first k networks for each k in :data:`DIVERSITY_AT`
    that the draw reaches: ``disagreement@k``, ``pairwise_disagreement@k`` (classification;
    skipped when ``probs`` is None) and ``diversity_l2_rel_std@k``.

    A draw smaller than every k (n < 5) reports at k = n instead (n ≥ 2), named by its n.
    """
    n = next(iter(weights.values())).shape[0]
    p = None if probs is None else _per_network(probs)
    ks = [k for k in DIVERSITY_AT if k <= n] or ([n] if n >= 2 else [])
    out: dict[str, float] = {}
    for k in ks:
        if p is not None:
            out[f"disagreement@{k}"] = disagreement(p[:k])
            out[f"pairwise_disagreement@{k}"] = pairwise_disagreement(p[:k])
        out[f"diversity_l2_rel_std@{k}"] = diversity_l2_rel_std(
            {name: w[:k] for name, w in weights.items()}
        )
    return out
