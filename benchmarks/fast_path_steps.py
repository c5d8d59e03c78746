"""What each step of :mod:`uqbench.fast_forward` buys, on the small CNN (no autograd).

``python -m benchmarks.fast_path_steps [--nets 100] [--images 28] [--reps 5] [--grad]``

Each variant below adds one idea to the one before and computes the same ``[n, B, 10]``
outputs (checked against vmap). Times are the median of ``--reps`` runs in *process CPU
time* (``time.process_time``), which on a shared machine is far steadier than wall time;
run it with ``OMP_NUM_THREADS=1`` so CPU time is the time of one core. A 1024^3 matmul
gives the GEMM reference in the same conditions. ``--grad`` adds forward + backward
(gradients of a loss w.r.t. all n weight sets) through vmap and through the fast path.

The variants are written out here for the small CNN only, as a record; the library's
general version is the last one (``library``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from uqbench import fast_forward
from uqbench.functional import stacked_forward
from uqbench.sampler import Task
from uqbench.targets import small_cnn
from uqbench.training import task_loss

FLOP_PER_IMAGE_NET = 4_208_640


def _strided_max(h: Tensor) -> Tensor:
    """2x2 max-pool (stride 2) as the maximum of four strided slices."""
    top = torch.maximum(h[..., 0::2, 0::2], h[..., 0::2, 1::2])
    return torch.maximum(top, torch.maximum(h[..., 1::2, 0::2], h[..., 1::2, 1::2]), out=top)


def variants(n: int, b: int, seed: int = 0) -> tuple[dict[str, Callable[[], Tensor]], dict[str, Tensor], Tensor]:
    """The variants, the weights and the inputs (small CNN, n networks, b images)."""
    g = torch.Generator().manual_seed(seed)
    target = small_cnn()
    w = {k: 0.2 * torch.randn(n, *v.shape, generator=g) for k, v in target.named_parameters()}
    x = torch.rand(b, 1, 28, 28, generator=g)
    w1, b1 = w["conv1.weight"], w["conv1.bias"]
    w2, b2 = w["conv2.weight"].flatten(0, 1), w["conv2.bias"]
    bias1, bias2 = b1.reshape(1, -1, 1, 1), b2.reshape(1, -1, 1, 1)

    def head(h: Tensor) -> Tensor:  # [B, n 32, 4, 4] -> [n, B, 10]
        flat = h.reshape(b, n, 512).transpose(0, 1)
        return torch.baddbmm(w["fc.bias"].unsqueeze(1), flat, w["fc.weight"].transpose(1, 2))

    def vmap() -> Tensor:
        with fast_forward.fast_path(False):
            return stacked_forward(target, w, x)

    def conv_and_grouped_conv() -> Tensor:
        # (a) one conv over all networks' concatenated filters; (b) grouped conv2; module order.
        h = F.max_pool2d(F.leaky_relu(F.conv2d(x, w1.flatten(0, 1), b1.flatten())), 2)
        return head(F.max_pool2d(F.leaky_relu(F.conv2d(h, w2, b2.flatten(), groups=n)), 2))

    def first_layer_gemm() -> Tensor:
        # (a) as unfold + one GEMM: [n 32, 25] @ [B, 25, 576].
        h = torch.matmul(w1.reshape(n * 32, 25), F.unfold(x, 5)).view(b, n * 32, 24, 24) + bias1
        h = F.max_pool2d(F.leaky_relu(h), 2)
        return head(F.max_pool2d(F.leaky_relu(F.conv2d(h, w2, b2.flatten(), groups=n)), 2))

    def pool_first() -> Tensor:
        # + max-pool (strided slices) before bias and activation.
        h = torch.matmul(w1.reshape(n * 32, 25), F.unfold(x, 5)).view(b, n * 32, 24, 24)
        h = F.leaky_relu(_strided_max(h) + bias1)
        return head(F.leaky_relu(_strided_max(F.conv2d(h, w2, groups=n)) + bias2))

    def phase_gemms(channels_last: bool = False) -> Tensor:
        # + one GEMM per pooling offset, maximum taken in place: no full-resolution output.
        cols = F.unfold(x, 5).view(b, 25, 12, 2, 12, 2)
        mat = w1.reshape(n * 32, 25)
        if channels_last:  # [B 144, 25] @ [25, n 32]: output [B, 12, 12, n 32]
            phases = cols.permute(3, 5, 0, 2, 4, 1).reshape(4, b * 144, 25)
            h = phases[0] @ mat.T
            for p in range(1, 4):
                torch.maximum(h, phases[p] @ mat.T, out=h)
            h = h.view(b, 12, 12, n * 32).permute(0, 3, 1, 2)
        else:
            phases = cols.permute(3, 5, 0, 1, 2, 4).reshape(4, b, 25, 144)
            h = torch.matmul(mat, phases[0])
            for p in range(1, 4):
                torch.maximum(h, torch.matmul(mat, phases[p]), out=h)
            h = h.view(b, n * 32, 12, 12)
        h = F.leaky_relu(h + bias1)
        return head(F.leaky_relu(_strided_max(F.conv2d(h, w2, groups=n)) + bias2).contiguous())

    def library() -> Tensor:
        # + cache blocking, in-place bias/activations, bias folded into the GEMM (K padded).
        return fast_forward.fast_stacked_forward(target, w, x)

    found = {
        "vmap": vmap,
        "conv_and_grouped_conv": conv_and_grouped_conv,
        "first_layer_gemm": first_layer_gemm,
        "pool_first": pool_first,
        "phase_gemms": phase_gemms,
        "phase_gemms_channels_last": lambda: phase_gemms(channels_last=True),
        "library": library,
    }
    return found, w, x


def cpu_median_ms(fns: dict[str, Callable[[], object]], reps: int) -> dict[str, float]:
    """Median process CPU time (ms) of each function, the functions interleaved."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(reps):
        for k, f in fns.items():
            start = time.process_time()
            f()
            times[k].append(time.process_time() - start)
    return {k: 1e3 * sorted(v)[len(v) // 2] for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.fast_path_steps", description=__doc__.splitlines()[0])
    p.add_argument("--nets", type=int, default=100)
    p.add_argument("--images", type=int, default=28, help="28 = one chunk of batched_predict's default budget at 100 nets")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--grad", action="store_true", help="also forward + backward, vmap vs fast path")
    args = p.parse_args(argv)
    n, b = args.nets, args.images
    fns, w, x = variants(n, b)
    with torch.no_grad():
        ref = fns["vmap"]()
        for name, f in fns.items():
            err = (f() - ref).abs().max().item()
            assert err <= 1e-4 * ref.abs().max().item(), f"{name} differs from vmap by {err}"
        a = torch.randn(1024, 1024)
        fns_timed: dict[str, Callable[[], object]] = {**fns, "gemm_1024": lambda: a @ a}
        ms = cpu_median_ms(fns_timed, args.reps)
    results = {}
    for name, t in ms.items():
        flop = 2 * 1024**3 if name == "gemm_1024" else FLOP_PER_IMAGE_NET * n * b
        results[name] = {"ms": round(t, 1), "gflops": round(flop / t / 1e6, 1)}
    if args.grad:
        target = small_cnn()
        y = torch.randint(0, 10, (b,), generator=torch.Generator().manual_seed(1))
        leaves = {k: v.clone().requires_grad_() for k, v in w.items()}

        def grads(forward: Callable[..., Tensor]) -> Callable[[], object]:
            def run() -> object:
                loss = task_loss(forward(target, leaves, x), y, Task()).sum()
                return torch.autograd.grad(loss, list(leaves.values()))

            return run

        ms = cpu_median_ms({"grad_vmap": grads(stacked_forward), "grad_fast": grads(fast_forward.fast_stacked_forward)}, args.reps)
        results.update({k: {"ms": round(v, 1)} for k, v in ms.items()})
    for name, r in results.items():
        print(f"{name:28s}{r['ms']:10.1f} ms" + (f"{r['gflops']:8.1f} GFLOP/s" if "gflops" in r else ""))
    print(json.dumps({"nets": n, "images": b, "threads": torch.get_num_threads(), **results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
