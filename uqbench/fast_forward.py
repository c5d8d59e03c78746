r"""A faster, exact batched forward for ``nn.Sequential`` targets, with ``vmap`` as the fallback.

:func:`uqbench.functional.stacked_forward` runs n networks with
``vmap(functional_call)``. For a Sequential of Conv2d / Linear / element-wise activations /
pooling / Flatten this module computes the same ``[n, B, ...]`` outputs with fewer, larger
kernels, by keeping all n networks in one tensor:

- **Shared first layer, one GEMM.** Every network sees the same input ``x``, so the first
  Conv2d is ``unfold(x)`` (im2col, ``[B, C k k, L]``) times all networks' filters
  concatenated (``[n C_out, C k k]``): one matrix product, output ``[B, n C_out, H, W]``
  (the channels of network k are the k-th block). A first Linear is one ``addmm``.
- **Later convolutions, one grouped convolution.** On ``[B, n C, H, W]`` a Conv2d is
  ``conv2d(h, W_1..W_n concatenated, groups = n g)``.
- **Later Linear layers, one ``baddbmm``** on ``[n, B, F]``.
- **Max-pool first, then bias and activation.** For a convolution followed by monotone
  non-decreasing element-wise activations and a max-pool,
  :math:`\max_{w}\sigma(c_w + b) = \sigma(\max_w c_w + b)` — floating-point rounding is
  monotone too, so both sides agree up to the order of the bias addition — and the bias
  and activations run on the pooled (k² times smaller) tensor.
- **Pool-phase GEMMs for the shared layer.** When that shared convolution is followed by a
  max-pool of kernel = stride = s, the pooled output is the element-wise maximum of s²
  GEMMs, one per offset (a, b) of the pooling window, each on the im2col columns of the
  output positions (s i + a, s j + b); the bias rides in the GEMM as a row of ones. The
  full-resolution output (``n`` times the first-layer activations, the largest tensor of
  a small CNN) is never written. Under autograd a custom backward
  (:class:`_MaxOfProducts`) keeps one byte per output to route the gradient.
- **Max-pool with kernel = stride** (no padding), without autograd, is the maximum of s²
  strided slices, not ``F.max_pool2d``, whose NCHW kernel measured ~10x slower on the
  project's 2-core CPU machine.
- **Cache blocking on CPU.** Without autograd, images go through in blocks whose widest
  activation (over all n networks) is about ``CPU_BLOCK_BYTES``, and activations run in
  place on tensors made here.

Everything else (buffers such as batch-norm statistics, dropout, ``padding_mode`` other than
zeros, pooling after Flatten, 3-D inputs ...) is not supported: :func:`supports` says so
and the caller falls back to ``vmap``. Gradients flow through this path too (tested
against ``vmap``); :func:`uqbench.functional.stacked_forward` takes it, with or without
autograd, on the device types in ``FAST_DEVICES`` (where it was measured: the CPU).
Measured effects of each step are in ``results/performance.md``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from uqbench.targets import leaf_outputs

#: Element-wise modules applied as they are, in any layout.
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.LeakyReLU,
    nn.ELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.GELU,
    nn.SiLU,
    nn.Softplus,
    nn.Hardtanh,
    nn.ReLU6,
    nn.Identity,
)
_MONOTONE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.Tanh,
    nn.Sigmoid,
    nn.Softplus,
    nn.Hardtanh,
    nn.ReLU6,
    nn.Identity,
)
_POOLS: tuple[type[nn.Module], ...] = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)


#: Device types on which :func:`preferred` picks this path (measured faster there).
FAST_DEVICES: frozenset[str] = frozenset({"cpu"})

#: Whether :func:`preferred` may pick the fast path (a context variable, not a global:
#: switching it in one thread or task leaves the others alone).
_ENABLED: ContextVar[bool] = ContextVar("uqbench_fast_path", default=True)


@contextmanager
def fast_path(enabled: bool) -> Iterator[None]:
    """Turn the fast path on or off inside the block (benchmarks and tests compare both)."""
    token = _ENABLED.set(enabled)
    try:
        yield
    finally:
        _ENABLED.reset(token)


@dataclass(frozen=True)
class _Step:
    """One planned operation: a parametric layer (with the activations and max-pool folded
    into it) or a parameter-free module."""

    module: nn.Module
    name: str  # qualified name of a parametric layer ("" otherwise)
    then: tuple[nn.Module, ...] = ()  # monotone activations moved after the pool
    pool: nn.MaxPool2d | None = None


def _leaves(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The leaf modules of nested Sequentials, with their qualified names, in order."""
    for name, child in module.named_children():
        qualified = f"{prefix}{name}"
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, qualified + ".")
        else:
            yield qualified, child


