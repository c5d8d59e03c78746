r"""Throughput of batched evaluation, training and sampling, against this machine's GEMM peak.

Run ``python -m benchmarks.throughput`` (a table) or ``... --json`` (the same numbers as
one JSON object on the last line). In one process it measures:

- ``gemm``: fp32 GFLOP/s of a square ``matmul`` (best of 5): the reference for the rest.
  On CUDA, TF32 is switched off for matmul and cuDNN, so every number here is true fp32.
- ``eval``: n sampled small-CNN networks (MNIST, :func:`uqbench.targets.small_cnn`) on N
  random 28x28 images, through the harness's path (``batched_predict`` with the default
  memory budget and a log-softmax transform, as :mod:`uqbench.evaluation.harness` calls
  it), through the same path with the fast path switched off (``vmap`` only), and as a
  per-network Python loop (``functional_call`` per network, 1,000 images per call: what
  the paper's code does). The baselines may run on fewer images (``--loop-images``,
  ``--vmap-images``); their GFLOP/s do not depend on the image count.
- ``train-size forward``: the same three forwards at the training regime's sizes
  (``--train-nets`` networks x ``--train-batch`` images), best of ``--reps``.
- ``train``: one real HyperGAN training step (``HyperGAN._step`` with the sampler's own
  optimisers: discriminator update, noise -> mixer -> generators -> the generated
  networks' forward -> backward -> Adam) at those sizes with the paper's MNIST widths,
  versus that many independent small CNNs taking one Adam step each, one after another.
  The step runs on the path the sampler takes by default (the fast path on CPU) and with
  the fast path switched off (vmap, what it runs on devices outside
  ``fast_forward.FAST_DEVICES``). Also the stacked networks trained directly (one Adam
  over ``[n, ...]`` weights), with vmap and with the fast path. Median of ``--reps`` steps
  after two warm-up steps. ``train_speedup_vs_loop`` is loop / the default step;
  ``train_speedup_vs_loop_vmap`` uses the vmap step.
- ``sample``: each registered method's ``sample(100)`` (median of 5) on the small CNN,
  built with its default (paper-sized) config and fitted for the fewest steps its config
  allows on 256 random images (see ``FIT_OVERRIDES``): sampling cost depends on the
  model's size, not on how well it was trained. A method that fails to import or fit is
  reported as not available, with the reason.

FLOPs are counted analytically: 2 x multiply-accumulates of every Conv2d
(``C_out H_out W_out C_in k_h k_w / groups``) and Linear (``in x out``); bias additions,
activations and pooling are not counted. The small CNN costs 4,208,640 FLOP per image per
network.

Times are wall-clock by default. ``--clock cpu`` measures the process's CPU time instead:
on a machine shared with other jobs, run with ``OMP_NUM_THREADS=1`` it is the time one core
actually spent, so GFLOP/s and the fraction of the (equally measured) GEMM peak stay
meaningful while wall time is inflated by other processes.

Peak memory (``peak_mb``) is measured per measurement. On CPU: the process's resident
high-water mark (``VmHWM`` of ``/proc/self/status``, reset by writing ``5`` to
``/proc/self/clear_refs`` just before), minus the resident size just before; so it is the
memory one run adds over what was resident before it (one extra, untimed run after the
timed ones, so state made on the first call, such as Adam's moments, is not counted).
During that run glibc returns freed blocks to the OS
(:func:`_freed_memory_returned_to_the_os`), else a run that reuses memory freed by an
earlier one would show none. On CUDA: ``torch.cuda.max_memory_allocated`` minus the
memory allocated just before.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from torch.utils.data import TensorDataset

from uqbench import fast_forward
from uqbench.environment import machine as machine_info
from uqbench.functional import batched_predict, fan_in, stacked_forward
from uqbench.measure import memory_mb, peak_memory_mb, reset_peak_memory, synchronize
from uqbench.sampler import Task
from uqbench.targets import leaf_outputs, small_cnn
from uqbench.training import task_loss

#: Config overrides that make ``fit`` as short as each method allows (sampling cost
#: depends on the model's size, which these leave at the paper's defaults).
FIT_OVERRIDES: dict[str, dict[str, Any]] = {
    "hypergan": {"steps": 0, "pretrain_steps": 0},
    "ensemble": {"epochs": 1},
    "mcdropout": {"epochs": 1},
    "mnf": {"epochs": 1},
    "apd": {
        "steps": 2,
        "burn_in": 0,
        "thin": 1,
        "final_gan_iters": 1,
    },
}
BUILT_IN_METHODS = tuple(FIT_OVERRIDES)


# --- measuring ------------------------------------------------------------------------
def _mallopt(mmap_threshold: int, trim_threshold: int, *, trim_now: bool = False) -> bool:
    """Set glibc's mmap and trim thresholds (bytes), and give free heap memory back to the
    OS now if ``trim_now``; False where that is not possible."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        ok = bool(libc.mallopt(m_mmap_threshold, mmap_threshold)) and bool(
            libc.mallopt(m_trim_threshold, trim_threshold)
        )
        if trim_now:
            libc.malloc_trim(0)
        return ok
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def _freed_memory_returned_to_the_os(device: torch.device) -> Iterator[None]:
    """Inside: glibc serves every allocation of 256 KiB or more with its own mmap, returned
    on free, so the resident size follows the live tensors and ``VmHWM`` is their peak.

    (By default glibc keeps freed blocks below a threshold that grows up to 32 MiB for
    reuse: a measurement would then add nothing to the resident size.) Each allocation
    then page-faults on first touch, which slows the code ~1.5-2x here, so only the
    untimed memory pass runs inside. After it, the thresholds are set to 32 / 64 MiB,
    the values glibc's default dynamic thresholds grow to.
    """
    if device.type != "cpu":
        yield
        return
    _mallopt(256 << 10, 1 << 20, trim_now=True)  # before the baseline is read
    try:
        yield
    finally:
        _mallopt(32 << 20, 64 << 20)


