"""Metric definitions: hand-worked cases, then agreement with scikit-learn / torchmetrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy
from scipy.stats import norm
from sklearn.metrics import accuracy_score, brier_score_loss, log_loss, root_mean_squared_error
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    multiclass_calibration_error,
)

from uqbench.evaluation import metrics as M
from uqbench.evaluation import regression as R
from uqbench.sampler import Task

# Two networks, three points, two classes.
NET1 = [[0.9, 0.1], [0.55, 0.45], [0.2, 0.8]]
NET2 = [[0.8, 0.2], [0.2, 0.8], [0.4, 0.6]]
LABELS = [0, 0, 1]
# p̄ = [[0.85, 0.15], [0.375, 0.625], [0.3, 0.7]]; argmax p̄ = [0, 1, 1]


@pytest.fixture
def hand() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([NET1, NET2], dtype=torch.float64), torch.tensor(LABELS)


def _h(p: list[float]) -> float:
    return -sum(q * math.log(q) for q in p if q > 0)


def test_hand_worked_two_nets_three_points(hand) -> None:
    probs, labels = hand
    pbar = [[0.85, 0.15], [0.375, 0.625], [0.3, 0.7]]
    assert M.predictive_probs(probs).numpy() == pytest.approx(np.array(pbar))
    assert M.accuracy(probs, labels) == pytest.approx(2 / 3)
    # Brier: (0.15² + 0.15²) + (0.625² + 0.625²) + (0.3² + 0.3²), over 3 points.
    assert M.brier_score(probs, labels) == pytest.approx((0.045 + 0.78125 + 0.18) / 3)
    nll = -(math.log(0.85) + math.log(0.375) + math.log(0.7)) / 3
    assert M.negative_log_likelihood(probs.log(), labels) == pytest.approx(nll)
    # One point per bin (12, 9, 10); correct, wrong, correct.
    ece = (abs(1 - 0.85) + abs(0 - 0.625) + abs(1 - 0.7)) / 3
    assert M.expected_calibration_error(probs, labels) == pytest.approx(ece)

    total = [_h(p) for p in pbar]
    aleatoric = [(_h(a) + _h(b)) / 2 for a, b in zip(NET1, NET2, strict=True)]
    assert M.predictive_entropy(probs).numpy() == pytest.approx(total)
    assert M.expected_entropy(probs).numpy() == pytest.approx(aleatoric)
    mi = [t - a for t, a in zip(total, aleatoric, strict=True)]
    assert M.mutual_information(probs).numpy() == pytest.approx(mi)
    assert min(mi) > 0
    # Net 1 says class 0 at point 2 where p̄ says 1; net 2 always agrees with p̄.
    assert M.disagreement(probs) == pytest.approx(1 / 6)
    scores = M.ood_scores(probs)
    assert scores["maxprob"].numpy() == pytest.approx([0.15, 0.375, 0.3])
    assert scores["entropy"].numpy() == pytest.approx(total)


def test_ece_averages_within_a_bin_and_bins_are_right_closed() -> None:
    # Confidences 0.95 and 0.97 share bin 14: acc 1/2, conf 0.96; a third point in bin 10.
    probs = torch.tensor([[0.95, 0.05], [0.03, 0.97], [0.7, 0.3]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 0])
    bins = M.reliability_bins(probs, labels)
    assert bins.count[14] == 2 and bins.count[10] == 1 and bins.count.sum() == 3
    assert bins.confidence[14] == pytest.approx(0.96)
    assert bins.accuracy[14] == pytest.approx(0.5)
    assert np.isnan(bins.confidence[0]) and bins.count[0] == 0
    expected = 2 / 3 * abs(0.5 - 0.96) + 1 / 3 * abs(1 - 0.7)
    assert M.expected_calibration_error(probs, labels) == pytest.approx(expected)

    # A confidence exactly on an edge belongs to the bin it closes: (b/15, (b+1)/15].
    edge = float(bins.edges[8])
    on_edge = torch.tensor([[edge, 1 - edge], [1.0, 0.0]], dtype=torch.float64)
    counts = M.reliability_bins(on_edge, torch.tensor([0, 0])).count
    assert counts[7] == 1 and counts[8] == 0
    assert counts[14] == 1  # confidence 1 is in the last bin


def _random_probs(n: int = 7, size: int = 500, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(classes, 0.3), size=(n, size))
    labels = rng.integers(0, classes, size=size)
    return torch.from_numpy(probs), torch.from_numpy(labels)


def test_agrees_with_sklearn_torchmetrics_scipy_on_random_data() -> None:
    probs, labels = _random_probs()
    pbar = probs.mean(0).numpy()
    y = labels.numpy()
    classes = list(range(pbar.shape[1]))
    assert M.accuracy(probs, labels) == pytest.approx(accuracy_score(y, pbar.argmax(1)))
    assert M.negative_log_likelihood(probs.log(), labels) == pytest.approx(
        log_loss(y, pbar, labels=classes), rel=1e-9
    )
    assert M.brier_score(probs, labels) == pytest.approx(
        brier_score_loss(y, pbar, labels=classes, scale_by_half=False), rel=1e-9
    )
    reference = multiclass_calibration_error(
        torch.from_numpy(pbar), labels, num_classes=len(classes), n_bins=15, norm="l1"
    ).item()
    assert M.expected_calibration_error(probs, labels) == pytest.approx(reference, abs=1e-6)
    assert M.predictive_entropy(probs).numpy() == pytest.approx(scipy_entropy(pbar, axis=1))
    aleatoric = scipy_entropy(probs.numpy(), axis=2).mean(0)
    assert M.expected_entropy(probs).numpy() == pytest.approx(aleatoric)
    assert (M.mutual_information(probs) >= 0).all()


def test_nll_survives_probabilities_that_underflow() -> None:
    # log p(y=1) = -200 for net 1 and -300 for net 2: both round to 0 in float32.
    logits = torch.tensor([[[0.0, -200.0]], [[0.0, -300.0]]])
    log_probs = torch.log_softmax(logits, dim=-1)
    assert (torch.softmax(logits, dim=-1)[..., 1] == 0).all()  # the naive path would be log 0
    expected = 200 + math.log(2) - math.log1p(math.exp(-100))
    assert M.negative_log_likelihood(log_probs, torch.tensor([1])) == pytest.approx(
        expected, rel=1e-6
    )
    # Everything far below exp's range: still exact, not inf.
    deep = torch.log_softmax(torch.tensor([[[0.0, -1000.0]], [[0.0, -1000.0]]]), dim=-1)
    assert M.negative_log_likelihood(deep, torch.tensor([1])) == pytest.approx(1000.0, rel=1e-6)
    # From probabilities with an exact 0: clamped at float64's tiny, finite.
    clamped = M.log_probs_from_probs(torch.tensor([[[1.0, 0.0]]]))
    assert M.negative_log_likelihood(clamped, torch.tensor([1])) == pytest.approx(
        -math.log(torch.finfo(torch.float64).tiny)
    )


def test_non_finite_predictions_earn_no_accuracy() -> None:
    probs = torch.tensor([[[0.9, 0.1], [float("nan"), float("nan")], [0.3, 0.7]]])
    labels = torch.tensor([0, 0, 1])
    assert M.accuracy(probs, labels) == pytest.approx(2 / 3)  # the NaN row is wrong
    assert M.accuracy_curve(probs, labels).tolist() == pytest.approx([2 / 3])
    assert math.isnan(M.disagreement(probs))
    assert math.isnan(M.brier_score(probs, labels))


def test_identical_networks_have_zero_epistemic_uncertainty() -> None:
    probs, _ = _random_probs(n=1)
    same = probs.expand(5, -1, -1)
    assert M.mutual_information(same).max().item() < 1e-12  # round-off only
    assert M.disagreement(same) == 0.0


def test_ood_detection_hand_cases() -> None:
    rng = np.random.default_rng(1)
    inside, outside = rng.uniform(0, 1, 200), rng.uniform(2, 3, 100)
    assert M.auroc(inside, outside) == 1.0
    assert M.aupr(inside, outside) == 1.0
    assert M.fpr_at_tpr(inside, outside) == 0.0
    assert M.auroc(outside, inside) == 0.0
    same = rng.uniform(0, 1, 50)
    assert M.auroc(same, same) == 0.5
    # OOD scores 1..20: TPR reaches 0.95 (19/20) at threshold 2; in-distribution scores
    # 2.5, 5 and 30 are >= 2, so FPR = 3/6 (at threshold 2.5 the TPR is only 18/20).
    ood = np.arange(1.0, 21.0)
    ind = np.array([0.0, 0.5, 1.5, 2.5, 5.0, 30.0])
    assert M.fpr_at_tpr(ind, ood, 0.95) == 0.5
    assert M.fpr_at_tpr(ind, ood, 0.90) == pytest.approx(2 / 6)  # threshold 3: 5 and 30
    assert M.fpr_at_tpr(ind, ood, 1.0) == pytest.approx(4 / 6)
    assert math.isnan(M.auroc(np.array([0.1, np.nan]), ood))


def test_ood_auroc_aupr_agree_with_torchmetrics() -> None:
    rng = np.random.default_rng(2)
    inside, outside = rng.normal(0, 1, 300), rng.normal(1, 1, 150)
    target = torch.cat([torch.zeros(300), torch.ones(150)]).long()
    preds = torch.from_numpy(np.concatenate([inside, outside]))
    assert M.auroc(inside, outside) == pytest.approx(binary_auroc(preds, target).item(), abs=1e-6)
    assert M.aupr(inside, outside) == pytest.approx(
        binary_average_precision(preds, target).item(), abs=1e-6
    )
    # Distribution-shifted inputs: OOD scores are higher than in-distribution ones.
    sharp = torch.softmax(
        5 * torch.randn(7, 500, 5, generator=torch.Generator().manual_seed(0)), -1
    )
    flat = torch.full((7, 400, 5), 0.2, dtype=torch.float64)
    result = M.ood_detection(sharp, flat)
    assert set(result) == {f"{m}/{s}" for m in ("auroc", "aupr", "fpr95") for s in M.OOD_SCORES}
    assert result["auroc/entropy"] == 1.0 and result["auroc/maxprob"] == 1.0


def test_accuracy_of_first_k_and_curve() -> None:
    # Point 0 (label 0): net 1 is wrong, nets 1-2 averaged are right, all three right.
    probs = torch.tensor([[[0.4, 0.6]], [[0.9, 0.1]], [[0.6, 0.4]]], dtype=torch.float64)
    labels = torch.tensor([0])
    assert M.accuracy_curve(probs, labels).tolist() == [0.0, 1.0, 1.0]
    assert M.accuracy_of_first_k(probs, labels, ks=(1, 2, 5)) == {1: 0.0, 2: 1.0}
    many, y = _random_probs(n=12, classes=4, seed=4)
    naive = [accuracy_score(y.numpy(), many[:k].mean(0).argmax(1).numpy()) for k in range(1, 13)]
    assert M.accuracy_curve(many, y) == pytest.approx(naive)
    assert M.accuracy_of_first_k(many, y) == {1: naive[0], 5: naive[4], 10: naive[9]}


def test_diversity_l2_rel_std_uses_all_parameters_and_sample_std() -> None:
    # Net 1 = (3, 4) -> norm 5; net 2 = (0, 6) -> norm 6; mean 5.5, sample std sqrt(0.5).
    weights = {"w": torch.tensor([[3.0], [0.0]]), "b": torch.tensor([[4.0], [6.0]])}
    assert M.diversity_l2_rel_std(weights) == pytest.approx(math.sqrt(0.5) / 5.5)
    rng = np.random.default_rng(5)
    w = {
        "a": torch.from_numpy(rng.normal(size=(9, 3, 4))),
        "c": torch.from_numpy(rng.normal(size=(9, 2))),
    }
    norms = np.sqrt((w["a"].numpy() ** 2).sum((1, 2)) + (w["c"].numpy() ** 2).sum(1))
    assert M.diversity_l2_rel_std(w) == pytest.approx(norms.std(ddof=1) / norms.mean())
    assert math.isnan(M.diversity_l2_rel_std({"a": w["a"][:1]}))


def test_pairwise_disagreement_hand_cases() -> None:
    # Argmaxes of 3 networks on 2 points: point 0 (0, 0, 1): pairs (1,2), (1,3), (2,3)
    # disagree on 2 of 3; point 1 (2, 2, 2): none. Mean over points: 1/3.
    votes = torch.tensor([[0, 2], [0, 2], [1, 2]])
    assert M.pairwise_disagreement(votes) == pytest.approx(1 / 3)
    probs = torch.nn.functional.one_hot(votes, 3).double() * 0.8 + 0.2 / 3
    assert M.pairwise_disagreement(probs) == pytest.approx(1 / 3)
    # The hand fixture of two networks: they disagree on point 1 only -> 1/3; the
    # disagreement vs p̄ of the same two networks is 1/6.
    probs2 = torch.tensor([NET1, NET2], dtype=torch.float64)
    assert M.pairwise_disagreement(probs2) == pytest.approx(1 / 3)
    assert M.disagreement(probs2) == pytest.approx(1 / 6)
    # Against a naive double loop over pairs.
    rng = np.random.default_rng(9)
    many = rng.integers(0, 4, size=(7, 40))
    naive = np.mean([np.mean(many[j] != many[k]) for j in range(7) for k in range(j + 1, 7)])
    assert M.pairwise_disagreement(torch.from_numpy(many)) == pytest.approx(naive)
    assert math.isnan(M.pairwise_disagreement(votes[:1]))
    assert M.pairwise_disagreement(torch.zeros(4, 5, dtype=torch.int64)) == 0.0
    nan = probs.clone()
    nan[0, 0, 0] = float("nan")
    assert math.isnan(M.pairwise_disagreement(nan))


def test_pairwise_disagreement_does_not_depend_on_n_but_disagreement_does() -> None:
    # Population: per point, a network's argmax is class c with probability q_ic. Two
    # independent networks disagree with probability 1 − Σ_c q_ic², whatever n.
    rng = np.random.default_rng(10)
    points, classes, draws = 30, 3, 400
    q = rng.dirichlet(np.full(classes, 0.7), size=points)
    truth = float(np.mean(1 - (q**2).sum(1)))
    cum = q.cumsum(1)

    def draw(n: int) -> torch.Tensor:
        u = rng.uniform(size=(n, points, 1))
        votes = (u > cum[None]).sum(-1).clip(max=classes - 1)
        return torch.nn.functional.one_hot(torch.from_numpy(votes), classes).double()

    pair5, pair100, dis5, dis100 = [], [], [], []
    for _ in range(draws):
        small, big = draw(5), draw(100)
        pair5.append(M.pairwise_disagreement(small))
        pair100.append(M.pairwise_disagreement(big))
        dis5.append(M.disagreement(small))
        dis100.append(M.disagreement(big))
    # Standard error of the mean of 400 draws at n = 5 is about 0.005.
    assert np.mean(pair5) == pytest.approx(truth, abs=0.015)
    assert np.mean(pair100) == pytest.approx(truth, abs=0.005)
    assert abs(np.mean(pair5) - np.mean(pair100)) < 0.015
    # Against p̄ of its own n networks, disagreement is clearly lower at n = 5.
    assert np.mean(dis100) - np.mean(dis5) > 0.03
    assert np.std(dis5) / np.sqrt(draws) < 0.005


def test_diversity_at_equal_n_uses_the_first_k_networks() -> None:
    probs, _ = _random_probs(n=120, size=50, classes=4, seed=11)
    weights = {"w": torch.from_numpy(np.random.default_rng(12).normal(size=(120, 6)))}
    out = M.diversity_at(probs, weights)
    assert set(out) == {
        f"{m}@{k}"
        for m in ("disagreement", "pairwise_disagreement", "diversity_l2_rel_std")
        for k in (5, 100)
    }
    assert out["pairwise_disagreement@5"] == M.pairwise_disagreement(probs[:5])
    assert out["disagreement@100"] == M.disagreement(probs[:100])
    assert out["diversity_l2_rel_std@5"] == M.diversity_l2_rel_std({"w": weights["w"][:5]})
    few = M.diversity_at(probs[:3], {"w": weights["w"][:3]})
    assert set(few) == {"disagreement@3", "pairwise_disagreement@3", "diversity_l2_rel_std@3"}
    assert set(M.diversity_at(None, weights)) == {
        "diversity_l2_rel_std@5",
        "diversity_l2_rel_std@100",
    }
    assert M.diversity_at(probs[:1], {"w": weights["w"][:1]}) == {}


# --- regression --------------------------------------------------------------------------
def test_gaussian_predictive_law_of_total_variance() -> None:
    rng = np.random.default_rng(6)
    mu = rng.normal(size=(5, 8))
    fixed = R.gaussian_predictive(
        torch.from_numpy(mu[..., None]), Task("regression", noise_std=2.0)
    )
    assert fixed.mean.numpy() == pytest.approx(mu.mean(0))
    assert fixed.aleatoric_var.numpy() == pytest.approx(np.full(8, 4.0))
    assert fixed.epistemic_var.numpy() == pytest.approx(mu.var(0, ddof=0))
    assert fixed.total_std.numpy() == pytest.approx(np.sqrt(4.0 + mu.var(0)))

    log_var = rng.normal(size=(5, 8))
    outputs = torch.from_numpy(np.stack([mu, log_var], -1))
    het = R.gaussian_predictive(outputs, Task("regression", heteroscedastic=True))
    assert het.aleatoric_var.numpy() == pytest.approx(np.exp(log_var).mean(0))

    y = rng.normal(size=8)
    assert R.rmse(het, torch.from_numpy(y)) == pytest.approx(root_mean_squared_error(y, mu.mean(0)))
    total = np.exp(log_var).mean(0) + mu.var(0)
    reference = -norm.logpdf(y, loc=mu.mean(0), scale=np.sqrt(total)).mean()
    assert R.gaussian_nll(het, torch.from_numpy(y)) == pytest.approx(reference)
    torch_ref = torch.nn.functional.gaussian_nll_loss(
        torch.from_numpy(mu.mean(0)), torch.from_numpy(y), torch.from_numpy(total), full=True
    )
    assert R.gaussian_nll(het, torch.from_numpy(y)) == pytest.approx(torch_ref.item())


def test_std_inside_outside_is_mean_epistemic_std() -> None:
    # Networks agree at x = 0 (std 0) and disagree at x = ±5 (stds 1 and 3).
    mu = torch.tensor([[0.0, 1.0, 3.0], [0.0, -1.0, -3.0]]).unsqueeze(-1)
    pred = R.gaussian_predictive(mu, Task("regression", noise_std=3.0))
    x = torch.tensor([[0.0], [-5.0], [5.0]])
    assert R.std_inside_outside(pred, x, (-4.0, 4.0)) == pytest.approx(
        {"std_in": 0.0, "std_out": 2.0}
    )
    assert R.std_inside_outside(pred, x, (-6.0, 6.0)) == pytest.approx({"std_in": 4 / 3})


def test_coverage_of_one_gaussian_hand_worked() -> None:
    # One network, mean 0, noise σ = 1: 68 % interval ±0.9945, 95 % interval ±1.9600.
    y = torch.tensor([0.0, 0.5, 1.5, 2.5, -1.2, -0.99])
    outputs = torch.zeros(1, 6, 1)
    task = Task("regression", noise_std=1.0)
    x = torch.tensor([[-3.0], [-1.0], [0.0], [1.0], [2.0], [3.0]])
    cov = R.coverage(outputs, task, x, y, train_range=(-1.0, 1.0))
    # Inside [-1, 1]: y = 0.5, 1.5, 2.5 (x = -1, 0, 1). Outside: 0.0, -1.2, -0.99.
    assert cov["coverage68"] == pytest.approx(3 / 6)  # 0, 0.5, -0.99
    assert cov["coverage95"] == pytest.approx(5 / 6)  # all but 2.5
    assert cov["coverage68_in"] == pytest.approx(1 / 3)
    assert cov["coverage68_out"] == pytest.approx(2 / 3)
    assert cov["coverage95_in"] == pytest.approx(2 / 3)
    assert cov["coverage95_out"] == pytest.approx(1.0)
    assert set(R.coverage(outputs, task, x, y)) == {"coverage68", "coverage95"}
    inside_only = R.coverage(outputs, task, x, y, train_range=(-5.0, 5.0))
    assert "coverage68_out" not in inside_only and inside_only["coverage68_in"] == 0.5


def test_coverage_uses_the_exact_mixture_against_scipy_quantiles() -> None:
    from scipy.optimize import brentq

    # Two networks at ±1 with σ = 0.3 (heteroscedastic output): a bimodal predictive.
    rng = np.random.default_rng(13)
    size = 200
    mu = np.stack([np.full(size, -1.0), np.full(size, 1.0)])
    log_var = np.full((2, size), 2 * np.log(0.3))
    outputs = torch.from_numpy(np.stack([mu, log_var], -1))
    task = Task("regression", heteroscedastic=True)
    y = rng.uniform(-2.5, 2.5, size=size)

    def cdf(t: float) -> float:
        return float(np.mean(norm.cdf((t - mu[:, 0]) / 0.3)))

    cov = R.coverage(outputs, task, torch.zeros(size, 1), torch.from_numpy(y))
    for level in (0.68, 0.95):
        lo = brentq(lambda t, q=(1 - level) / 2: cdf(t) - q, -10, 10)
        hi = brentq(lambda t, q=(1 + level) / 2: cdf(t) - q, -10, 10)
        want = np.mean((y >= lo) & (y <= hi))
        assert cov[f"coverage{round(100 * level)}"] == pytest.approx(want)
    # 68 %: the mixture's interval is ±1.14 (F(1.14) = 0.5 + 0.5 Φ(0.47) = 0.84), the
    # moment-matched Gaussian N(0, 1.09)'s ±1.04. y = 1.1 is inside the first only, 1.6
    # inside neither: the mixture covers 1 of 2 where the Gaussian would cover 0.
    point = R.coverage(outputs[:, :2], task, torch.zeros(2, 1), torch.tensor([1.1, 1.6]))
    assert point["coverage68"] == 0.5
    assert norm.cdf(1.1, scale=np.sqrt(1.09)) > 0.84