def _is_monotone(module: nn.Module) -> bool:
    """Non-decreasing element-wise map (so it commutes with a max-pool)."""
    if isinstance(module, nn.LeakyReLU):
        return module.negative_slope >= 0
    if isinstance(module, nn.ELU):
        return module.alpha >= 0
    return isinstance(module, _MONOTONE)


def _is_pool_like_stride(pool: nn.Module) -> bool:
    """MaxPool2d whose windows tile the input: kernel = stride, no padding, no dilation."""
    if not isinstance(pool, nn.MaxPool2d) or pool.ceil_mode or pool.return_indices:
        return False
    k, s = (
        _pair(pool.kernel_size),
        _pair(pool.stride if pool.stride is not None else pool.kernel_size),
    )
    return k == s and _pair(pool.padding) == (0, 0) and _pair(pool.dilation) == (1, 1)


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def plan(target: nn.Module, input_dim: int) -> list[_Step] | None:
    """The fast path's steps for ``target`` on inputs with ``input_dim`` dimensions, or None
    when some module or shape is not supported (the caller then uses ``vmap``)."""
    if not isinstance(target, nn.Sequential) or any(True for _ in target.buffers()):
        return None
    leaves = list(_leaves(target))
    state = {4: "image", 2: "flat"}.get(input_dim)
    steps: list[_Step] = []
    i = 0
    while i < len(leaves):
        name, m = leaves[i]
        if state is None or any(True for _ in m.children()):
            return None
        if isinstance(m, nn.Conv2d):
            if state != "image" or m.padding_mode != "zeros":
                return None
            # Fold "conv -> monotone activations -> tiling max-pool" into one step.
            j = i + 1
            while j < len(leaves) and _is_monotone(leaves[j][1]):
                j += 1
            if (
                j < len(leaves)
                and isinstance(leaves[j][1], nn.MaxPool2d)
                and not leaves[j][1].return_indices
            ):
                then = tuple(mod for _, mod in leaves[i + 1 : j])
                steps.append(_Step(m, name, then, leaves[j][1]))
                i = j + 1
                continue
            steps.append(_Step(m, name))
        elif isinstance(m, nn.Linear):
            if state != "flat":
                return None
            steps.append(_Step(m, name))
        elif isinstance(m, ELEMENTWISE):
            steps.append(_Step(m, ""))
        elif isinstance(m, _POOLS):
            if state != "image" or getattr(m, "return_indices", False):
                return None
            steps.append(_Step(m, ""))
        elif isinstance(m, nn.Flatten):
            if (m.start_dim, m.end_dim) != (1, -1):
                return None
            state = "flat"
            steps.append(_Step(m, ""))
        else:
            return None
        i += 1
    return steps


def supports(target: nn.Module, weights: dict[str, Tensor], x: Tensor) -> bool:
    """True when :func:`fast_stacked_forward` handles this target, these weights and inputs."""
    if plan(target, x.dim()) is None:
        return False
    names = [n for n, _ in target.named_parameters()]
    return set(weights) == set(names)


def preferred(target: nn.Module, weights: dict[str, Tensor], x: Tensor) -> bool:
    """Whether ``stacked_forward`` should use this path: enabled, supported, on a device in
    ``FAST_DEVICES``."""
    return _ENABLED.get() and x.device.type in FAST_DEVICES and supports(target, weights, x)


