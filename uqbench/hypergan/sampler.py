r"""HyperGAN (Ratzlaff & Li, ICML 2019): a generator of whole networks, trained on the task.

Model. Noise :math:`s \sim \mathcal N(0, I_{d_s})` goes through the *mixer* :math:`Q`
(MLP, batch-norm + ReLU) to :math:`N` per-layer codes :math:`z_1..z_N \in \mathbb R^d`
(:math:`N` = number of Linear / Conv2d layers of the target). Generator :math:`G_i`
(MLP :math:`d \to h \to` weight + bias count, batch-norm + ELU) turns :math:`z_i` into
layer :math:`i`'s weight and bias. A sampled network is :math:`\theta = (G_1(z_1), ..,
G_N(z_N))`.

Objective. With a batch of :math:`n` noise draws per step and one data batch
:math:`(x, y)` shared by all :math:`n` networks,

.. math::

    \min_{Q, G}\; \frac1n \sum_{k=1}^n \mathcal L\big(f(x; \theta_k), y\big)
        \;+\; \beta\, \frac{1}{nN} \sum_{k,i} -\log \sigma\big(D(z_{k,i})\big)

    \min_D\; -\log \sigma(D(z^\mathrm{prior})) - \log\big(1 - \sigma(D(z_{k,i}))\big),
    \qquad z^\mathrm{prior} \sim \mathcal N(0, I_d)

:math:`\mathcal L` is the task's negative log-likelihood (cross-entropy, or Gaussian NLL for
regression, :func:`uqbench.training.task_loss`); the second term is the non-saturating GAN
loss of a discriminator :math:`D` (MLP :math:`d \to 512 \to 512 \to 1`) that tells the
mixer's codes ("fake") from the prior :math:`\mathcal N(0, I_d)` ("real"); it keeps the
codes spread out, so the generated networks stay diverse. Optionally, the mixer is first
pre-trained so each layer's codes match :math:`\mathcal N(0, I_d)` in mean and covariance.
Ablations (the paper's Fig. 7): ``mixer=False`` draws the per-layer codes independently
from :math:`\mathcal N(0, I_d)`; ``discriminator=False`` drops :math:`D` and the
:math:`\beta` term.

Where this departs from the paper and the authors' code (each measured on mnist5000; the
numbers are in the issue's report):

- Output scaling and the shared bias: generator :math:`i` outputs
  :math:`c_i\,A_i h_i(z) + m_i`. The fixed factor :math:`c_i` is set at the start of
  ``fit`` so the first generated weights have std ``init_scale`` x Kaiming
  (:math:`\sqrt{2/\mathrm{fan\_in}}`); unscaled, the first networks' logits explode and
  training stalls. :math:`m_i` is the paper's last-layer bias, kept in the target's weight
  units so its learning rate ``lr_mean`` is a step on the weights themselves: the weights
  all networks share then learn at an ordinary network's pace, while the code-dependent
  part :math:`A_i` (and :math:`h_i`) keep their own rate ``lr_generator``.
- ``weight_decay`` defaults to 0 (paper: 1e-4 inside Adam). Adam's coupled L2 moves every
  weight whose loss gradient is small towards 0 by about ``lr`` per step — which is the
  code-dependent part that the loss does not pin down, i.e. the diversity.
- A cosine learning-rate schedule over ``steps`` (the authors: constant), and validation on
  a held-out slice of the training set, or in-sample with ``val_fraction=0``, for the
  keep-best checkpoint (the authors' script kept the best state by *test* accuracy).
- Batch-norm statistics per step come from ``noise_batch`` noise draws, of which only the
  first ``nets_per_step`` become networks: a step can evaluate few networks (the cost)
  without batch-norm over 2-4 samples, whose statistics would differ wildly from the
  population ones used at sampling.
- Batch-norm at sampling time: ``sample`` runs the mixer and generators in eval mode, with
  running statistics re-estimated exactly (``bn_calibration`` fixed noise draws,
  cumulative average) at every validation and so in the state ``fit`` keeps. Each sampled
  network depends on its own noise draw only — not on how many are drawn with it — and
  ``sample`` is reproducible given the generator.
- Layers also get a generated bias (the authors' MNIST target had none).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from uqbench.errors import UserError
from uqbench.functional import batched_predict, fan_in, flat_weight_norms, stacked_forward
from uqbench.sampler import Progress, Task, WeightSampler
from uqbench.targets import parametric_layers
from uqbench.training import as_tensors, seeded_generator, task_loss

#: Activation memory budget (bytes) of the validation forward pass during ``fit``.
VALIDATION_MEMORY = 1 << 27


@dataclass
class HyperGANConfig:
    """HyperGAN settings.

    Architecture and optimiser defaults are the paper's MNIST ones, except where the
    module docstring lists a measured departure (``init_scale``, ``lr_mean``,
    ``weight_decay``, ``lr_schedule``, ``noise_batch``). ``presets`` hold the settings
    tuned per benchmark.
    """

    #: Width of the noise s fed to the mixer (paper: 256 for MNIST, 512 for CIFAR).
    noise_dim: int = 256
    #: Width d of each per-layer code (paper: 128 for MNIST, 256 for CIFAR).
    code_dim: int = 128
    mixer_hidden: int = 512
    generator_hidden: int = 512
    discriminator_hidden: int = 512
    #: False: ablation without mixer, per-layer codes drawn independently from N(0, I)
    #: (then there is no discriminator either: the codes are exactly the prior).
    mixer: bool = True
    #: False: ablation without discriminator (no D, no beta term).
    discriminator: bool = True
    #: Weight of the adversarial term.
    beta: float = 1.0
    #: Std of the first generated weights as a fraction of Kaiming's sqrt(2 / fan_in).
    #: 0.5 (std 0.71 / sqrt(fan_in)) gave the best mnist5000 accuracy; 0.25 and 1.0 less.
    init_scale: float = 0.5
    #: Optimisation steps (each: one data batch, nets_per_step generated networks).
    steps: int = 2000
    #: Generated networks evaluated on each step's data batch (the expensive part).
    nets_per_step: int = 8
    #: Noise draws per step through the mixer and generator bodies: their batch-norm
    #: statistics and the discriminator's fakes come from all of them; only the first
    #: ``nets_per_step`` are turned into networks. >= nets_per_step.
    noise_batch: int = 32
    batch_size: int = 64
    lr_mixer: float = 5e-4
    lr_generator: float = 1e-4
    #: Learning rate of the generators' output bias (the weights shared by all networks),
    #: a step size in the target's weight units.
    lr_mean: float = 3e-3
    lr_discriminator: float = 1e-4
    #: Adam's (coupled) L2 on mixer and generators. The paper used 1e-4; under Adam it
    #: shrinks every weight whose loss gradient is small by ~lr per step, which is exactly
    #: the code-dependent part that makes networks differ (see the module docstring).
    weight_decay: float = 0.0
    adam_beta1: float = 0.5
    adam_beta2: float = 0.9
    #: "cosine" (decay to 0 over ``steps``) or "constant".
    lr_schedule: str = "cosine"
    #: Mixer pre-training steps (codes -> N(0, I) in mean and covariance); 0 = off.
    pretrain_steps: int = 0
    pretrain_batch: int = 512
    #: Share of the training set held out for validation (0: validate in-sample on a
    #: slice of the training set, which tracks progress but cannot detect overfitting).
    val_fraction: float = 0.1
    #: Validate (val accuracy of ``val_nets`` networks, diversity) every this many steps.
    val_every: int = 200
    val_nets: int = 5
    #: At most this many validation examples are used.
    val_max_examples: int = 500
    #: Keep the state with the best validation score (else: the last state).
    keep_best: bool = True
    #: Networks drawn to measure ``diversity_l2_rel_std``.
    diversity_samples: int = 100
    #: Noise draws used to re-estimate the batch-norm statistics used by ``sample``.
    bn_calibration: int = 2048


def _mlp_block(d_in: int, d_out: int, activation: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.BatchNorm1d(d_out), activation)


class Mixer(nn.Module):
    """Q: noise [n, noise_dim] -> per-layer codes [n, N, d] (MLP, batch-norm + ReLU)."""

    def __init__(self, noise_dim: int, hidden: int, n_layers: int, code_dim: int) -> None:
        super().__init__()
        self.n_layers, self.code_dim = n_layers, code_dim
        self.body = nn.Sequential(
            _mlp_block(noise_dim, hidden, nn.ReLU()), _mlp_block(hidden, hidden, nn.ReLU())
        )
        self.head = nn.Linear(hidden, n_layers * code_dim)

    def forward(self, s: Tensor) -> Tensor:
        return self.head(self.body(s)).view(-1, self.n_layers, self.code_dim)


class LayerGenerator(nn.Module):
    """G_i: code [n, d] -> flat weight + bias of one target layer [n, P] (batch-norm + ELU).

    Output ``scale * (A h) + mean``: the last Linear of the paper's generator with its bias
    ``mean`` kept in the target's weight units (so its learning rate ``lr_mean`` is a step
    size on the weights themselves) and ``scale`` a fixed factor set by
    :meth:`HyperGAN.fit` so the first generated weights sit at ``init_scale`` x Kaiming.
    """

    def __init__(self, code_dim: int, hidden: int, n_out: int) -> None:
        super().__init__()
        self.body = _mlp_block(code_dim, hidden, nn.ELU())
        self.head = nn.Linear(hidden, n_out, bias=False)
        self.mean = nn.Parameter(torch.zeros(n_out))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, z: Tensor, n: int | None = None) -> Tensor:
        """Flat parameters of the first ``n`` codes (all by default); the body sees all."""
        return self.scale * self.head(self.body(z)[:n]) + self.mean


class Discriminator(nn.Module):
    """D: code [m, d] -> logit that the code came from the prior N(0, I_d)."""

    def __init__(self, code_dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(code_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).squeeze(-1)


@dataclass(frozen=True)
class _LayerSpec:
    """Where one generator's output goes: parameter names, shapes and sizes, in order."""

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    kaiming_std: float

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(math.prod(s) for s in self.shapes)