@dataclasses.dataclass
class Measured:
    """Wall times (seconds) of the repetitions and the peak memory they added (MB)."""

    seconds: list[float]
    peak_mb: float

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@contextlib.contextmanager
def _peak_memory(device: torch.device, into: dict[str, float]) -> Iterator[None]:
    """Put the peak memory (MB) the block adds over what was in use before into ``into["mb"]``."""
    synchronize(device)
    before = memory_mb(device)
    resettable = reset_peak_memory(device)
    yield
    synchronize(device)
    into["mb"] = peak_memory_mb(device) - before if resettable else math.nan


#: The clock of every measurement: wall time, or (``--clock cpu``) the process's CPU time.
_clock: Callable[[], float] = time.perf_counter


def measure(
    fn: Callable[[], object], device: torch.device, *, reps: int = 1, warmup: int = 0
) -> Measured:
    """Run ``fn`` ``warmup`` times, then ``reps`` timed times, then once more, untimed, for
    its peak memory."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    seconds = []
    for _ in range(reps):
        start = _clock()
        fn()
        synchronize(device)
        seconds.append(_clock() - start)
    peak: dict[str, float] = {}
    with _freed_memory_returned_to_the_os(device), _peak_memory(device, peak):
        fn()
    return Measured(seconds, peak["mb"])


def forward_flops(target: nn.Module, example: Tensor) -> int:
    """FLOPs of one forward pass of one network on one example: 2 x MACs of Conv2d/Linear."""
    total = 0
    for module, output in leaf_outputs(target, example):
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            total += 2 * output[0].numel() * per_output
        elif isinstance(module, nn.Linear):
            total += (
                2
                * module.in_features
                * module.out_features
                * (output[0].numel() // module.out_features)
            )
    return total


# --- the measurements -----------------------------------------------------------------
def gemm_gflops(device: torch.device, size: int) -> float:
    """Best-of-5 fp32 GFLOP/s of a ``size`` x ``size`` matmul."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device)
    b = torch.randn(size, size, generator=g).to(device)
    m = measure(lambda: a @ b, device, reps=5, warmup=2)
    return 2 * size**3 / m.best / 1e9


