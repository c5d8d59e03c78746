"""The vmapped harness against a deliberately naive loop over networks, on a tiny target."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score
from torch import nn
from torch.utils.data import TensorDataset
from torchmetrics.functional.classification import multiclass_calibration_error

from uqbench.data.benchmark import BenchmarkData
from uqbench.errors import UserError
from uqbench.evaluation import evaluate, load_arrays
from uqbench.sampler import Task, WeightSampler
from uqbench.targets import toy1d_mlp

CLASSES = 3


def tiny_classifier() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, CLASSES))


class NoisySampler(WeightSampler):
    """Test double: the target's initial weights plus N(0, scale²) noise per network."""

    name = "noisy"

    @dataclass
    class Config:
        scale: float = 0.7

    def fit(self, train, *, seed, val=None, progress=None) -> None:
        torch.manual_seed(seed)
        self.base = {k: p.detach().clone() for k, p in self.target.named_parameters()}

    def sample(self, n, *, generator=None):
        self.check_n(n)
        return {
            k: v
            + self.config.scale * torch.randn((n, *v.shape), generator=generator, dtype=v.dtype)
            for k, v in self.base.items()
        }

    def state_dict(self) -> dict:
        return {"base": self.base}

    def load_state_dict(self, state: dict) -> None:
        self.base = state["base"]


def classification_data() -> BenchmarkData:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = torch.randint(0, CLASSES, (60,), generator=g)
    return BenchmarkData(
        name="tiny",
        task=Task("classification", num_classes=CLASSES),
        make_target=tiny_classifier,
        train=TensorDataset(x[:20], y[:20]),
        test=TensorDataset(x[20:], y[20:]),
        ood={"far": 6 * torch.randn(30, 4, generator=g), "near": torch.randn(25, 4, generator=g)},
    )


def fitted(data: BenchmarkData, **kwargs) -> NoisySampler:
    torch.manual_seed(1)
    sampler = NoisySampler(data.make_target(), task=data.task, **kwargs)
    sampler.fit(data.train, seed=0)
    return sampler


def naive_probs(target: nn.Module, weights: dict, x: torch.Tensor) -> np.ndarray:
    """Per-network softmax ``[n, N, C]`` in float64, one network at a time (tests only)."""
    n = next(iter(weights.values())).shape[0]
    out = []
    for k in range(n):
        net = copy.deepcopy(target).double()
        net.load_state_dict({name: w[k].double() for name, w in weights.items()})
        with torch.no_grad():
            out.append(torch.softmax(net(x.double()), -1).numpy())
    return np.stack(out)


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(p)).sum(-1)


