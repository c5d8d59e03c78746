"""The fast batched forward equals vmap(functional_call) (outputs and gradients), and
everything it does not support falls back to vmap."""

from __future__ import annotations

import contextlib
import copy
from collections import OrderedDict
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

from uqbench import fast_forward
from uqbench.fast_forward import fast_path, fast_stacked_forward, supports
from uqbench.functional import batched_predict, stacked_forward
from uqbench.targets import mednet, small_cnn, toy1d_mlp

N_NETS = 3


def mixed_sequential() -> nn.Sequential:
    """Strided / padded / dilated / grouped / bias-free convolutions, overlapping and
    average pools, a nested Sequential and Linear layers on 3x13x13 inputs."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 6, 3, stride=1, padding=1, bias=False),
            act1=nn.LeakyReLU(0.2),
            act1b=nn.Tanh(),
            pool1=nn.MaxPool2d(3, stride=2, padding=1),  # overlapping: not the strided-slice pool
            block=nn.Sequential(
                nn.Conv2d(6, 4, 2, dilation=2, groups=2), nn.ELU(), nn.AvgPool2d(2)
            ),
            flatten=nn.Flatten(),
            fc1=nn.Linear(16, 7),
            act2=nn.GELU(),
            fc2=nn.Linear(7, 2, bias=False),
        )
    )


def odd_cnn() -> nn.Sequential:
    """Shared conv + tiling pool on an odd map (the last row and column are dropped),
    a second conv + pool, and a 4-D output (no Flatten)."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 4, stride=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 3, 1),
        nn.Sigmoid(),
        nn.MaxPool2d(2),
    )


def random_linear_conv() -> nn.Sequential:
    """A seeded random stack of Conv2d / activations / pools, then Linear layers."""
    g = torch.Generator().manual_seed(7)
    pick = lambda n: int(torch.randint(0, n, (1,), generator=g))  # noqa: E731
    acts = [nn.ReLU, nn.Tanh, nn.SiLU, nn.Softplus]
    layers: list[nn.Module] = []
    channels, side = 2, 16
    for _ in range(2):
        out = 2 + pick(4)
        layers += [nn.Conv2d(channels, out, 3, padding=1), acts[pick(4)](), nn.MaxPool2d(2)]
        channels, side = out, side // 2
    layers += [nn.Flatten(), nn.Linear(channels * side * side, 5), acts[pick(4)](), nn.Linear(5, 3)]
    return nn.Sequential(*layers)


CASES: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "small_cnn": (small_cnn, (5, 1, 28, 28)),
    "mednet": (mednet, (4, 3, 32, 32)),
    "toy1d": (lambda: toy1d_mlp(outputs=2), (9, 1)),
    "mixed": (mixed_sequential, (4, 3, 13, 13)),
    "odd_cnn": (odd_cnn, (3, 2, 23, 23)),
    "random": (random_linear_conv, (4, 2, 16, 16)),
}


def stacked_weights(target: nn.Module, n: int = N_NETS, seed: int = 0) -> dict[str, Tensor]:
    """n weight sets around the target's own initialisation (so activations stay O(1))."""
    g = torch.Generator().manual_seed(seed)
    return {
        name: p.detach() * (1 + 0.5 * torch.randn(n, *p.shape, generator=g))
        + 0.05 * torch.randn(n, *p.shape, generator=g)
        for name, p in target.named_parameters()
    }


def case(name: str) -> tuple[nn.Module, dict[str, Tensor], Tensor]:
    make, shape = CASES[name]
    torch.manual_seed(0)
    target = make()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    return target, stacked_weights(target), x


def vmap_forward(target: nn.Module, weights: dict[str, Tensor], x: Tensor) -> Tensor:
    with fast_path(False):
        return stacked_forward(target, weights, x)