def random_weights(
    target: nn.Module, n: int, device: torch.device, seed: int = 0
) -> dict[str, Tensor]:
    """n weight sets at the usual initialisation scale: weights N(0, 1/fan_in), biases
    0.1 N(0, 1)."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    out = {}
    for name, p in target.named_parameters():
        std = 1 / math.sqrt(fan_in(p.shape)) if p.dim() > 1 else 0.1
        out[name] = (std * torch.randn(n, *p.shape, generator=g)).to(device)
    return out


def loop_forward(
    target: nn.Module, weights: dict[str, Tensor], x: Tensor, chunk: int = 1000
) -> Tensor:
    """The baseline: one network at a time, ``chunk`` images per call, log-softmax outputs."""
    n = next(iter(weights.values())).shape[0]
    outs = []
    with torch.no_grad():
        for k in range(n):
            own = {name: w[k] for name, w in weights.items()}
            parts = [
                torch.log_softmax(functional_call(target, own, (x[i : i + chunk],)), -1)
                for i in range(0, x.shape[0], chunk)
            ]
            outs.append(torch.cat(parts))
    return torch.stack(outs)


def _log_softmax(out: Tensor) -> Tensor:
    return torch.log_softmax(out, -1)


def bench_eval(args: argparse.Namespace, device: torch.device, results: dict[str, Any]) -> None:
    """The harness's batched path, vmap only, and the per-network loop on n nets x N images."""
    target = small_cnn().to(device)
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.rand(args.images, 1, 28, 28, generator=g).to(device)
    weights = random_weights(target, args.nets, device)
    flop = results["flops_per_image_per_net"]

    def batched(images: Tensor) -> Callable[[], Tensor]:
        return lambda: batched_predict(target, weights, images, transform=_log_softmax)

    rows = {}
    rows["eval_batched"] = (measure(batched(x), device, reps=args.eval_reps), args.images)
    x_vmap = x[: args.vmap_images]
    with fast_forward.fast_path(False):
        rows["eval_vmap"] = (measure(batched(x_vmap), device, reps=1), args.vmap_images)
    x_loop = x[: args.loop_images]
    rows["eval_loop"] = (
        measure(lambda: loop_forward(target, weights, x_loop), device, reps=1),
        args.loop_images,
    )
    for key, (m, images) in rows.items():
        results[f"{key}_s"] = m.best
        results[f"{key}_images"] = images
        results[f"{key}_gflops"] = flop * args.nets * images / m.best / 1e9
        results["peak_mb"][key] = m.peak_mb
    # Outputs agree (a check that the timed paths computed the same thing).
    with torch.no_grad():
        few = x[: min(64, args.images)]
        diff = (batched(few)() - loop_forward(target, weights, few)).abs().max().item()
    results["eval_max_abs_diff_vs_loop"] = diff


def vmap_only(target: nn.Module, weights: dict[str, Tensor], x: Tensor) -> Tensor:
    """``stacked_forward`` with the fast path switched off: plain ``vmap(functional_call)``."""
    with fast_forward.fast_path(False):
        return stacked_forward(target, weights, x)


def bench_train_size_forward(
    args: argparse.Namespace, device: torch.device, results: dict[str, Any]
) -> None:
    """Forward only, no grad, at the training regime's sizes: batched (fast), vmap, loop."""
    target = small_cnn().to(device)
    g = torch.Generator(device="cpu").manual_seed(2)
    x = torch.rand(args.train_batch, 1, 28, 28, generator=g).to(device)
    weights = random_weights(target, args.train_nets, device, seed=2)
    flop = forward_flops(target, x[:1]) * args.train_nets * args.train_batch

    def fast() -> Tensor:
        with torch.no_grad():
            return stacked_forward(target, weights, x)

    def vmapped() -> Tensor:
        with torch.no_grad():
            return vmap_only(target, weights, x)

    def loop() -> Tensor:
        n = args.train_nets
        with torch.no_grad():
            return torch.stack(
                [
                    functional_call(target, {k: v[i] for k, v in weights.items()}, (x,))
                    for i in range(n)
                ]
            )

    for key, fn in (("fwd_batched", fast), ("fwd_vmap", vmapped), ("fwd_loop", loop)):
        m = measure(fn, device, reps=args.reps, warmup=1)
        results[f"{key}_ms"] = 1e3 * m.best
        results[f"{key}_gflops"] = flop / m.best / 1e9
        results["peak_mb"][key] = m.peak_mb
    results["fwd_speedup_vs_loop"] = results["fwd_loop_ms"] / results["fwd_batched_ms"]


def _training_data(n: int, device: torch.device, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g).to(device), torch.randint(
        0, 10, (n,), generator=g
    ).to(device)


