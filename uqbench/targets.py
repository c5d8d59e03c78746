"""Target networks from the paper's code; every method in one comparison uses the same one.

Parameter names (``conv1.weight`` ...) are the keys of every sample. A user's own target is
any ``nn.Module`` made of parametric ``nn.Linear`` / ``nn.Conv2d`` layers and
parameter-free modules (activations, pooling, flatten). A target with batch-norm layers
is accepted by the methods that recompute the layers' statistics for every sampled
network (:attr:`uqbench.sampler.WeightSampler.batch_norm`: SWAG) and refused by the rest.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor, nn

from uqbench.errors import UserError


def small_cnn(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Sequential:
    """MNIST "small": conv 1->32 5x5, lReLU, pool; conv 32->32 5x5, lReLU, pool; linear 512->10."""
    side = ((image_size - 4) // 2 - 4) // 2
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, 32, 5),
            act1=nn.LeakyReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(32, 32, 5),
            act2=nn.LeakyReLU(),
            pool2=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc=nn.Linear(32 * side * side, num_classes),
        )
    )


def mednet(in_channels: int = 3, num_classes: int = 10) -> nn.Sequential:
    """CIFAR "mednet": conv 16, 32, 32 (3x3, each max-pooled), linear 128->64->10."""
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(in_channels, 16, 3),
            act1=nn.ReLU(),
            pool1=nn.MaxPool2d(2),
            conv2=nn.Conv2d(16, 32, 3),
            act2=nn.ReLU(),
            pool2=nn.MaxPool2d(2),
            conv3=nn.Conv2d(32, 32, 3),
            act3=nn.ReLU(),
            pool3=nn.MaxPool2d(2),
            flatten=nn.Flatten(),
            fc1=nn.Linear(128, 64),
            act4=nn.ReLU(),
            fc2=nn.Linear(64, num_classes),
        )
    )


def toy1d_mlp(hidden: int = 200, outputs: int = 1) -> nn.Sequential:
    """toy1d: 1 -> 200 -> 1 (one hidden ReLU layer); 2 outputs for mean and log-variance."""
    return nn.Sequential(
        OrderedDict(fc1=nn.Linear(1, hidden), act1=nn.ReLU(), fc2=nn.Linear(hidden, outputs))
    )


TARGETS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": small_cnn,
    "mednet": mednet,
    "toy1d_mlp": toy1d_mlp,
}


def parametric_layers(target: nn.Module) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    """The target's Linear / Conv2d layers in order: one HyperGAN generator per entry.

    Raises a UserError for a parameter that lives outside such a layer (e.g. BatchNorm),
    since no method here knows how to sample it.
    """
    layers = [(n, m) for n, m in target.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    covered = {f"{n}.{p}" for n, m in layers for p, _ in m.named_parameters(recurse=False)}
    stray = [n for n, _ in target.named_parameters() if n not in covered]
    if stray:
        raise UserError(
            f"target has parameters outside Linear/Conv2d layers ({', '.join(stray)}); "
            "uqbench samples only Linear and Conv2d weights — remove or freeze those layers"
        )
    return layers


def batch_norm_statistics(target: nn.Module) -> list[str]:
    """Names of the running means and variances of ``target``'s batch-norm layers.

    In evaluation mode these buffers, not the batch, normalise the inputs, so each sampled
    network needs its own (a network's statistics depend on its weights). Empty for a
    target without batch-norm or whose batch-norm layers track no running statistics.
    """
    names = []
    for prefix, module in target.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            dot = f"{prefix}." if prefix else ""
            names += [f"{dot}running_mean", f"{dot}running_var"]
    return names


def leaf_outputs(target: nn.Module, example: Tensor) -> list[tuple[nn.Module, Tensor]]:
    """(module, output) of every leaf module, in call order, for one network on ``example[:1]``.

    One forward pass with hooks, no autograd; the shared basis of chunk sizing, cache
    blocking and the benchmarks' FLOP count.
    """
    seen: list[tuple[nn.Module, Tensor]] = []

    def hook(module: nn.Module, _inputs: tuple, output: Tensor) -> None:
        if isinstance(output, Tensor):
            seen.append((module, output))

    leaves = [m for m in target.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            target(example[:1])
    finally:
        for h in handles:
            h.remove()
    return seen


def reinitialised(target: nn.Module, seed: int, device: str | torch.device) -> nn.Module:
    """A copy of ``target`` with every layer re-initialised (``reset_parameters``) from
    ``seed`` on the CPU generator, so the copy is the same on every device; the global RNG
    state is left as it was."""
    net = copy.deepcopy(target).to("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in net.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    return net.to(device)