def fast_stacked_forward(target: nn.Module, weights: dict[str, Tensor], x: Tensor) -> Tensor:
    """Outputs ``[n, B, ...]`` of the n networks in ``weights`` on the same inputs ``x``.

    Same result as :func:`uqbench.functional.stacked_forward` (up to float rounding) for
    targets where :func:`supports` is true; raises ValueError otherwise. On CPU and without
    autograd the images go through in blocks whose widest activation fits in about
    ``CPU_BLOCK_BYTES`` (cache).
    """
    steps = plan(target, x.dim())
    if steps is None or not supports(target, weights, x):
        raise ValueError("fast_stacked_forward: target not supported; use stacked_forward")
    n = next(iter(weights.values())).shape[0]
    grad = torch.is_grad_enabled() and (
        x.requires_grad or any(w.requires_grad for w in weights.values())
    )
    block = x.shape[0]
    if x.device.type == "cpu" and x.shape[0] > 1 and not grad:
        per_image = 4 * n * _widest_activation(target, x)
        block = max(1, CPU_BLOCK_BYTES // per_image)
    if block >= x.shape[0]:
        return _forward(steps, weights, x, n, in_place=not grad)
    parts = [
        _forward(steps, weights, x[i : i + block], n, in_place=not grad)
        for i in range(0, x.shape[0], block)
    ]
    return torch.cat(parts, dim=1)


#: On CPU, images per block := this / (4 bytes x n x the widest layer's floats per image);
#: measured best at 24-48 MiB with this machine's 32 MiB L3 (results/performance.md).
CPU_BLOCK_BYTES = 32 << 20

_WIDEST: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, ...], int]] = (
    weakref.WeakKeyDictionary()
)


def _widest_activation(target: nn.Module, x: Tensor) -> int:
    """Floats of the largest leaf-module output of one network on one example (cached)."""
    cache = _WIDEST.setdefault(target, {})
    key = tuple(x.shape[1:])
    if key not in cache:
        outputs = leaf_outputs(target, x)
        widest = max([x[:1].numel(), *(out.numel() for _, out in outputs)])
        cache[key] = widest
    return cache[key]


#: In-place versions of element-wise modules (used without autograd).
_IN_PLACE: dict[type[nn.Module], Callable[[nn.Module, Tensor], Tensor]] = {
    nn.ReLU: lambda m, h: F.relu_(h),
    nn.LeakyReLU: lambda m, h: F.leaky_relu_(h, m.negative_slope),
    nn.ELU: lambda m, h: F.elu_(h, m.alpha),
    nn.Tanh: lambda m, h: h.tanh_(),
    nn.Sigmoid: lambda m, h: h.sigmoid_(),
    nn.Identity: lambda m, h: h,
}


def _forward(
    steps: list[_Step], weights: dict[str, Tensor], x: Tensor, n: int, *, in_place: bool
) -> Tensor:
    """Run the planned steps; ``in_place``: activations may overwrite tensors made here."""
    b = x.shape[0]
    h = x
    owned = False  # h is a tensor this function made (so in-place ops may overwrite it)
    layout = (
        "shared"  # "shared": [B, ...] for all nets; "merged": [B, n C, H, W]; "stacked": [n, B, F]
    )

    def activate(m: nn.Module, h: Tensor) -> Tensor:
        op = _IN_PLACE.get(type(m)) if in_place and owned else None
        return op(m, h) if op is not None else m(h)

    for step in steps:
        m = step.module
        if isinstance(m, nn.Conv2d):
            w = weights[f"{step.name}.weight"]
            bias = weights.get(f"{step.name}.bias")
            h = _conv(m, w, bias, h, shared=layout == "shared", pool=step.pool, in_place=in_place)
            layout, owned = "merged", True
            for act in step.then:  # activations after the pool (see the module docstring)
                h = activate(act, h)
        elif isinstance(m, nn.Linear):
            w = weights[f"{step.name}.weight"]  # [n, out, in]
            bias = weights.get(f"{step.name}.bias")  # [n, out]
            if layout == "shared":
                flat_w = w.reshape(-1, w.shape[-1])  # [n out, in]
                out = h @ flat_w.T if bias is None else torch.addmm(bias.reshape(-1), h, flat_w.T)
                h = out.view(b, n, -1).transpose(0, 1)
            else:
                wt = w.transpose(1, 2)
                h = torch.bmm(h, wt) if bias is None else torch.baddbmm(bias.unsqueeze(1), h, wt)
            layout, owned = "stacked", True
        elif isinstance(m, nn.Flatten):
            if layout == "merged":
                h = h.reshape(b, n, -1).transpose(0, 1)
                layout = "stacked"
            else:
                h = m(h)
        elif isinstance(m, _POOLS):
            h = _max_pool(h, m) if isinstance(m, nn.MaxPool2d) else m(h)
            owned = True
        else:  # element-wise: any layout
            h = activate(m, h)
            owned = owned or not isinstance(m, nn.Identity)
    if layout == "shared":
        return h.unsqueeze(0).expand(n, *h.shape)
    if layout == "merged":
        return h.reshape(b, n, -1, *h.shape[2:]).transpose(0, 1)
    return h


