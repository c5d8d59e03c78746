"""`python -m benchmarks.throughput` runs end to end at toy sizes and reports every key.

Timings are not asserted (they belong to the benchmark, not to a timed test); the keys, the
FLOP count and the agreement of the batched path with the per-network loop are.
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks import throughput
from uqbench.targets import small_cnn

TOY = [
    "--json",
    "--device",
    "cpu",
    "--nets",
    "3",
    "--images",
    "24",
    "--vmap-images",
    "8",
    "--train-nets",
    "2",
    "--train-batch",
    "4",
    "--reps",
    "1",
    "--gemm-size",
    "64",
    "--sample-n",
    "3",
    "--methods",
    "ensemble,mcdropout",
]


def test_small_cnn_flops_are_counted_by_hand() -> None:
    conv1 = 2 * 32 * 24 * 24 * 25
    conv2 = 2 * 32 * 8 * 8 * 32 * 25
    fc = 2 * 512 * 10
    assert throughput.forward_flops(small_cnn(), torch.zeros(1, 1, 28, 28)) == conv1 + conv2 + fc


def test_toy_run_reports_the_required_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert throughput.main(TOY) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in (
        "gemm_gflops",
        "eval_batched_gflops",
        "eval_loop_gflops",
        "eval_fraction_of_peak",
        "train_speedup_vs_loop",
        "hypergan_sample100_ms",
        "peak_mb",
    ):
        assert key in result, key
    for key in (
        "gemm_gflops",
        "eval_batched_gflops",
        "eval_loop_gflops",
        "train_speedup_vs_loop",
        "hypergan_step_ms",
        "hypergan_step_vmap_ms",
        "train_loop_ms",
    ):
        assert result[key] > 0, key
    assert (
        result["eval_max_abs_diff_vs_loop"] < 1e-4
    )  # the batched path computes the loop's outputs
    assert set(result["sample_ms"]) == {"ensemble", "mcdropout"}
    assert result["flops_per_image_per_net"] == 4_208_640