def layer_specs(target: nn.Module) -> list[_LayerSpec]:
    """One spec per Linear / Conv2d layer of ``target`` (weight, then bias if any)."""
    specs = []
    for layer_name, module in parametric_layers(target):
        own = list(module.named_parameters(recurse=False))
        names = tuple(f"{layer_name}.{p}" for p, _ in own)
        shapes = tuple(v.shape for _, v in own)
        std = math.sqrt(2.0 / fan_in(module.weight.shape))
        specs.append(_LayerSpec(names, shapes, std))
    return specs


def code_moment_loss(codes: Tensor) -> Tensor:
    """Mixer pre-training loss: ||mean||^2 + ||cov - I||_F^2 per layer, summed over layers.

    ``codes``: [n, N, d]; mean and covariance are taken over the n draws.
    """
    mean = codes.mean(0)
    centred = codes - mean
    cov = torch.einsum("nla,nlb->lab", centred, centred) / (codes.shape[0] - 1)
    eye = torch.eye(codes.shape[-1], device=codes.device, dtype=codes.dtype)
    return mean.pow(2).sum() + (cov - eye).pow(2).sum()


class HyperGAN(WeightSampler):
    """HyperGAN: mixer + per-layer generators, trained on the task with an adversarial code prior.

    See the module docstring for the objective and the departures from the paper.
    ``history`` (after ``fit``) lists ``{"step", "val_score", "diversity"}`` at every
    validation; ``val_score`` is accuracy (classification) or minus the mean Gaussian NLL
    (regression).
    """

    name = "hypergan"
    Config = HyperGANConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "noise_dim": 32,
            "code_dim": 16,
            "mixer_hidden": 64,
            "generator_hidden": 64,
            "discriminator_hidden": 64,
            "steps": 150,
            "init_scale": 0.25,
            "nets_per_step": 4,
            "noise_batch": 16,
            "batch_size": 32,
            "lr_mixer": 3e-3,
            "lr_generator": 3e-3,
            "lr_mean": 1e-2,
            "lr_discriminator": 1e-3,
            "val_every": 75,
            "val_nets": 3,
            "diversity_samples": 20,
            "bn_calibration": 256,
        },
        # Measured on mnist5000 (2-core CPU): a 128-wide generator hidden layer makes a
        # step ~2x cheaper than the paper's 512 (Adam over the 512 x 25,632 head dominates).
        # 1,500 steps of 4 networks x 64 images take ~80 s, under a 5-member ensemble's
        # ~96 s; 1,000 steps scored ~0.15 pt lower (results/hypergan_dev/local_runs.md).
        "mnist5000": {
            "generator_hidden": 128,
            "nets_per_step": 4,
            "steps": 1500,
            "lr_generator": 1e-3,
            "val_fraction": 0.0,
            "val_every": 250,
        },
        "mnist5k-split": {
            "generator_hidden": 128,
            "nets_per_step": 4,
            "steps": 500,
            "lr_generator": 1e-3,
            "val_fraction": 0.0,
            "val_every": 250,
        },
        "toy1d": {
            "steps": 1000,
            "nets_per_step": 8,
            "batch_size": 20,
            "lr_generator": 1e-3,
            "lr_mean": 1e-2,
            "val_fraction": 0.0,
            "val_every": 250,
        },
    }

    def __init__(
        self,
        target: nn.Module,
        config: HyperGANConfig | None = None,
        *,
        task: Task | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(target, config, task=task, device=device)
        self._check_config()
        self.specs = layer_specs(self.target)
        self.history: list[dict[str, float]] = []
        self._fitted = False
        self._build()

    # --- construction -----------------------------------------------------------------
    def _check_config(self) -> None:
        c = self.config
        positive = (
            "noise_dim",
            "code_dim",
            "mixer_hidden",
            "generator_hidden",
            "steps",
            "nets_per_step",
            "noise_batch",
            "batch_size",
            "val_every",
            "val_nets",
            "diversity_samples",
            "bn_calibration",
        )
        for key in positive:
            if getattr(c, key) < (0 if key == "steps" else 1):
                raise UserError(f"hypergan: {key}={getattr(c, key)} must be a positive integer")
        if c.noise_batch < max(2, c.nets_per_step):
            raise UserError(
                f"hypergan: noise_batch={c.noise_batch} must be >= 2 and >= nets_per_step="
                f"{c.nets_per_step} (batch-norm statistics come from the noise batch)"
            )
        if c.lr_schedule not in ("cosine", "constant"):
            raise UserError(f"hypergan: lr_schedule={c.lr_schedule!r}; use 'cosine' or 'constant'")
        if not 0.0 <= c.val_fraction < 1.0:
            raise UserError(f"hypergan: val_fraction={c.val_fraction} must be in [0, 1)")
        if c.init_scale <= 0:
            raise UserError(f"hypergan: init_scale={c.init_scale} must be > 0")

    def _build(self) -> None:
        """Create mixer, generators and discriminator (fresh parameters from torch's RNG)."""
        c = self.config
        n_layers = len(self.specs)
        self.mixer = (
            Mixer(c.noise_dim, c.mixer_hidden, n_layers, c.code_dim).to(self.device)
            if c.mixer
            else None
        )
        self.generators = nn.ModuleList(
            LayerGenerator(c.code_dim, c.generator_hidden, sum(spec.sizes)) for spec in self.specs
        ).to(self.device)
        # Without a mixer the codes *are* prior draws: a discriminator has nothing to act on.
        self.discriminator = (
            Discriminator(c.code_dim, c.discriminator_hidden).to(self.device)
            if c.discriminator and c.mixer
            else None
        )

    @property
    def noise_width(self) -> int:
        """Width of one noise draw: ``noise_dim`` with the mixer, N x d without."""
        c = self.config
        return c.noise_dim if c.mixer else len(self.specs) * c.code_dim

    def _hypernet(self) -> nn.ModuleDict:
        """The modules needed to sample (mixer and generators; not the discriminator)."""
        parts: dict[str, nn.Module] = {"generators": self.generators}
        if self.mixer is not None:
            parts["mixer"] = self.mixer
        return nn.ModuleDict(parts)

    # --- the generative model -------------------------------------------------------------
    def codes(self, noise: Tensor) -> Tensor:
        """Per-layer codes [n, N, d]: the mixer's output, or the noise itself without a mixer."""
        if self.mixer is None:
            return noise.view(-1, len(self.specs), self.config.code_dim)
        return self.mixer(noise)

    def weights_from_codes(self, codes: Tensor, n: int | None = None) -> dict[str, Tensor]:
        """Generated parameters ``name -> [n, *shape]`` from codes [m, N, d].

        All m codes go through the generator bodies (their batch-norm statistics in train
        mode); only the first ``n`` (default m) go through the heads.
        """
        out: dict[str, Tensor] = {}
        n = codes.shape[0] if n is None else n
        for i, (spec, gen) in enumerate(zip(self.specs, self.generators, strict=True)):
            flat = gen(codes[:, i], n)
            for name, shape, part in zip(
                spec.names, spec.shapes, flat.split(spec.sizes, dim=1), strict=True
            ):
                out[name] = part.reshape(n, *shape)
        return out

    def _draw_noise(self, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.randn(n, self.noise_width, generator=generator).to(self.device)

    # --- contract -------------------------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """n networks, each from its own noise draw; eval-mode batch-norm (see module doc)."""
        self.check_n(n)
        if not self._fitted:
            raise UserError("hypergan: call fit (or load_state_dict) before sample")
        noise = self._draw_noise(n, generator)
        hypernet = self._hypernet()
        was_training = hypernet.training
        hypernet.eval()
        try:
            with torch.no_grad():
                return self.weights_from_codes(self.codes(noise))
        finally:
            hypernet.train(was_training)

    def state_dict(self) -> dict:
        return {
            "config": dataclasses.asdict(self.config),
            "hypernet": self._hypernet().state_dict(),
            "history": [dict(h) for h in self.history],
            "extra_metrics": dict(self.extra_metrics),
        }

    def load_state_dict(self, state: dict) -> None:
        saved = state["config"]
        for key in ("mixer", "noise_dim", "code_dim", "mixer_hidden", "generator_hidden"):
            if saved[key] != getattr(self.config, key):
                raise UserError(
                    f"hypergan: checkpoint has {key}={saved[key]}, this sampler "
                    f"{getattr(self.config, key)}; build it with the checkpoint's config"
                )
        self._hypernet().load_state_dict(state["hypernet"])
        self.history = [dict(h) for h in state["history"]]
        self.extra_metrics = dict(state["extra_metrics"])
        self._fitted = True

    # --- training -------------------------------------------------------------------------
    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Train mixer, generators and discriminator from scratch (deterministic in ``seed``).

        Every ``val_every`` steps (and at steps 0 and ``steps``): batch-norm statistics
        re-estimated, a history row, and — with ``keep_best`` — a copy of the state if its
        validation score is the best so far (ties go to the later state).
        """
        c = self.config
        torch.manual_seed(seed)
        self._build()
        g = seeded_generator(seed)
        x_all, y_all = as_tensors(train)
        x_all, y_all = x_all.to(self.device), y_all.to(self.device)
        (x_tr, y_tr), (x_val, y_val) = self._split(x_all, y_all, g)
        n_train = x_tr.shape[0]
        batch = min(c.batch_size, n_train)

        self._calibrate_output_scale(g)
        if c.mixer and c.pretrain_steps > 0:
            self._pretrain_mixer(g)

        opt_g, opt_d = self._optimizers()
        schedulers = [
            torch.optim.lr_scheduler.LambdaLR(o, self._lr_factor) for o in (opt_g, opt_d) if o
        ]
        self.history = []
        best_score, best_state, best_step = -math.inf, None, 0
        order = torch.randperm(n_train, generator=g).to(self.device)
        cursor = 0
        self._hypernet().train()
        for step in range(0, c.steps + 1):
            if step > 0:
                if cursor + batch > n_train:
                    order, cursor = torch.randperm(n_train, generator=g).to(self.device), 0
                idx = order[cursor : cursor + batch]
                cursor += batch
                loss, adv, d_loss = self._step(x_tr[idx], y_tr[idx], opt_g, opt_d, g)
                for s in schedulers:
                    s.step()
                if progress is not None and (step % 10 == 0 or step == c.steps):
                    progress(step, c.steps, loss=loss, adv=adv, d_loss=d_loss)
            if step % c.val_every == 0 or step == c.steps:
                score, diversity = self._validate(x_val, y_val)
                self.history.append({"step": step, "val_score": score, "diversity": diversity})
                if progress is not None:
                    progress(step, c.steps, val_score=score, diversity=diversity)
                if score >= best_score:  # ties go to the later, more trained state
                    best_score, best_step = score, step
                    if c.keep_best:
                        best_state = copy.deepcopy(self._hypernet().state_dict())
        if best_state is not None:
            self._hypernet().load_state_dict(best_state)
        self._fitted = True
        kept = next((h for h in self.history if h["step"] == best_step), None)
        self.extra_metrics = {
            "fit_steps": float(c.steps),
            "best_step": float(best_step if c.keep_best else c.steps),
        }
        final = kept if (c.keep_best and kept) else (self.history[-1] if self.history else None)
        if final is not None:
            self.extra_metrics["val_score"] = final["val_score"]
            self.extra_metrics["diversity_l2_rel_std_fit"] = final["diversity"]

    def _split(
        self, x: Tensor, y: Tensor, g: torch.Generator
    ) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """Hold out ``val_fraction`` of the training set (or validate in-sample when 0)."""
        c = self.config
        n = x.shape[0]
        perm = torch.randperm(n, generator=g).to(x.device)
        n_val = int(round(c.val_fraction * n))
        if n_val == 0 or n - n_val < 2:
            val = perm[: min(c.val_max_examples, n)]
            return (x, y), (x[val], y[val])
        val, tr = perm[: min(n_val, c.val_max_examples)], perm[n_val:]
        return (x[tr], y[tr]), (x[val], y[val])

    def _lr_factor(self, step: int) -> float:
        if self.config.lr_schedule == "constant" or self.config.steps == 0:
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step, self.config.steps) / self.config.steps))

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
        c = self.config
        # fused: one kernel per step instead of ~10 per tensor; Adam was ~30 % of a CPU step.
        kw = {"betas": (c.adam_beta1, c.adam_beta2), "weight_decay": c.weight_decay, "fused": True}
        means = [g.mean for g in self.generators]
        rest = [p for n, p in self.generators.named_parameters() if not n.endswith(".mean")]
        groups = [
            {"params": rest, "lr": c.lr_generator},
            {"params": means, "lr": c.lr_mean},
        ]
        if self.mixer is not None:
            groups.append({"params": list(self.mixer.parameters()), "lr": c.lr_mixer})
        opt_g = torch.optim.Adam(groups, **kw)
        opt_d = (
            torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_discriminator, **kw)
            if self.discriminator is not None
            else None
        )
        return opt_g, opt_d

    def _step(
        self,
        x: Tensor,
        y: Tensor,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer | None,
        g: torch.Generator,
    ) -> tuple[float, float, float]:
        """One step: discriminator update, then mixer + generators on task loss + beta * adv."""
        c = self.config
        codes = self.codes(self._draw_noise(c.noise_batch, g))
        adv_value, d_value = 0.0, 0.0
        adv = torch.zeros((), device=self.device)
        if self.discriminator is not None:
            fake = codes.reshape(-1, c.code_dim)
            real = torch.randn(fake.shape, generator=g).to(self.device)
            d_loss = (
                F.softplus(-self.discriminator(real)).mean()
                + F.softplus(self.discriminator(fake.detach())).mean()
            )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            d_value = d_loss.item()
            # Non-saturating generator term: -log sigma(D(z)); D's grads are not stepped.
            adv = F.softplus(-self.discriminator(fake)).mean()
            adv_value = adv.item()
        weights = self.weights_from_codes(codes, c.nets_per_step)
        loss = task_loss(stacked_forward(self.target, weights, x), y, self.task).mean()
        total = loss + c.beta * adv if self.discriminator is not None else loss
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        return loss.item(), adv_value, d_value

    @torch.no_grad()
    def _calibrate_output_scale(self, g: torch.Generator) -> None:
        """Set each generator's fixed ``scale`` so its first weights have std init_scale x Kaiming."""
        c = self.config
        codes = self.codes(self._draw_noise(max(c.noise_batch, 64), g))
        for i, (spec, gen) in enumerate(zip(self.specs, self.generators, strict=True)):
            gen.scale.fill_(1.0)
            gen.mean.zero_()
            raw = gen(codes[:, i])[:, : spec.sizes[0]]
            gen.scale.fill_(c.init_scale * spec.kaiming_std / raw.std().clamp_min(1e-12).item())

    def _pretrain_mixer(self, g: torch.Generator) -> None:
        """Fit the mixer so each layer's codes have mean 0 and covariance I (paper, optional)."""
        c = self.config
        opt = torch.optim.Adam(
            self.mixer.parameters(), lr=c.lr_mixer, betas=(c.adam_beta1, c.adam_beta2)
        )
        for _ in range(c.pretrain_steps):
            loss = code_moment_loss(self.codes(self._draw_noise(c.pretrain_batch, g)))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    @torch.no_grad()
    def _recalibrate_batchnorm(self) -> None:
        """Running stats := exact mean / var over ``bn_calibration`` fixed noise draws.

        A fixed seed makes it deterministic and leaves the fit's generator untouched.
        """
        hypernet = self._hypernet()
        bns = [m for m in hypernet.modules() if isinstance(m, nn.BatchNorm1d)]
        momenta = [bn.momentum for bn in bns]
        for bn in bns:
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batch
        hypernet.train()
        noise = self._draw_noise(self.config.bn_calibration, seeded_generator(0))
        codes = self.codes(noise)
        for i, gen in enumerate(self.generators):
            gen.body(codes[:, i])
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m

    @torch.no_grad()
    def _validate(self, x_val: Tensor, y_val: Tensor) -> tuple[float, float]:
        """(val score of ``val_nets`` networks' mean prediction, diversity of 100 networks)."""
        c = self.config
        self._recalibrate_batchnorm()
        self._fitted = True
        draw = self.sample(max(c.val_nets, c.diversity_samples), generator=seeded_generator(1))
        norms = flat_weight_norms(draw)
        diversity = float(norms.std() / norms.mean())
        few = {k: v[: c.val_nets] for k, v in draw.items()}
        out = batched_predict(self.target, few, x_val, memory_budget=VALIDATION_MEMORY)
        if self.task.is_classification:
            probs = out.softmax(-1).mean(0)
            score = float((probs.argmax(-1) == y_val).float().mean())
        else:
            score = -float(task_loss(out, y_val, self.task).mean())
        self._hypernet().train()
        return score, diversity