def _conv(
    m: nn.Conv2d,
    w: Tensor,
    bias: Tensor | None,
    h: Tensor,
    *,
    shared: bool,
    pool: nn.MaxPool2d | None,
    in_place: bool,
) -> Tensor:
    """Conv2d of all n networks plus bias -> ``[B, n C_out, H, W]``; with ``pool``, max-pooled
    before the bias is added (see the module docstring)."""
    n = w.shape[0]
    flat_w = w.reshape(-1, *w.shape[2:])  # [n C_out, C_in / g, k, k]
    flat_b = bias.reshape(-1) if bias is not None else None
    conv_b = flat_b if pool is None else None
    numeric_padding = not isinstance(m.padding, str)
    if shared and m.groups == 1 and numeric_padding:
        if pool is not None and _is_pool_like_stride(pool):
            return _shared_conv_pooled(m, flat_w, flat_b, h, _pair(pool.kernel_size))
        out = _shared_conv(m, flat_w, h, conv_b)
    elif shared and m.groups == 1:
        out = F.conv2d(h, flat_w, conv_b, m.stride, m.padding, m.dilation)
    else:
        if shared:  # a grouped first layer: give each network its own copy of the input
            h = h.repeat(1, n, 1, 1)
        out = F.conv2d(h, flat_w, conv_b, m.stride, m.padding, m.dilation, groups=n * m.groups)
    if pool is None:
        return out
    out = _max_pool(out, pool)
    if flat_b is None:
        return out
    b4 = flat_b.view(1, -1, 1, 1)
    return out.add_(b4) if in_place else out + b4


def _shared_conv(m: nn.Conv2d, flat_w: Tensor, x: Tensor, flat_b: Tensor | None) -> Tensor:
    """One GEMM: im2col of the shared input times every network's filters."""
    b, _, height, width = x.shape
    cols = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # [B, K, L]
    out = torch.matmul(flat_w.reshape(flat_w.shape[0], -1), cols)  # [B, n C_out, L]
    if flat_b is not None:
        out = out + flat_b.unsqueeze(-1)
    ho, wo = _conv_out(m, height, width)
    return out.view(b, -1, ho, wo)