def test_matches_a_naive_loop_over_networks() -> None:
    data = classification_data()
    sampler = fitted(data)
    sampler.extra_metrics["teacher_acc"] = 0.5
    n, seed = 12, 3
    result = evaluate(sampler, data, n_samples=n, seed=seed)

    weights = sampler.sample(n, generator=torch.Generator().manual_seed(seed))
    x, y = data.test.tensors
    probs = naive_probs(sampler.target, weights, x)
    pbar = probs.mean(0)
    m = result.metrics
    assert result.arrays["test_probs"] == pytest.approx(pbar, abs=1e-6)
    assert m["acc"] == pytest.approx(np.mean(pbar.argmax(1) == y.numpy()))
    assert m["nll"] == pytest.approx(-np.log(pbar[np.arange(len(y)), y.numpy()]).mean(), rel=1e-5)
    onehot = np.eye(CLASSES)[y.numpy()]
    assert m["brier"] == pytest.approx(((pbar - onehot) ** 2).sum(1).mean(), rel=1e-5)
    ece = multiclass_calibration_error(torch.from_numpy(pbar), y, num_classes=CLASSES, n_bins=15)
    assert m["ece"] == pytest.approx(ece.item(), abs=1e-5)
    for k in (1, 5, 10):
        assert m[f"acc@{k}"] == pytest.approx(np.mean(probs[:k].mean(0).argmax(1) == y.numpy()))
    assert "acc@100" not in m
    # Diversity on the first 5 of the 12 networks (equal n for every method).
    votes5 = probs[:5].argmax(2)
    assert m["disagreement@5"] == pytest.approx(
        np.mean(votes5 != probs[:5].mean(0).argmax(1)[None])
    )
    pairs = [np.mean(votes5[j] != votes5[k]) for j in range(5) for k in range(j + 1, 5)]
    assert m["pairwise_disagreement@5"] == pytest.approx(np.mean(pairs))
    norms = np.sqrt(sum((w.double().flatten(1) ** 2).sum(1).numpy() for w in weights.values()))
    assert m["diversity_l2_rel_std@5"] == pytest.approx(norms[:5].std(ddof=1) / norms[:5].mean())
    for name, inputs in data.ood.items():
        ood_pbar = naive_probs(sampler.target, weights, inputs).mean(0)
        assert result.arrays[f"ood_probs/{name}"] == pytest.approx(ood_pbar, abs=1e-6)
        labels = np.r_[np.zeros(len(pbar)), np.ones(len(ood_pbar))]
        scores = np.r_[entropy(pbar), entropy(ood_pbar)]
        assert m[f"auroc/{name}/entropy"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert m["n_samples"] == n and m["teacher_acc"] == 0.5 and m["sample_eval_s"] > 0

    expected = {
        "acc",
        "acc@1",
        "acc@5",
        "acc@10",
        "nll",
        "brier",
        "ece",
        "disagreement@5",
        "pairwise_disagreement@5",
        "diversity_l2_rel_std@5",
        "n_samples",
        "sample_eval_s",
        "teacher_acc",
    }
    expected |= {
        f"{metric}/{ood}/{score}"
        for metric in ("auroc", "aupr", "fpr95")
        for ood in ("far", "near")
        for score in ("entropy", "mi", "maxprob")
    }
    assert set(m) == expected
    assert all(isinstance(v, float) for v in m.values())
    assert result.arrays["acc_curve"].shape == (n,)
    assert result.arrays["reliability/count"].sum() == len(y)
    assert result.arrays["test_probs"].dtype == np.float32


def test_memory_chunked_path_equals_unchunked() -> None:
    data = classification_data()
    sampler = fitted(data)
    whole = evaluate(sampler, data, n_samples=9, seed=0)
    chunked = evaluate(sampler, data, n_samples=9, seed=0, memory_budget=1)  # 1 net x 1 image
    for key, value in whole.arrays.items():
        np.testing.assert_allclose(chunked.arrays[key], value, rtol=1e-6, atol=1e-7, err_msg=key)
    for key, value in whole.metrics.items():
        if key != "sample_eval_s":
            assert chunked.metrics[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_seed_fixes_the_draw() -> None:
    data = classification_data()
    sampler = fitted(data)
    a = evaluate(sampler, data, n_samples=4, seed=7)
    b = evaluate(sampler, data, n_samples=4, seed=7)
    c = evaluate(sampler, data, n_samples=4, seed=8)
    np.testing.assert_array_equal(a.arrays["test_probs"], b.arrays["test_probs"])
    assert np.abs(a.arrays["test_probs"] - c.arrays["test_probs"]).max() > 1e-3


def test_n_is_capped_at_max_samples() -> None:
    data = classification_data()
    sampler = fitted(data)
    sampler.max_samples = 5
    m = evaluate(sampler, data, n_samples=100, seed=0).metrics
    assert m["n_samples"] == 5
    assert "acc@1" in m and "acc@5" in m and "acc@10" not in m and "acc@100" not in m


class WithReference(NoisySampler):
    """A sampler whose fit also yields a reference sampler (like APD's teacher)."""

    def reference_views(self) -> dict[str, WeightSampler]:
        return {"sharp": self.sharp}


def test_reference_views_are_scored_like_the_sampler_and_become_their_own_rows() -> None:
    from uqbench.app.outputs import long_table
    from uqbench.app.store import CellRecord

    data = classification_data()
    sampler = fitted(data)
    with_view = WithReference(sampler.target, task=data.task)
    with_view.fit(data.train, seed=0)
    with_view.extra_metrics = {"fit_note": 1.0}
    with_view.sharp = fitted(data)
    with_view.sharp.config.scale = 0.1
    with_view.sharp.max_samples = 3
    metrics = evaluate(with_view, data, n_samples=4, seed=0).metrics
    alone = evaluate(with_view.sharp, data, n_samples=3, seed=0).metrics
    assert metrics["sharp:n_samples"] == 3  # capped by the view's own max_samples
    for key in ("acc", "nll", "auroc/far/entropy", "acc@1"):
        assert metrics[f"sharp:{key}"] == alone[key]
    assert "sharp:fit_note" not in metrics  # the sampler's own extras are not repeated
    record = CellRecord("noisy", "tiny", 0, "h", metrics, {}, None, None, [])
    df = long_table([record])
    assert set(df["method"]) == {"noisy", "noisy:sharp"}
    assert df.query("method == 'noisy:sharp' and metric == 'acc'")["value"].item() == alone["acc"]


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_sample_count_is_a_user_error(bad) -> None:
    data = classification_data()
    with pytest.raises(UserError, match="sampled networks"):
        evaluate(fitted(data), data, n_samples=bad, seed=0)


def regression_data(heteroscedastic: bool) -> BenchmarkData:
    g = torch.Generator().manual_seed(0)
    train_x = torch.rand(20, 1, generator=g) * 8 - 4
    grid = torch.linspace(6, -6, 41).unsqueeze(1)  # descending: the arrays come back sorted
    task = Task("regression", noise_std=3.0, heteroscedastic=heteroscedastic)
    return BenchmarkData(
        name="toy",
        task=task,
        make_target=lambda: toy1d_mlp(hidden=8, outputs=2 if heteroscedastic else 1),
        train=TensorDataset(train_x, train_x[:, 0] ** 3),
        test=TensorDataset(grid, grid[:, 0] ** 3),
        train_range=(-4.0, 4.0),
    )


@pytest.mark.parametrize("heteroscedastic", [False, True])
def test_regression_matches_a_naive_loop(heteroscedastic: bool) -> None:
    data = regression_data(heteroscedastic)
    sampler = fitted(data)
    n = 6
    result = evaluate(sampler, data, n_samples=n, seed=2)
    weights = sampler.sample(n, generator=torch.Generator().manual_seed(2))
    x, y = data.test.tensors
    outs = []
    for k in range(n):
        net = copy.deepcopy(sampler.target).double()
        net.load_state_dict({name: w[k].double() for name, w in weights.items()})
        with torch.no_grad():
            outs.append(net(x.double()).numpy())
    outs = np.stack(outs)  # [n, N, 1 or 2]
    mu = outs[..., 0]
    noise = np.exp(np.clip(outs[..., 1], -10, 10)) if heteroscedastic else np.full_like(mu, 9.0)
    mean, epistemic = mu.mean(0), mu.var(0)
    total = noise.mean(0) + epistemic
    yy = y.numpy().astype(np.float64)
    m = result.metrics
    assert m["rmse"] == pytest.approx(np.sqrt(((mean - yy) ** 2).mean()), rel=1e-5)
    gnll = 0.5 * (np.log(2 * math.pi * total) + (yy - mean) ** 2 / total)
    assert m["gnll"] == pytest.approx(gnll.mean(), rel=1e-5)
    xs = x[:, 0].numpy()
    inside = (xs >= -4) & (xs <= 4)
    assert m["std_in"] == pytest.approx(np.sqrt(epistemic[inside]).mean(), rel=1e-4)
    assert m["std_out"] == pytest.approx(np.sqrt(epistemic[~inside]).mean(), rel=1e-4)
    # Coverage of the exact mixture's central intervals: F(y) in [(1-l)/2, (1+l)/2].
    cdf = norm.cdf((yy[None] - mu) / np.sqrt(noise)).mean(0)
    for level, name in ((0.68, "coverage68"), (0.95, "coverage95")):
        covered = (cdf >= (1 - level) / 2) & (cdf <= (1 + level) / 2)
        assert m[name] == pytest.approx(covered.mean())
        assert m[f"{name}_in"] == pytest.approx(covered[inside].mean())
        assert m[f"{name}_out"] == pytest.approx(covered[~inside].mean())
    assert not any(k.startswith(("acc", "auroc", "nll")) for k in m)

    a = result.arrays
    order = np.argsort(xs)
    assert np.all(np.diff(a["grid_x"]) > 0)
    np.testing.assert_allclose(a["grid_mean"], mean[order], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        a["grid_std_epistemic"], np.sqrt(epistemic[order]), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(a["grid_std_total"], np.sqrt(total[order]), rtol=1e-5)
    np.testing.assert_allclose(a["test_y"], yy[order], rtol=1e-6)
    assert a["train_x"].shape == a["train_y"].shape == (20,)
    assert a["train_range"].tolist() == [-4.0, 4.0]


def test_arrays_round_trip_through_npz(tmp_path) -> None:
    data = classification_data()
    result = evaluate(fitted(data), data, n_samples=3, seed=0)
    path = result.save_arrays(tmp_path / "cell.npz")
    back = load_arrays(path)
    assert (
        set(back)
        == set(result.arrays)
        == {
            "test_probs",
            "test_labels",
            "ood_probs/far",
            "ood_probs/near",
            "acc_curve",
            "reliability/edges",
            "reliability/confidence",
            "reliability/accuracy",
            "reliability/count",
        }
    )
    for key, value in result.arrays.items():
        np.testing.assert_array_equal(back[key], value)


def test_diversity_is_reported_at_equal_n_for_every_method() -> None:
    data = classification_data()
    sampler = fitted(data)
    many = evaluate(sampler, data, n_samples=100, seed=0).metrics
    sampler.max_samples = 5  # like a 5-member ensemble
    five = evaluate(sampler, data, n_samples=100, seed=0).metrics
    for name in ("disagreement", "pairwise_disagreement", "diversity_l2_rel_std"):
        assert f"{name}@100" in many and f"{name}@100" not in five
        assert f"{name}@5" in many and f"{name}@5" in five
    assert "disagreement" not in many and "diversity_l2_rel_std" not in many