@pytest.mark.parametrize("name", list(CASES))
def test_outputs_equal_vmap(name: str) -> None:
    target, weights, x = case(name)
    assert supports(target, weights, x)
    with torch.no_grad():
        expected = vmap_forward(target, weights, x)
        fast = fast_stacked_forward(target, weights, x)
        wired = stacked_forward(target, weights, x)  # no grad: takes the fast path
    assert fast.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0.1  # the comparison is not between two tensors of zeros
    torch.testing.assert_close(fast, expected, rtol=1e-5, atol=1e-5 * scale)
    torch.testing.assert_close(wired, fast, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_gradients_equal_vmap(name: str) -> None:
    target, weights, x = case(name)
    grads = []
    for forward in (vmap_forward, fast_stacked_forward):
        leaves = {k: v.clone().requires_grad_() for k, v in weights.items()}
        out = forward(target, leaves, x)
        # A loss that weighs every output differently, so a permuted output would show.
        probe = torch.linspace(-1, 1, out.numel()).view_as(out)
        (out * probe).sum().backward()
        grads.append({k: v.grad for k, v in leaves.items()})
    for key in weights:
        scale = grads[0][key].abs().max().item()
        torch.testing.assert_close(
            grads[1][key], grads[0][key], rtol=1e-4, atol=1e-5 * max(scale, 1e-3)
        )


def test_stacked_forward_takes_the_fast_path_under_autograd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HyperGAN trains through stacked_forward: its gradients come from the fast path."""
    target, weights, x = case("small_cnn")
    calls = []
    real = fast_forward.fast_stacked_forward
    monkeypatch.setattr(
        fast_forward, "fast_stacked_forward", lambda *a: calls.append(1) or real(*a)
    )
    leaves = {k: v.clone().requires_grad_() for k, v in weights.items()}
    stacked_forward(target, leaves, x).sum().backward()
    assert calls and all(v.grad is not None for v in leaves.values())


def test_small_cnn_matches_a_plain_loop_in_float64() -> None:
    """Against the definition: each network on its own, as an nn.Module, in double precision."""
    target, weights, x = case("small_cnn")
    with torch.no_grad():
        fast = fast_stacked_forward(target, weights, x).double()
        for k in range(N_NETS):
            net = copy.deepcopy(target).double()
            net.load_state_dict({name: w[k].double() for name, w in weights.items()})
            torch.testing.assert_close(fast[k], net(x.double()), rtol=1e-5, atol=1e-5)


def test_batched_predict_chunks_take_the_fast_path() -> None:
    target, weights, x = case("mednet")
    with torch.no_grad():
        expected = vmap_forward(target, weights, x).softmax(-1)
    budget = 4 * 64 * 1024  # forces several image chunks
    got = batched_predict(
        target, weights, x, memory_budget=budget, transform=lambda o: o.softmax(-1)
    )
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_cpu_image_blocks_give_the_same_outputs(monkeypatch: pytest.MonkeyPatch) -> None:
    target, weights, x = case("small_cnn")
    with torch.no_grad():
        whole = fast_stacked_forward(target, weights, x)
        monkeypatch.setattr(fast_forward, "CPU_BLOCK_BYTES", 1)  # one image per block
        blocked = fast_stacked_forward(target, weights, x)
    torch.testing.assert_close(blocked, whole, rtol=1e-6, atol=1e-6)


def test_inputs_are_never_overwritten() -> None:
    """Activations run in place on tensors the fast path made, never on the caller's input."""
    target = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Tanh(), nn.Linear(16, 3), nn.Sigmoid())
    x = torch.randn(5, 1, 4, 4)
    before = x.clone()
    weights = stacked_weights(target)
    with torch.no_grad():
        out = fast_stacked_forward(target, weights, x)
        torch.testing.assert_close(out, vmap_forward(target, weights, x))
    assert torch.equal(x, before)


def _unsupported() -> dict[str, tuple[nn.Module, Tensor]]:
    image = torch.randn(2, 1, 8, 8)
    return {
        "batch-norm (buffers)": (
            nn.Sequential(
                nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(72, 2)
            ).eval(),
            image,
        ),
        "dropout": (nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(64, 2)).eval(), image),
        "flatten(2)": (nn.Sequential(nn.Flatten(2), nn.Linear(64, 2)), image),
        "reflect padding": (
            nn.Sequential(
                nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"),
                nn.Flatten(),
                nn.Linear(128, 2),
            ),
            image,
        ),
        "not Sequential": (nn.ModuleDict({"fc": nn.Linear(4, 2)}), torch.randn(2, 4)),
        "unbatched input": (
            nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(0), nn.Linear(72, 2)),
            image[0],
        ),
        "linear on images": (nn.Sequential(nn.Linear(8, 2)), image),
    }


@pytest.mark.parametrize("name", list(_unsupported()))
def test_unsupported_targets_fall_back_to_vmap(name: str) -> None:
    target, x = _unsupported()[name]
    weights = stacked_weights(target, n=2)
    assert not supports(target, weights, x)
    with pytest.raises(ValueError, match="not supported"):
        fast_stacked_forward(target, weights, x)
    if isinstance(target, nn.Sequential):
        with torch.no_grad():
            out = stacked_forward(target, weights, x)  # falls back: still correct
        with fast_path(False), torch.no_grad():
            torch.testing.assert_close(out, stacked_forward(target, weights, x))


def test_stacked_forward_prefers_the_fast_path_only_where_measured() -> None:
    target, weights, x = case("small_cnn")
    assert fast_forward.preferred(target, weights, x)
    with fast_path(False):
        assert not fast_forward.preferred(target, weights, x)
    meta = {k: v.to("meta") for k, v in weights.items()}
    assert supports(target, meta, x.to("meta")) and not fast_forward.preferred(
        target, meta, x.to("meta")
    )


def test_weights_that_do_not_match_the_target_fall_back() -> None:
    target, weights, x = case("small_cnn")
    partial = {k: v for k, v in weights.items() if k != "fc.bias"}
    assert not supports(target, partial, x)


@contextlib.contextmanager
def _strict_fp32() -> Iterator[None]:
    """TF32 off for matmul and cuDNN (both paths then compute in true fp32), restored after."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.mark.device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["small_cnn", "mednet", "mixed"])
def test_cuda_outputs_and_gradients_equal_vmap(name: str) -> None:
    target, weights, x = case(name)
    target, x = target.cuda(), x.cuda()
    weights = {k: v.cuda() for k, v in weights.items()}
    with _strict_fp32():
        with torch.no_grad():
            expected = vmap_forward(target, weights, x)
            got = fast_stacked_forward(target, weights, x)
        scale = expected.abs().max().item()
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)
        grads = []
        for forward in (vmap_forward, fast_stacked_forward):
            leaves = {k: v.clone().requires_grad_() for k, v in weights.items()}
            out = forward(target, leaves, x)
            (out * torch.linspace(-1, 1, out.numel(), device="cuda").view_as(out)).sum().backward()
            grads.append({k: v.grad for k, v in leaves.items()})
    for key in weights:
        scale = grads[0][key].abs().max().item()
        torch.testing.assert_close(
            grads[1][key], grads[0][key], rtol=1e-3, atol=1e-4 * max(scale, 1e-3)
        )
