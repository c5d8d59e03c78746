r"""MNF: multiplicative normalizing flows (Louizos & Welling, ICML 2017).

Posterior, for every Linear / Conv2d layer of the target with weight ``W`` (shape
``out x in [x kh x kw]``)::

    z_0 ~ N(m, diag s^2),   z = f_T o ... o f_1 (z_0)          masked RealNVP flow on z
    W | z ~ N(z (.) mu_W, sigma_W^2)                            z scales W's input units
                                                                (Linear) / input channels (Conv2d)

and the prior is ``p(W) = N(0, 1)``. Biases are point estimates. Training maximises,
per training example (N of them), with a KL weight ``beta_t`` that rises linearly from
0 to 1 (warm-up),

    L = E_q[log p(y | x, W)]
        - beta_t / N * sum_layers E_{q(z) q(W|z)}[ KL(q(W|z) || p(W)) - log r(z | W) + log q(z) ]

    log q(z)    = log N(z_0; m, s^2) - sum_t log|det df_t/dz_{t-1}|
    log r(z|W)  = log N(g(z); mu~(W), sigma~^2(W)) + log|det dg/dz|      (auxiliary "inverse" flow g)
    a(W)        = mean_j tanh(sum_i c_i W_ij)      (i: the z axis of W, j: all other axes)
    mu~ = b1 a + d1,   log sigma~^2 = b2 a + d2

which lower-bounds the ELBO of the marginal q(W) = int q(W|z) q(z) dz (the paper's
auxiliary bound: -KL(q(W) || p(W)) >= E[-KL(q(W|z) || p(W)) + log r(z|W) - log q(z)]).
The expected log-likelihood is estimated with local reparameterisation: given
per-example z, the pre-activation of a Linear layer is Gaussian with mean
``(x (.) z) mu_W + b`` and variance ``x^2 sigma_W^2`` (Conv2d: ``conv(x (.) z, mu_W)`` and
``conv(x^2, sigma_W^2)``), sampled once per example. The training forward pass is the
target itself (``functional_call`` with ``mu_W``) with forward hooks on its Linear/Conv2d
layers, so it works for any target built from those layers and parameter-free modules.

``sample(n)`` draws whole weight sets from the same posterior: z through the flow, then
``W ~ N(z (.) mu_W, sigma_W^2)``; biases are repeated.

Departures from the paper and the authors' code (AMLab-Amsterdam/MNF_VBNN):
- Flows are pyro's ``AffineCoupling`` layers (RealNVP with a fixed half split) with a
  reversing ``Permute`` between steps; the authors drew a fresh random Bernoulli mask
  per sample, which makes their flow stochastic. The coupling nets start at the identity
  (zero last layer). A one-dimensional z (e.g. a 1-channel first conv) cannot be split,
  so it uses pyro's ``Planar`` flow, as the authors' code did.
- The conv noise sits on input channels (like Linear, as uqbench's design asks); the
  paper puts it on output filters: ``conv_noise="filters"`` gives the paper's choice.
- ``r`` has the learned offsets ``d1, d2`` (the paper: ``mu~ = b1 a``,
  ``sigma~ = sigmoid(b2 a)``); any r keeps the bound valid, the offsets only tighten it.
- ``sigma_W`` is clipped at ``max_std`` (the authors' ``thres_var``) in the forward pass,
  the bound and sampling alike, so sampling draws exactly the distribution trained.
- Biases have no prior (point estimates); the authors' code gave them a Gaussian too.
- The log sigma_W^2 parameters learn ``var_lr_scale`` = 10 times faster than the rest, and
  ``max_std`` is 0.1 (the authors: same rate, 0.5). At the authors' rate sigma_W starts
  tiny and stays optimiser-limited on short budgets (the bound's KL part sits far from its
  optimum). Measured on mnist5000 (1,000 steps, 100 sampled nets, official 10k test),
  acc@100 / NLL / ECE / entropy AUROC notMNIST, Fashion-MNIST:
  authors' (1, 0.5): 97.89 % / 0.060 / 0.003 / 0.899, 0.978 (sigma_W ~ 0.02);
  (10, 0.5): 97.64 % / 0.138 / 0.077 / 0.983, 0.995 (sigma_W at the clip, under-confident);
  (10, 0.1), the default: 97.98 % / 0.077 / 0.027 / 0.959, 0.990.
- The base of q(z) starts at mean 1 (the authors: near 0, shifted by the flow).
- Regression targets are standardised for training (``standardize_targets``): the N(0, 1)
  prior then acts on the standardised network, and ``sample`` folds ``y = shift + scale *
  y_std`` into the last Linear layer (mean row scaled and shifted; a log-variance row gains
  ``2 log scale``). On toy1d (y up to +-64, noise std 3) the raw-scale fit underfits the
  cubic: grid RMSE inside [-4, 4] 6.9 raw vs 3.9 standardised.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pyro.distributions.transforms import Permute, Planar, affine_coupling
from torch import Tensor, nn
from torch.utils.data import Dataset

from uqbench.errors import UserError
from uqbench.sampler import Progress, WeightSampler
from uqbench.targets import parametric_layers
from uqbench.training import as_tensors, minibatches, seeded_generator, task_loss

_CONV_NOISE = ("inputs", "filters")


@dataclass
class MNFConfig:
    """MNF settings: the authors' LeNet MNIST script (Adam 1e-3, batch 100, 2 flow steps,
    50 hidden units) except ``var_lr_scale`` and ``max_std`` (see the module docstring)."""

    #: Optimiser steps (Adam, one minibatch each).
    steps: int = 2000
    batch_size: int = 100
    lr: float = 1e-3
    #: Step size of the log sigma_W^2 parameters = ``lr * var_lr_scale``. At 1 (the
    #: authors' setting) Adam moves log sigma_W^2 by at most ``lr`` a step, so on short
    #: budgets the variances stay near ``init_log_var``, far below the bound's optimum.
    var_lr_scale: float = 10.0
    #: Fraction of ``steps`` over which the KL weight rises linearly from 0 to 1.
    kl_warmup: float = 0.3
    #: Affine coupling steps of q(z) (the paper: 2) and of the auxiliary flow of r(z|W).
    flow_steps: int = 2
    r_flow_steps: int = 2
    #: Hidden units of each coupling net (the authors: 50).
    flow_hidden: int = 50
    #: Initial log sigma_W^2 of every weight.
    init_log_var: float = -9.0
    #: sigma_W is clipped at this value (the authors' ``thres_var``: 0.5 on MNIST).
    max_std: float = 0.1
    #: Initial std of the Gaussian base of q(z) (the authors: sqrt(0.1)).
    z_init_std: float = 0.316
    #: Where z sits in a Conv2d layer: "inputs" (input channels) or "filters" (the paper).
    conv_noise: str = "inputs"
    #: Samples of (z, W) per step for the KL part of the bound.
    kl_samples: int = 1
    #: Regression: train on standardised targets (y - mean) / std with noise_std / std and
    #: fold the scale back into the last Linear layer of every sampled network.
    standardize_targets: bool = True


class _Flow(nn.Module):
    """A chain of pyro transforms on vectors ``[..., D]`` that also returns ``log|det J|``.

    D >= 2: affine coupling (RealNVP), reversing permutation, affine coupling, ... ending
    in the input's order (a last reversal after an even number of couplings).
    D == 1: planar flows (a coupling layer needs two halves).
    Every step starts at the identity map (zero coupling output layer; planar u_hat = 0).
    """

    def __init__(self, dim: int, steps: int, hidden: int, device: torch.device) -> None:
        super().__init__()
        self.dim = dim
        modules: list[nn.Module] = []
        self.transforms: list[Any] = []
        reverse = torch.arange(dim - 1, -1, -1, device=device)
        for step in range(steps):
            if dim == 1:
                transform = Planar(1)
                with torch.no_grad():  # u^T w = log(e - 1) makes u_hat = 0: the identity
                    transform.w.fill_(1.0)
                    transform.u.fill_(math.log(math.e - 1.0))
                    transform.bias.zero_()
            else:
                if step > 0:
                    self.transforms.append(Permute(reverse))
                transform = affine_coupling(dim, hidden_dims=[hidden])
                last = transform.nn.layers[-1]
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
            modules.append(transform)
            self.transforms.append(transform)
        if dim > 1 and steps % 2 == 0 and steps > 0:
            self.transforms.append(Permute(reverse))  # z_i stays the noise of unit i
        self.steps = nn.ModuleList(modules).to(device)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x), log|det df/dx|)`` with shapes ``[..., D]`` and ``[...]``."""
        log_det = torch.zeros(x.shape[:-1], device=x.device, dtype=x.dtype)
        for transform in self.transforms:
            y = transform(x)
            log_det = log_det + transform.log_abs_det_jacobian(x, y)
            x = y
        return x, log_det