def bench_train(args: argparse.Namespace, device: torch.device, results: dict[str, Any]) -> None:
    """One HyperGAN step versus independent networks stepping one after another."""
    n, b = args.train_nets, args.train_batch
    x, y = _training_data(b, device, seed=3)

    # n independent small CNNs, one Adam step each, one after another.
    torch.manual_seed(0)
    nets = [small_cnn().to(device) for _ in range(n)]
    opts = [torch.optim.Adam(net.parameters(), lr=1e-3) for net in nets]

    def loop_step() -> None:
        for net, opt in zip(nets, opts, strict=True):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()

    _record(results, "train_loop", measure(loop_step, device, reps=args.reps, warmup=2))

    # The same n networks as stacked weights [n, ...] under one Adam (what ensembles do).
    target = small_cnn().to(device)
    leaves = {
        k: v.clone().requires_grad_() for k, v in random_weights(target, n, device, seed=4).items()
    }
    opt = torch.optim.Adam(leaves.values(), lr=1e-3)

    def stacked_step(forward: Callable[..., Tensor]) -> Callable[[], None]:
        def step() -> None:
            opt.zero_grad(set_to_none=True)
            # Sum over networks: each network's gradient is that of its own mean loss.
            task_loss(forward(target, leaves, x), y, Task()).sum().backward()
            opt.step()

        return step

    _record(
        results,
        "train_stacked_vmap",
        measure(stacked_step(vmap_only), device, reps=args.reps, warmup=2),
    )
    _record(
        results,
        "train_stacked_fast",
        measure(stacked_step(fast_forward.fast_stacked_forward), device, reps=args.reps, warmup=2),
    )

    # One HyperGAN step with the paper's MNIST widths.
    try:
        from uqbench.hypergan import HyperGAN

        config = dataclasses.replace(
            HyperGAN.make_config(), nets_per_step=n, batch_size=b, steps=0, pretrain_steps=0
        )
        sampler = HyperGAN(small_cnn(), config, device=device)
        sampler.fit(TensorDataset(*(t.cpu() for t in _training_data(256, device, seed=5))), seed=0)
    except Exception as exc:  # noqa: BLE001 - a method under construction must not stop the benchmark
        results["hypergan_step_ms"] = None
        results["train_speedup_vs_loop"] = None
        results["hypergan_step_error"] = _reason(exc)
        return
    # The real training step (HyperGAN._step with the sampler's own optimisers), on the
    # path the sampler takes by default and with the fast path switched off (vmap).
    for module in (sampler.generators, sampler.mixer):
        if module is not None:
            module.train()
    opt_g, opt_d = sampler._optimizers()
    noise_g = torch.Generator(device="cpu").manual_seed(6)

    def hypergan_step() -> None:
        sampler._step(x, y, opt_g, opt_d, noise_g)

    _record(results, "hypergan_step", measure(hypergan_step, device, reps=args.reps, warmup=2))
    with fast_forward.fast_path(False):
        _record(
            results,
            "hypergan_step_vmap",
            measure(hypergan_step, device, reps=args.reps, warmup=2),
        )
    results["train_speedup_vs_loop"] = results["train_loop_ms"] / results["hypergan_step_ms"]
    results["train_speedup_vs_loop_vmap"] = (
        results["train_loop_ms"] / results["hypergan_step_vmap_ms"]
    )


def _record(results: dict[str, Any], key: str, m: Measured) -> None:
    results[f"{key}_ms"] = 1e3 * m.median
    results["peak_mb"][key] = m.peak_mb


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text[:160]


def bench_sampling(args: argparse.Namespace, device: torch.device, results: dict[str, Any]) -> None:
    """Median time of ``sample(100)`` (or ``max_samples``) for each method."""
    from uqbench.registry import discover

    found = discover()
    x, y = _training_data(256, device, seed=7)
    train = TensorDataset(x.cpu(), y.cpu())
    results["sample_ms"], results["sample_n"], results["sample_errors"] = {}, {}, {}
    for name in args.methods:
        info = found.get(name)
        try:
            if info is None or info.cls is None:
                raise ImportError(info.error if info is not None else f"{name} is not registered")
            cls = info.cls
            config = cls.make_config()
            fields = {f.name for f in dataclasses.fields(config)}
            overrides = {k: v for k, v in FIT_OVERRIDES.get(name, {}).items() if k in fields}
            config = dataclasses.replace(config, **overrides)
            torch.manual_seed(0)
            sampler = cls(small_cnn(), config, device=device)
            sampler.fit(train, seed=0)
            count = min(args.sample_n, sampler.max_samples or args.sample_n)
            g = torch.Generator(device="cpu").manual_seed(0)
            m = measure(
                lambda s=sampler, c=count, g=g: s.sample(c, generator=g), device, reps=5, warmup=1
            )
        except Exception as exc:  # noqa: BLE001 - report the method as not available, go on
            results["sample_ms"][name] = None
            results["sample_errors"][name] = _reason(exc)
            continue
        results["sample_ms"][name] = 1e3 * m.median
        results["sample_n"][name] = count
        results["peak_mb"][f"sample_{name}"] = m.peak_mb
    results["hypergan_sample100_ms"] = results["sample_ms"].get("hypergan")