def _shared_conv_pooled(
    m: nn.Conv2d, flat_w: Tensor, flat_b: Tensor | None, x: Tensor, window: tuple[int, int]
) -> Tensor:
    """max-pool(conv(x)) + bias for a tiling pool: the maximum of one GEMM per window offset.

    The bias rides in the GEMM as an extra input row of ones, and the inner dimension is
    zero-padded to a multiple of ``GEMM_K_MULTIPLE`` (MKL ran these GEMMs 1.3x faster with
    K = 32 than with K = 25 in isolation; over the whole forward, within noise).
    """
    b, _, height, width = x.shape
    ho, wo = _conv_out(m, height, width)
    sh, sw = window
    hp, wp = ho // sh, wo // sw
    cols = F.unfold(x, m.kernel_size, m.dilation, m.padding, m.stride)  # [B, K, ho wo]
    k = cols.shape[1]
    cols = cols.view(b, k, ho, wo)[:, :, : hp * sh, : wp * sw].reshape(b, k, hp, sh, wp, sw)
    mat = flat_w.reshape(flat_w.shape[0], -1)
    in_place = not (torch.is_grad_enabled() and (mat.requires_grad or x.requires_grad))
    extra = int(flat_b is not None)
    k_pad = -(-(k + extra) // GEMM_K_MULTIPLE) * GEMM_K_MULTIPLE
    # [sh sw, B, K', hp wp]: the columns of the output positions (sh i + a, sw j + c),
    # then a row of ones (for the bias) and zero rows up to K'.
    phases = x.new_zeros(sh * sw, b, k_pad, hp * wp)
    phases[:, :, :k] = cols.permute(3, 5, 0, 1, 2, 4).reshape(sh * sw, b, k, hp * wp)
    parts = [mat] + ([flat_b.unsqueeze(1)] if flat_b is not None else [])
    if extra:
        phases[:, :, k] = 1
    pad = k_pad - k - extra
    if pad:
        parts.append(mat.new_zeros(mat.shape[0], pad))
    mat = torch.cat(parts, dim=1) if len(parts) > 1 else mat
    if not in_place:
        # With autograd: [B hp wp, K'] @ [K', n C] per offset (channels-last result), and a
        # backward that needs only the winning offset per output (_MaxOfProducts).
        rows = phases.transpose(2, 3).reshape(sh * sw, b * hp * wp, k_pad)
        out = _MaxOfProducts.apply(rows, mat)
        return out.view(b, hp, wp, -1).permute(0, 3, 1, 2)
    out = torch.matmul(mat, phases[0])
    for p in range(1, sh * sw):
        out = torch.maximum(out, torch.matmul(mat, phases[p]), out=out)
    return out.view(b, -1, hp, wp)


class _MaxOfProducts(torch.autograd.Function):
    """``max_p rows[p] @ mat.T`` (rows ``[P, M, K]``, mat ``[N, K]`` -> ``[M, N]``).

    Saves, per p > 0, where p beat the running maximum (one byte per output; ties keep the
    earlier p, as ``torch.max`` does); the backward is one masked GEMM per p. Autograd
    through a chain of ``torch.maximum``, or through ``max(dim)`` over the stacked
    products, cost 2-4x more here, and ``torch.where`` / ``masked_fill`` on random masks
    ran at ~10 ns per element on the 2-core CPU machine, so the masks are applied as float products.
    """

    @staticmethod
    def forward(ctx, rows: Tensor, mat: Tensor) -> Tensor:  # noqa: ANN001 - autograd API
        # A contiguous [K, N] operand: ``rows[p] @ mat.T`` (a transposed view, K = 32) ran
        # ~9x slower than the same product on a contiguous copy on the 2-core CPU machine.
        mat_t = mat.T.contiguous()
        out = rows[0] @ mat_t
        beats = []
        for p in range(1, rows.shape[0]):
            candidate = rows[p] @ mat_t
            beats.append(candidate > out)
            out = torch.maximum(out, candidate, out=out)
        ctx.save_for_backward(rows, mat, *beats)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # noqa: ANN001
        rows, mat, *beats = ctx.saved_tensors
        grad = grad.contiguous()  # it arrives transposed (channels-last view)
        grad_rows = torch.empty_like(rows) if ctx.needs_input_grad[0] else None
        grad_mat = torch.zeros_like(mat) if ctx.needs_input_grad[1] else None
        later: Tensor | None = None  # some later p beat the running maximum
        for p in reversed(range(rows.shape[0])):
            if p > 0:
                won = beats[p - 1] if later is None else beats[p - 1] & ~later
                later = beats[p - 1] if later is None else later | beats[p - 1]
            else:
                won = ~later if later is not None else torch.ones_like(grad, dtype=torch.bool)
            g = grad * won.view(torch.uint8).to(grad.dtype)
            if grad_mat is not None:
                grad_mat.addmm_(g.T, rows[p])
            if grad_rows is not None:
                torch.mm(g, mat, out=grad_rows[p])
        return grad_rows, grad_mat


#: The shared layer's GEMM inner dimension is zero-padded to a multiple of this.
GEMM_K_MULTIPLE = 16


def _conv_out(m: nn.Conv2d, height: int, width: int) -> tuple[int, int]:
    (kh, kw), (sh, sw) = _pair(m.kernel_size), _pair(m.stride)
    (ph, pw), (dh, dw) = _pair(m.padding), _pair(m.dilation)
    return (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (
        width + 2 * pw - dw * (kw - 1) - 1
    ) // sw + 1


def _max_pool(h: Tensor, pool: nn.MaxPool2d) -> Tensor:
    """MaxPool2d; without autograd a tiling pool is the maximum of its strided slices (exact,
    and ~10x faster than the NCHW kernel here). With autograd: ``pool`` itself, whose
    backward is a scatter by saved indices."""
    if not _is_pool_like_stride(pool) or (torch.is_grad_enabled() and h.requires_grad):
        return pool(h)
    sh, sw = _pair(pool.kernel_size)
    hp, wp = h.shape[-2] // sh, h.shape[-1] // sw
    parts = [h[..., a : hp * sh : sh, c : wp * sw : sw] for a in range(sh) for c in range(sw)]
    if len(parts) == 1:
        return parts[0].clone()
    out = torch.maximum(parts[0], parts[1])
    for part in parts[2:]:
        out = torch.maximum(out, part, out=out)
    return out