class _LayerPosterior(nn.Module):
    """q(z), q(W|z), the auxiliary r(z|W) and the point-estimate bias of one layer."""

    def __init__(self, layer: nn.Linear | nn.Conv2d, z_axis: int, config: MNFConfig) -> None:
        super().__init__()
        weight = layer.weight.detach()
        device = weight.device
        self.z_axis = z_axis
        dim = weight.shape[z_axis]
        self.mu = nn.Parameter(weight.clone())
        self.log_var = nn.Parameter(torch.full_like(weight, config.init_log_var))
        self.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        self.max_log_var = 2 * math.log(config.max_std)
        # q(z): diagonal Gaussian base, then the flow.
        self.z_mean = nn.Parameter(torch.ones(dim, device=device))
        self.z_log_var = nn.Parameter(
            torch.full((dim,), 2 * math.log(config.z_init_std), device=device)
        )
        self.q_flow = _Flow(dim, config.flow_steps, config.flow_hidden, device)
        # r(z|W): a Gaussian whose moments depend on W through a(W), after the flow g.
        self.r_flow = _Flow(dim, config.r_flow_steps, config.flow_hidden, device)
        self.c = nn.Parameter(torch.randn(dim, device=device) / math.sqrt(dim))
        self.b1 = nn.Parameter(0.1 * torch.randn(dim, device=device))
        self.b2 = nn.Parameter(0.1 * torch.randn(dim, device=device))
        self.d1 = nn.Parameter(torch.ones(dim, device=device))
        self.d2 = nn.Parameter(torch.full((dim,), 2 * math.log(config.z_init_std), device=device))

    # --- q(z) and q(W|z) -----------------------------------------------------------
    def sample_z(self, eps: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, log q(z))`` from base noise ``eps [..., D]`` (reparameterised)."""
        std = (0.5 * self.z_log_var).exp()
        z0 = self.z_mean + std * eps
        log_base = (-0.5 * eps.pow(2) - 0.5 * math.log(2 * math.pi) - 0.5 * self.z_log_var).sum(-1)
        z, log_det = self.q_flow(z0)
        return z, log_base - log_det

    def weight_var(self) -> Tensor:
        """sigma_W^2, clipped at ``max_std^2``."""
        return self.log_var.clamp(max=self.max_log_var).exp()

    def z_view(self, z: Tensor) -> Tensor:
        """``z [S, D]`` shaped to broadcast against ``W [S, *shape]`` along the z axis."""
        shape = [1] * self.mu.dim()
        shape[self.z_axis] = -1
        return z.reshape(z.shape[0], *shape)

    def weight_mean(self, z: Tensor) -> Tensor:
        """E[W | z] = z (.) mu_W, ``[S, *shape]`` for ``z [S, D]``."""
        return self.z_view(z) * self.mu

    def kl_weights(self, z: Tensor) -> Tensor:
        """KL(q(W|z) || N(0, 1)) summed over the layer's weights, ``[S]``."""
        mean = self.weight_mean(z)
        var = self.weight_var()
        kl = 0.5 * (var + mean.pow(2) - 1.0 - var.log())
        return kl.flatten(1).sum(1)

    # --- the auxiliary r(z|W) --------------------------------------------------------
    def log_r(self, z: Tensor, w_proj: Tensor) -> Tensor:
        """log r(z | W), ``[S]``, where ``w_proj [S, R] = c^T W`` (the z axis contracted)."""
        a = torch.tanh(w_proj).mean(-1, keepdim=True)
        mean = self.b1 * a + self.d1
        log_var = self.b2 * a + self.d2
        zb, log_det = self.r_flow(z)
        log_normal = -0.5 * ((zb - mean).pow(2) / log_var.exp() + log_var + math.log(2 * math.pi))
        return log_normal.sum(-1) + log_det

    def projected_moments(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``c^T W`` given z (W | z Gaussian): each ``[S, R]`` / ``[R]``."""
        mean = torch.movedim(self.weight_mean(z), self.z_axis + 1, 1).flatten(2)
        var = torch.movedim(self.weight_var(), self.z_axis, 0).flatten(1)
        return torch.einsum("d,sdr->sr", self.c, mean), torch.einsum("d,dr->r", self.c.pow(2), var)

    def bound_terms(self, samples: int) -> Tensor:
        """One-sample estimates of ``KL(q(W|z)||p) - log r(z|W) + log q(z)``, ``[samples]``."""
        eps = torch.randn(samples, self.z_mean.shape[0], device=self.mu.device)
        z, log_q = self.sample_z(eps)
        proj_mean, proj_var = self.projected_moments(z)
        w_proj = proj_mean + proj_var.sqrt() * torch.randn_like(proj_mean)
        return self.kl_weights(z) - self.log_r(z, w_proj) + log_q


class MNF(WeightSampler):
    """Multiplicative normalizing flows: a flow over multiplicative weight noise."""

    name = "mnf"
    Config = MNFConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "steps": 150,
            "batch_size": 50,
            "lr": 1e-2,
            "var_lr_scale": 1.0,
            "max_std": 0.5,
            "flow_hidden": 16,
        },
        "toy1d": {
            "steps": 3000,
            "batch_size": 20,
            "lr": 1e-2,
            "var_lr_scale": 1.0,
            "max_std": 0.5,
            "init_log_var": -6.0,
        },
        "mnist5k-split": {"steps": 300},
        "mnist5000": {"steps": 1000},
    }

    def __init__(
        self,
        target: nn.Module,
        config: MNFConfig | None = None,
        *,
        task=None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(target, config, task=task, device=device)
        cfg = self.config
        if cfg.conv_noise not in _CONV_NOISE:
            raise UserError(
                f"mnf.conv_noise={cfg.conv_noise!r}: use one of {', '.join(_CONV_NOISE)}"
            )
        for key in ("steps", "batch_size", "kl_samples", "flow_hidden"):
            if getattr(cfg, key) < 1:
                raise UserError(f"mnf.{key}={getattr(cfg, key)}: use a whole number >= 1")
        for key in ("flow_steps", "r_flow_steps"):
            if getattr(cfg, key) < 0:
                raise UserError(f"mnf.{key}={getattr(cfg, key)}: use a whole number >= 0")
        for key in ("lr", "var_lr_scale", "max_std", "z_init_std"):
            if not getattr(cfg, key) > 0:
                raise UserError(f"mnf.{key}={getattr(cfg, key)}: use a number > 0")
        self._layers = parametric_layers(self.target)
        for name, layer in self._layers:
            if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
                raise UserError(
                    f"mnf: layer {name} uses padding_mode={layer.padding_mode!r}; "
                    "local reparameterisation supports only zero padding"
                )
        self.posterior = self._build_posterior()
        #: Regression targets are standardised in ``fit``: y = y_shift + y_scale * y_std.
        self.y_shift, self.y_scale = 0.0, 1.0

    def _build_posterior(self) -> nn.ModuleDict:
        posterior = nn.ModuleDict()
        for name, layer in self._layers:
            z_axis = (
                0 if isinstance(layer, nn.Conv2d) and self.config.conv_noise == "filters" else 1
            )
            posterior[_key(name)] = _LayerPosterior(layer, z_axis, self.config)
        return posterior.to(self.device)

    # --- training ----------------------------------------------------------------------
    def kl_bound(self, samples: int = 1) -> Tensor:
        """Monte Carlo estimate of the bound's KL part summed over layers (a scalar)."""
        return sum(post.bound_terms(samples).mean() for post in self.posterior.values())

    def training_forward(self, x: Tensor) -> Tensor:
        """Target outputs ``[B, ...]`` with one local-reparameterised draw per example."""
        params: dict[str, Tensor] = {}
        for name, _ in self._layers:
            post = self.posterior[_key(name)]
            params[f"{name}.weight"] = post.mu
            if post.bias is not None:
                params[f"{name}.bias"] = post.bias
        with self._local_reparameterisation():
            return torch.func.functional_call(self.target, params, (x,))

    @contextmanager
    def _local_reparameterisation(self) -> Iterator[None]:
        """Hooks that turn each layer's ``mu_W`` forward into a sampled pre-activation."""
        handles = []
        for name, layer in self._layers:
            post = self.posterior[_key(name)]
            stash: dict[str, Tensor] = {}
            handles.append(layer.register_forward_pre_hook(_pre_hook(post, stash)))
            handles.append(layer.register_forward_hook(_post_hook(post, stash)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Maximise the MNF bound with Adam (see the module docstring)."""
        cfg = self.config
        torch.manual_seed(seed)
        self.posterior = self._build_posterior()
        x_all, y_all = as_tensors(train)
        x_all, y_all = x_all.to(self.device), y_all.to(self.device)
        n_train = x_all.shape[0]
        if n_train == 0:
            raise UserError("mnf: the training set is empty")
        task = self.task
        self.y_shift, self.y_scale = 0.0, 1.0
        if not task.is_classification and cfg.standardize_targets:
            self._check_output_layer(x_all[:2])
            y_float = y_all.float()
            self.y_shift = float(y_float.mean())
            self.y_scale = float(y_float.std()) if n_train > 1 and float(y_float.std()) > 0 else 1.0
            y_all = (y_float - self.y_shift) / self.y_scale
            task = replace(task, noise_std=task.noise_std / self.y_scale)
        batch = min(cfg.batch_size, n_train)
        log_vars = [p for n, p in self.posterior.named_parameters() if n.endswith(".log_var")]
        others = [p for n, p in self.posterior.named_parameters() if not n.endswith(".log_var")]
        optimiser = torch.optim.Adam(
            [{"params": others}, {"params": log_vars, "lr": cfg.lr * cfg.var_lr_scale}], lr=cfg.lr
        )
        generator = seeded_generator(seed)
        warmup = max(1.0, cfg.kl_warmup * cfg.steps)
        batches = iter(())
        report_every = max(1, cfg.steps // 100)
        for step in range(cfg.steps):
            index = next(batches, None)
            if index is None:
                batches = minibatches(n_train, batch, generator)
                index = next(batches)
            index = index.to(self.device)
            beta = min(1.0, (step + 1) / warmup)
            outputs = self.training_forward(x_all[index])
            nll = task_loss(outputs.unsqueeze(0), y_all[index], task)[0]
            kl = self.kl_bound(cfg.kl_samples)
            loss = nll + beta * kl / n_train
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            if progress is not None and ((step + 1) % report_every == 0 or step + 1 == cfg.steps):
                progress(
                    step + 1,
                    cfg.steps,
                    loss=loss.item(),
                    nll=nll.item(),
                    kl=kl.item() / n_train,
                    beta=beta,
                )
        with torch.no_grad():
            self.extra_metrics = {"mnf_kl_per_example": float(self.kl_bound(16)) / n_train}

    # --- sampling ----------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """n weight sets: z ~ q(z) through the flow, W ~ N(z (.) mu_W, sigma_W^2); biases repeated."""
        self.check_n(n)
        out: dict[str, Tensor] = {}
        for name, _ in self._layers:
            post = self.posterior[_key(name)]
            eps_z = torch.randn(n, post.z_mean.shape[0], generator=generator).to(self.device)
            eps_w = torch.randn(n, *post.mu.shape, generator=generator).to(self.device)
            z, _ = post.sample_z(eps_z)
            out[f"{name}.weight"] = post.weight_mean(z) + post.weight_var().sqrt() * eps_w
            if post.bias is not None:
                out[f"{name}.bias"] = post.bias.expand(n, *post.bias.shape).clone()
        if self.y_shift != 0.0 or self.y_scale != 1.0:
            self._unstandardise(out)
        return {k: out[k] for k, _ in self.target.named_parameters()}

    # --- regression targets on the standardised scale ------------------------------------
    def _output_layer(self) -> tuple[str, nn.Module]:
        return self._layers[-1]

    def _check_output_layer(self, x: Tensor) -> None:
        """Standardised training needs the target's output to be its last Linear's output."""
        name, layer = self._output_layer()
        seen: list[Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _a, out: seen.append(out))
        try:
            with torch.no_grad():
                out = self.target(x)
        finally:
            handle.remove()
        if not (
            isinstance(layer, nn.Linear)
            and layer.bias is not None
            and seen
            and seen[-1].shape == out.shape
            and torch.equal(seen[-1], out)
        ):
            raise UserError(
                f"mnf: standardize_targets needs the target's output to come straight from its "
                f"last layer ({name}) as a Linear with a bias; set mnf.standardize_targets=false"
            )

    def _unstandardise(self, weights: dict[str, Tensor]) -> None:
        """Fold y = shift + scale * y_std into the last layer (in place): the mean output is
        scaled and shifted; a heteroscedastic log-variance output gains 2 log(scale)."""
        name, _ = self._output_layer()
        w, b = weights[f"{name}.weight"], weights[f"{name}.bias"]
        if self.task.heteroscedastic:
            w[:, 0] *= self.y_scale
            b[:, 0] = b[:, 0] * self.y_scale + self.y_shift
            b[:, 1] += 2 * math.log(self.y_scale)
        else:
            w *= self.y_scale
            b.mul_(self.y_scale).add_(self.y_shift)

    # --- persistence -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The posterior's tensors (q(z), q(W|z), r(z|W), biases)."""
        return {
            "posterior": dict(self.posterior.state_dict()),
            "y_shift": self.y_shift,
            "y_scale": self.y_scale,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""
        self.posterior.load_state_dict(state["posterior"])
        self.y_shift, self.y_scale = float(state["y_shift"]), float(state["y_scale"])


def _key(layer_name: str) -> str:
    """A ModuleDict key for a dotted layer name."""
    return layer_name.replace(".", "__")


def _variance(layer: nn.Linear | nn.Conv2d, x_sq: Tensor, var: Tensor) -> Tensor:
    """Pre-activation variance ``x^2 sigma_W^2`` (linear map or convolution of x^2)."""
    if isinstance(layer, nn.Conv2d):
        return F.conv2d(x_sq, var, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return F.linear(x_sq, var)


def _pre_hook(post: _LayerPosterior, stash: dict[str, Tensor]):
    """Per-example z; input-side noise multiplies x before the layer's mu_W forward."""

    def hook(layer: nn.Module, args: tuple) -> tuple:
        x = args[0]
        eps = torch.randn(x.shape[0], post.z_mean.shape[0], device=x.device, dtype=x.dtype)
        z, _ = post.sample_z(eps)
        stash["var"] = _variance(layer, x.pow(2), post.weight_var())
        if post.z_axis == 1:  # input units / channels
            if isinstance(layer, nn.Conv2d):
                return (x * z[:, :, None, None],)
            return (x * z.reshape(z.shape[0], *([1] * (x.dim() - 2)), -1),)
        stash["z"] = z
        return args

    return hook


def _post_hook(post: _LayerPosterior, stash: dict[str, Tensor]):
    """Adds the sampled Gaussian part; output-side (filter) noise scales the mean."""

    def hook(layer: nn.Module, args: tuple, out: Tensor) -> Tensor:
        if post.z_axis == 0:
            bias = 0.0 if post.bias is None else post.bias[:, None, None]
            out = (out - bias) * stash.pop("z")[:, :, None, None] + bias
        std = (stash.pop("var") + 1e-12).sqrt()
        return out + std * torch.randn_like(out)

    return hook