# --- reporting ------------------------------------------------------------------------
def machine(device: torch.device) -> dict[str, Any]:
    """Device, CPU model, cores, threads, load average and versions."""
    host = machine_info()
    info = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": host["cpu"],
        "cores": host["cores"],
        "threads": host["torch_threads"],
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    with contextlib.suppress(OSError):
        info["load_avg_start"] = [round(v, 2) for v in os.getloadavg()]
    return info


def _fmt(v: Any, unit: str = "", digits: int = 1) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.{digits}f}{unit}"
    return f"{v}{unit}"


def table(r: dict[str, Any]) -> str:
    """The human-readable report."""
    m = r["machine"]
    peak = r["peak_mb"]
    lines = [
        f"device {m['device']} ({m['gpu'] or m['cpu']}), {m['cores']} cores, "
        f"{m['threads']} torch threads, "
        f"torch {m['torch']}, load average {m.get('load_avg_start')} -> {m.get('load_avg_end')}",
        f"fp32 GEMM peak: {_fmt(r['gemm_gflops'])} GFLOP/s  (matmul {r['gemm_size']}^2); "
        f"times are {'process CPU' if r['clock'] == 'cpu' else 'wall-clock'} time",
        f"FLOPs per image per network: {r['flops_per_image_per_net']:,}",
        "",
        f"{'measurement':<44}{'time':>12}{'GFLOP/s':>10}{'% peak':>8}{'peak MB':>10}",
    ]

    def row(label: str, key: str, seconds: float | None, gflops: float | None = None) -> None:
        frac = f"{100 * gflops / r['gemm_gflops']:.1f}" if gflops else ""
        t = (
            f"{seconds:.3f} s"
            if seconds is not None and seconds >= 1
            else (f"{1e3 * seconds:.1f} ms" if seconds is not None else "n/a")
        )
        lines.append(
            f"{label:<44}{t:>12}{_fmt(gflops):>10}{frac:>8}{_fmt(peak.get(key), '', 0):>10}"
        )

    if "eval_batched_s" in r:
        n = r["nets"]
        row(
            f"eval batched, {n} nets x {r['eval_batched_images']} img",
            "eval_batched",
            r["eval_batched_s"],
            r["eval_batched_gflops"],
        )
        row(
            f"eval vmap only, {n} nets x {r['eval_vmap_images']} img",
            "eval_vmap",
            r["eval_vmap_s"],
            r["eval_vmap_gflops"],
        )
        row(
            f"eval loop, {n} nets x {r['eval_loop_images']} img",
            "eval_loop",
            r["eval_loop_s"],
            r["eval_loop_gflops"],
        )
    if "fwd_batched_ms" in r:
        size = f"{r['train_nets']} nets x {r['train_batch']} img"
        for key, label in (
            ("fwd_batched", "forward batched"),
            ("fwd_vmap", "forward vmap only"),
            ("fwd_loop", "forward loop"),
        ):
            row(f"{label}, {size}", key, r[f"{key}_ms"] / 1e3, r[f"{key}_gflops"])
    if "train_loop_ms" in r:
        size = f"{r['train_nets']} nets x {r['train_batch']} img"
        for key, label in (
            ("hypergan_step_vmap", "HyperGAN step (vmap)"),
            ("hypergan_step", "HyperGAN step (default path)"),
            ("train_stacked_vmap", "stacked nets, 1 Adam step (vmap)"),
            ("train_stacked_fast", "stacked nets, 1 Adam step (fast)"),
            ("train_loop", "independent nets, 1 step each"),
        ):
            v = r.get(f"{key}_ms")
            row(f"{label}, {size}", key, None if v is None else v / 1e3)
    for name, ms in r.get("sample_ms", {}).items():
        label = f"sample {r['sample_n'].get(name, '')} nets: {name}"
        if ms is None:
            lines.append(f"{label:<44}{'not available: ' + r['sample_errors'][name]}")
        else:
            row(label, f"sample_{name}", ms / 1e3)
    lines += ["", "goals:"]
    goals = [
        (
            "batched eval >= 25% of GEMM peak",
            r.get("eval_fraction_of_peak"),
            lambda v: v >= 0.25,
            "{:.1%}",
        ),
        (
            "batched forward >= 2x loop at training size",
            r.get("fwd_speedup_vs_loop"),
            lambda v: v >= 2,
            "{:.2f}x",
        ),
        (
            "HyperGAN step >= 2x independent-net loop",
            r.get("train_speedup_vs_loop"),
            lambda v: v >= 2,
            "{:.2f}x",
        ),
        (
            "  same, vmap",
            r.get("train_speedup_vs_loop_vmap"),
            lambda v: v >= 2,
            "{:.2f}x",
        ),
        (
            "HyperGAN draws 100 networks < 50 ms",
            r.get("hypergan_sample100_ms"),
            lambda v: v < 50,
            "{:.1f} ms",
        ),
    ]
    for label, value, ok, fmt in goals:
        verdict = "n/a" if value is None else ("met" if ok(value) else "MISSED")
        shown = "n/a" if value is None else fmt.format(value)
        lines.append(f"  {label:<46}{shown:>10}  {verdict}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--json", action="store_true", help="print the results as one JSON object on the last line"
    )
    p.add_argument("--device", default="auto", help="auto (cuda when available), cpu or cuda")
    p.add_argument("--nets", type=int, default=100, help="sampled networks in the evaluation (100)")
    p.add_argument(
        "--images", type=int, default=10_000, help="images in the batched evaluation (10,000)"
    )
    p.add_argument(
        "--loop-images",
        type=int,
        default=None,
        help="images for the per-network loop (default: --images)",
    )
    p.add_argument(
        "--vmap-images", type=int, default=1000, help="images for the vmap-only evaluation (1,000)"
    )
    p.add_argument(
        "--eval-reps",
        type=int,
        default=1,
        help="repetitions of the batched evaluation (best is kept)",
    )
    p.add_argument("--train-nets", type=int, default=32)
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument(
        "--reps", type=int, default=10, help="repetitions of the training-size measurements"
    )
    p.add_argument(
        "--gemm-size", type=int, default=None, help="matmul size (2048 on CPU, 8192 on CUDA)"
    )
    p.add_argument("--sample-n", type=int, default=100)
    p.add_argument(
        "--methods",
        default=",".join(BUILT_IN_METHODS),
        help="methods whose sampling is timed ('' for none)",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: wall-clock time; cpu: this process's CPU time (CPU only; for a shared "
        "machine, with OMP_NUM_THREADS=1 it is the time one core spent)",
    )
    p.add_argument(
        "--skip", default="", help="comma-separated parts to skip: eval,fwd,train,sample"
    )
    args = p.parse_args(argv)
    args.loop_images = min(args.loop_images or args.images, args.images)
    args.vmap_images = min(args.vmap_images, args.images)
    args.methods = [m for m in args.methods.split(",") if m]
    args.skip = {s for s in args.skip.split(",") if s}
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    global _clock
    _clock = (
        time.process_time if args.clock == "cpu" and device.type == "cpu" else time.perf_counter
    )
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    results: dict[str, Any] = {
        "machine": machine(device),
        "peak_mb": {},
        "nets": args.nets,
        "clock": "cpu" if _clock is time.process_time else "wall",
        "train_nets": args.train_nets,
        "train_batch": args.train_batch,
    }
    results["flops_per_image_per_net"] = forward_flops(small_cnn(), torch.zeros(1, 1, 28, 28))
    results["gemm_size"] = args.gemm_size or (8192 if device.type == "cuda" else 2048)
    results["gemm_gflops"] = gemm_gflops(device, results["gemm_size"])
    start = time.perf_counter()
    if "eval" not in args.skip:
        bench_eval(args, device, results)
        results["eval_fraction_of_peak"] = results["eval_batched_gflops"] / results["gemm_gflops"]
        results["eval_speedup_vs_loop"] = (
            results["eval_batched_gflops"] / results["eval_loop_gflops"]
        )
    if "fwd" not in args.skip:
        bench_train_size_forward(args, device, results)
    if "train" not in args.skip:
        bench_train(args, device, results)
    if "sample" not in args.skip:
        bench_sampling(args, device, results)
    # The report's keys are always present (None when that part was skipped).
    for key in (
        "eval_batched_gflops",
        "eval_loop_gflops",
        "eval_fraction_of_peak",
        "train_speedup_vs_loop",
        "hypergan_sample100_ms",
    ):
        results.setdefault(key, None)
    results["total_s"] = time.perf_counter() - start
    with contextlib.suppress(OSError):
        results["machine"]["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    print(table(results))
    if args.json:
        print(json.dumps(results, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
