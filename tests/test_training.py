"""Shared training pieces: the minibatch sampler, seed streams, progress throttle, keep-best,
validation scores and the regression scaling fold, each against hand-worked values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uqbench.errors import FitDiverged, UserError
from uqbench.functional import stacked_forward
from uqbench.sampler import Task
from uqbench.training import (
    KeepBest,
    MinibatchSampler,
    ProgressThrottle,
    RegressionScaling,
    check_finite,
    derive_seeds,
    linear_ends,
    predictive_scores,
    random_subset,
    seeded_generator,
)


def test_each_stream_sees_every_example_once_per_epoch() -> None:
    sampler = MinibatchSampler(10, 3, [seeded_generator(1), seeded_generator(2)])
    batches = list(sampler.epoch())
    assert len(batches) == sampler.steps_per_epoch == 3  # 10 // 3, the tail of 1 dropped
    seen = torch.cat(batches, dim=1)  # [2, 9]
    for stream in seen:
        assert len(set(stream.tolist())) == 9 and max(stream.tolist()) < 10
    assert not torch.equal(seen[0], seen[1])  # independent orders


def test_next_runs_on_across_epochs_and_batch_is_capped_at_n() -> None:
    sampler = MinibatchSampler(4, 100, [seeded_generator(0)])
    assert sampler.batch_size == 4
    first, second = sampler.next(), sampler.next()
    assert sorted(first[0].tolist()) == sorted(second[0].tolist()) == [0, 1, 2, 3]
    with pytest.raises(UserError, match="empty"):
        MinibatchSampler(0, 4, [seeded_generator(0)])


def test_seed_streams_are_independent_across_purposes_and_seeds() -> None:
    purposes = ("init", "data", "noise", "val")
    zero, one = derive_seeds(0, purposes), derive_seeds(1, purposes)
    # The old scheme (noise = seed + 1) made seed 0's noise stream seed 1's data stream.
    assert zero["noise"] != one["data"]
    assert len(set(zero.values()) | set(one.values())) == 8
    draws = {
        (seed, p): torch.rand(4, generator=seeded_generator(s))
        for seed, streams in ((0, zero), (1, one))
        for p, s in streams.items()
    }
    assert not torch.equal(draws[(0, "noise")], draws[(1, "data")])
    assert derive_seeds(0, purposes) == zero  # deterministic


def test_throttle_reports_about_100_times_and_always_at_the_end() -> None:
    calls: list[tuple[int, int, dict]] = []
    throttle = ProgressThrottle(lambda s, t, **m: calls.append((s, t, m)), total=1050)
    due = [step for step in range(1, 1051) if throttle.due(step)]
    assert due[0] == 10 and due[-1] == 1050 and len(due) == 105
    throttle.report(7, val_nll=0.5)
    assert calls == [(7, 1050, {"val_nll": 0.5})]
    silent = ProgressThrottle(None, total=10)
    assert not silent.due(10)
    silent.report(10, loss=1.0)  # no-op


def test_keep_best_picks_each_members_own_best_epoch() -> None:
    keep = KeepBest()
    state = {"w": torch.zeros(3, 2)}
    for epoch, scores in enumerate(([3.0, 1.0, 2.0], [2.0, 5.0, 2.0], [4.0, 0.5, 9.0]), start=1):
        state["w"].fill_(float(epoch))
        keep.update(state, torch.tensor(scores), epoch)
    keep.restore(state)
    # member 0: best at epoch 2; member 1: epoch 3; member 2: tie at epochs 1 and 2 -> later.
    assert state["w"][:, 0].tolist() == [2.0, 3.0, 2.0]
    assert keep.epochs is not None and keep.epochs.tolist() == [2.0, 3.0, 2.0]


def test_predictive_scores_by_hand() -> None:
    # Two networks, two points, two classes: p̄ = mean of the softmaxes.
    logits = torch.tensor([[[0.0, 0.0], [2.0, 0.0]], [[math.log(3.0), 0.0], [0.0, 0.0]]])
    y = torch.tensor([0, 1])
    p0 = (0.5 + 0.75) / 2  # point 0, class 0
    p1 = (1 / (1 + math.e**2) + 0.5) / 2  # point 1, class 1
    scores = predictive_scores(logits, y, Task(num_classes=2))
    assert scores["val_nll"] == pytest.approx(-(math.log(p0) + math.log(p1)) / 2, rel=1e-6)
    assert scores["val_acc"] == pytest.approx(0.5)  # point 1: p̄(class 1) < 0.5
    # Regression, fixed noise 1: means 0 and 2 -> predictive N(1, 1 + 1).
    means = torch.tensor([[[0.0]], [[2.0]]])
    reg = predictive_scores(means, torch.tensor([1.0]), Task("regression", noise_std=1.0))
    assert reg["val_nll"] == pytest.approx(0.5 * (math.log(2 * math.pi) + math.log(2.0)))


@pytest.mark.parametrize("heteroscedastic", [False, True])
def test_scaling_fold_is_exact(heteroscedastic: bool) -> None:
    torch.manual_seed(0)
    outputs = 2 if heteroscedastic else 1
    target = nn.Sequential(nn.Linear(2, 5), nn.ReLU(), nn.Linear(5, outputs))
    task = Task("regression", noise_std=2.0, heteroscedastic=heteroscedastic)
    x = torch.randn(30, 2) * torch.tensor([3.0, 0.5]) + torch.tensor([1.0, -2.0])
    y = 10 * torch.randn(30) + 4
    scaling = RegressionScaling.fit(x, y, inputs=True, targets=True)
    first, last = linear_ends(target, x[:2], method="m", inputs=True)
    assert (first, last) == ("0", "2")
    weights = {k: torch.randn(3, *v.shape) for k, v in target.named_parameters()}
    x_std, _ = scaling.data(x, y)
    on_std = stacked_forward(target, weights, x_std)
    folded = {k: v.clone() for k, v in weights.items()}
    scaling.fold(folded, first, last, task)
    on_raw = stacked_forward(target, folded, x)
    expected = scaling.y_shift + scaling.y_scale * on_std[..., 0]
    torch.testing.assert_close(on_raw[..., 0], expected, rtol=1e-5, atol=1e-4)
    if heteroscedastic:  # log-variance gains 2 log(scale)
        expected = on_std[..., 1] + 2 * math.log(scaling.y_scale)
        torch.testing.assert_close(on_raw[..., 1], expected, rtol=1e-5, atol=1e-4)
    assert scaling.task(task).noise_std == pytest.approx(2.0 / scaling.y_scale)


def test_linear_ends_refuses_what_cannot_be_folded() -> None:
    squashed = nn.Sequential(nn.Linear(1, 4), nn.Tanh(), nn.Linear(4, 1), nn.Tanh())
    with pytest.raises(UserError, match="standardize=false"):
        linear_ends(squashed, torch.zeros(2, 1), method="ensemble", inputs=False)


def test_check_finite_names_the_loss_and_step() -> None:
    check_finite("m", {"training": torch.tensor(1.0)}, 3)
    with pytest.raises(FitDiverged, match="m: the KL loss became nan at step 12"):
        check_finite("m", {"training": 1.0, "KL": torch.tensor(float("nan"))}, 12)


def test_random_subset_of_class_sorted_data_holds_every_class_in_dataset_order() -> None:
    y = torch.arange(10).repeat_interleave(200)  # sorted by class, as CIFAR's splits are
    x = y.float().unsqueeze(1) * 10 + torch.arange(2000).unsqueeze(1) % 7
    sx, sy = random_subset((x, y), 500, seed=0)
    assert sx.shape == (500, 1) and sy.shape == (500,)
    assert torch.equal(sy, (sx[:, 0] // 10).long())  # rows stay paired
    assert sorted(set(sy.tolist())) == list(range(10))  # the first 500 hold 3 classes
    assert torch.all(sy[1:] >= sy[:-1])  # kept in dataset order
    again = random_subset((x, y), 500, seed=0)
    assert torch.equal(again[0], sx) and not torch.equal(random_subset((x, y), 500, 1)[1], sy)
    whole = random_subset((x, y), 2000, seed=0)
    assert whole[0] is x and whole[1] is y
