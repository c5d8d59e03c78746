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

:math:`\mathcal L` is the task's negative log-likelihood (:func:`uqbench.training.task_loss`);
the second term is the non-saturating GAN loss of a discriminator :math:`D` (MLP
:math:`d \to 512 \to 512 \to 1`) that tells the mixer's codes from the prior; it keeps the
codes spread out. The mixer is first pre-trained so each layer's codes match
:math:`\mathcal N(0, I_d)` in mean and covariance (the authors' README runs every script
with it). Ablations (the paper's Fig. 7): ``mixer=False`` draws the per-layer codes
independently from :math:`\mathcal N(0, I_d)`; ``discriminator=False`` drops :math:`D`.

``hypergan`` is the paper's model with the paper's MNIST settings
(:mod:`uqbench.hypergan.config`): generator width 512, an ordinary output bias at the
generators' learning rate, 32 networks on 32 images per step, constant learning rates,
Adam (0.5, 0.9) with weight decay 1e-4, mixer pre-training. What it adds:

- Output scaling at initialisation: the generators' last Linear is multiplied once, at the
  start of ``fit``, so the first generated weights have std ``init_scale`` x Kaiming
  (:math:`\sqrt{2/\mathrm{fan\_in}}`). PyTorch's default init of a 512-wide Linear gives
  weights of std ~0.5 for layers whose Kaiming std is 0.05; the first logits explode
  and training stalls near chance. After that one rescale the layer trains unchanged;
  Adam's steps (``lr_generator`` per entry) are then a larger share of the smaller head
  weights than in the authors' unscaled code, which is why lr_generator 1e-3 does not
  train this model (``results/hypergan_dev/validation_probes.md``) while the paper's 1e-4
  does.
- Validation on the benchmark's validation split (``val``), never on test (at most
  ``val_max_examples`` of it, a fixed random subset: CIFAR's splits are sorted by class,
  and their first 1,000 images held two of the classes): every ``val_every`` steps, the
  NLL and accuracy of the ``val_nets`` networks' mean prediction,
  their pairwise disagreement and the weight-space spread
  (:mod:`uqbench.hypergan.diagnostics`) go into ``history``; with ``keep_best`` the state
  with the lowest validation NLL is kept (the authors kept the best by *test* accuracy).
  With ``val=None`` nothing is selected: the last state is kept, ``history`` holds the
  weight-space rows only and ``extra_metrics["kept_best"]`` is 0.
- Batch-norm at sampling time: ``sample`` runs mixer and generators in eval mode with
  running statistics re-estimated exactly (``bn_calibration`` fixed noise draws) at every
  validation, so each network depends on its own noise draw only and ``sample`` is
  reproducible given the generator.
- Layers also get a generated bias (the authors' MNIST target had none).

``hypergan-engineered`` (:mod:`uqbench.hypergan.engineered`) keeps the departures that
earlier mnist5000 runs chose; ``hypergan-repulsive`` (:mod:`uqbench.hypergan.repulsive`)
adds a function-space repulsion.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from uqbench.errors import UserError
from uqbench.functional import batched_predict, flat_weight_norms, stacked_forward
from uqbench.hypergan.config import HyperGANConfig
from uqbench.hypergan.diagnostics import pairwise_disagreement, weight_spread
from uqbench.hypergan.networks import (
    Discriminator,
    LayerGenerator,
    Mixer,
    code_moment_loss,
    layer_specs,
)
from uqbench.sampler import Progress, Task, WeightSampler
from uqbench.training import (
    MinibatchSampler,
    as_tensors,
    check_finite,
    derive_seeds,
    lr_factor,
    random_subset,
    regression_outputs,
    seeded_generator,
    task_loss,
)

#: Activation memory budget (bytes) of the validation forward pass during ``fit``.
VALIDATION_MEMORY = 1 << 27

#: Settings a checkpoint must share with the sampler that loads it.
_ARCHITECTURE = ("mixer", "noise_dim", "code_dim", "mixer_hidden", "generator_hidden")


def ensemble_nll(outputs: Tensor, y: Tensor, task: Task) -> float:
    """NLL of the networks' mixture, ``-mean_i log (1/n) sum_k p_k(y_i | x_i)``.

    ``outputs`` [n, B, ...]: logits (classification) or the regression outputs.
    """
    n = outputs.shape[0]
    if task.is_classification:
        log_p = outputs.log_softmax(-1).gather(-1, y.view(1, -1, 1).expand(n, -1, 1))[..., 0]
    else:
        mean, log_var = regression_outputs(outputs, task)
        log_p = -0.5 * (
            log_var + math.log(2 * math.pi) + (y.view(1, -1) - mean) ** 2 / log_var.exp()
        )
    return -float((torch.logsumexp(log_p, dim=0) - math.log(n)).mean())


class HyperGAN(WeightSampler[HyperGANConfig]):
    """The paper's HyperGAN: 512-wide generators, 32 nets x 32 images, wd 1e-4, pre-trained mixer.

    Mixer, per-layer generators with a plain output bias and a code discriminator, Adam
    (0.5, 0.9) at 5e-4 (mixer) / 1e-4 (generators, D), constant (Ratzlaff & Li 2019 and
    the authors' MNIST-5000 script). Additions: the generators' output rescaled once at
    init to 0.5 x Kaiming; keep-best by validation NLL on the benchmark's validation split
    (without one, the last state). ``history`` rows: see :meth:`_validate`.
    """

    name = "hypergan"
    Config = HyperGANConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # The paper's model on a shorter budget for the default (quick) benchmark.
        "mnist5k-split": {"steps": 300, "val_every": 100},
        "toy1d": {"steps": 1000, "batch_size": 20, "val_every": 250},
        # The paper's CIFAR sizes: a 512-d noise and 256-d codes per layer.
        **{
            name: {"noise_dim": 512, "code_dim": 256}
            for name in ("cifar5", "cifar10", "cifar5-jpeg", "cifar10-jpeg")
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
        self.specs = layer_specs(self.target)
        self.history: list[dict[str, float]] = []
        self._fitted = False
        self._build()

    # --- construction -----------------------------------------------------------------
    def _make_generator(self, n_out: int) -> LayerGenerator:
        return LayerGenerator(self.config.code_dim, self.config.generator_hidden, n_out)

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
            self._make_generator(sum(spec.sizes)) for spec in self.specs
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
            raise UserError(f"{self.name}: call fit (or load_state_dict) before sample")
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
        for key in _ARCHITECTURE:
            if saved.get(key) != getattr(self.config, key):
                raise UserError(
                    f"{self.name}: checkpoint has {key}={saved.get(key)}, this sampler "
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
        re-estimated and a ``history`` row. With ``val`` and ``keep_best``, the state with
        the lowest validation NLL is kept (ties go to the later state); without ``val``,
        the last state.
        """
        c = self.config
        seeds = derive_seeds(seed, ("init", "noise", "data"))
        torch.manual_seed(seeds["init"])
        self._build()
        g = seeded_generator(seeds["noise"])
        data_g = seeded_generator(seeds["data"])
        x_tr, y_tr = (t.to(self.device) for t in as_tensors(train))
        held_out = None
        if val is not None and len(val) > 0:
            subset = random_subset(as_tensors(val), c.val_max_examples, c.val_subset_seed)
            held_out = tuple(t.to(self.device) for t in subset)
        n_train = x_tr.shape[0]

        if c.mixer and c.pretrain_steps > 0:
            self._pretrain_mixer(g)
        self._calibrate_output_scale(g)

        opt_g, opt_d = self._optimizers()
        schedulers = [
            torch.optim.lr_scheduler.LambdaLR(
                o, lambda step: lr_factor(c.lr_schedule, step, c.steps)
            )
            for o in (opt_g, opt_d)
            if o is not None
        ]
        self.history = []
        selecting = c.keep_best and held_out is not None
        best_nll, best_state, best_step = math.inf, None, c.steps
        batches = MinibatchSampler(n_train, c.batch_size, [data_g])
        self._hypernet().train()
        for step in range(0, c.steps + 1):
            if step > 0:
                idx = batches.next()[0].to(self.device)
                losses = self._step(x_tr[idx], y_tr[idx], opt_g, opt_d, g)
                check_finite(self.name, losses, step)
                for s in schedulers:
                    s.step()
                if progress is not None and (step % 10 == 0 or step == c.steps):
                    progress(step, c.steps, **losses)
            if step % c.val_every == 0 or step == c.steps:
                row = {"step": float(step), **self._validate(held_out)}
                self.history.append(row)
                if progress is not None:
                    progress(
                        step,
                        c.steps,
                        **{k: v for k, v in row.items() if k != "step" and "/" not in k},
                    )
                if selecting and row["val_nll"] <= best_nll:  # ties: the later state
                    best_nll, best_step = row["val_nll"], step
                    best_state = copy.deepcopy(self._hypernet().state_dict())
        if best_state is not None:
            self._hypernet().load_state_dict(best_state)
        self._fitted = True
        self._record_fit(best_step, selecting)

    def _record_fit(self, kept_step: int, selected: bool) -> None:
        """``extra_metrics``: the fit's length, which state was kept and its diagnostics."""
        kept = next((h for h in self.history if h["step"] == kept_step), self.history[-1])
        self.extra_metrics = {
            "fit_steps": float(self.config.steps),
            "best_step": float(kept_step),
            "kept_best": 1.0 if selected else 0.0,
            "diversity_l2_rel_std_fit": kept["diversity"],
        }
        for key in ("val_nll", "val_acc", "val_disagreement"):
            if key in kept:
                self.extra_metrics[key] = kept[key]

    def _optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer | None]:
        c = self.config
        # fused: one kernel per step instead of ~10 per tensor; Adam was ~30 % of a CPU step.
        kw = {"betas": (c.adam_beta1, c.adam_beta2), "weight_decay": c.weight_decay, "fused": True}
        groups = self._generator_groups()
        if self.mixer is not None:
            groups.append({"params": list(self.mixer.parameters()), "lr": c.lr_mixer})
        opt_g = torch.optim.Adam(groups, **kw)
        opt_d = (
            torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_discriminator, **kw)
            if self.discriminator is not None
            else None
        )
        return opt_g, opt_d

    def _generator_groups(self) -> list[dict[str, Any]]:
        """Adam parameter groups of the generators: all at ``lr_generator``."""
        return [{"params": list(self.generators.parameters()), "lr": self.config.lr_generator}]

    def _function_term(self, outputs: Tensor, y: Tensor) -> Tensor | None:
        """An extra loss on the step's network outputs [n, B, ...]; none in the paper."""
        return None

    def _step(
        self,
        x: Tensor,
        y: Tensor,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer | None,
        g: torch.Generator,
    ) -> dict[str, float]:
        """One step: discriminator update, then mixer + generators on task loss + beta * adv.

        Returns the step's losses by name (``task``, and ``adversarial``, ``discriminator``
        with a discriminator, plus any function-space term).
        """
        c = self.config
        codes = self.codes(self._draw_noise(c.noise_batch, g))
        losses: dict[str, float] = {}
        total = torch.zeros((), device=self.device)
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
            losses["discriminator"] = d_loss.item()
            # Non-saturating generator term: -log sigma(D(z)); D's grads are not stepped.
            adv = F.softplus(-self.discriminator(fake)).mean()
            losses["adversarial"] = adv.item()
            total = total + c.beta * adv
        weights = self.weights_from_codes(codes, c.nets_per_step)
        outputs = stacked_forward(self.target, weights, x)
        loss = task_loss(outputs, y, self.task).mean()
        losses["task"] = loss.item()
        total = total + loss
        extra = self._function_term(outputs, y)
        if extra is not None:
            losses["repulsion"] = extra.item()
            total = total + extra
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        opt_g.step()
        return losses

    @torch.no_grad()
    def _calibrate_output_scale(self, g: torch.Generator) -> None:
        """Rescale each generator's output so its first weights have std init_scale x Kaiming."""
        c = self.config
        codes = self.codes(self._draw_noise(max(c.noise_batch, 64), g))
        for i, (spec, gen) in enumerate(zip(self.specs, self.generators, strict=True)):
            raw = gen(codes[:, i])[:, : spec.sizes[0]]
            gen.rescale_output(c.init_scale * spec.kaiming_std / raw.std().clamp_min(1e-12).item())

    def _pretrain_mixer(self, g: torch.Generator) -> None:
        """Fit the mixer so each layer's codes have mean 0 and covariance I (the paper's
        optional pre-training); stop early once the per-entry loss is below tolerance."""
        c = self.config
        opt = torch.optim.Adam(
            self.mixer.parameters(), lr=c.lr_mixer, betas=(c.adam_beta1, c.adam_beta2)
        )
        entries = len(self.specs) * c.code_dim  # the loss per code dimension
        for step in range(1, c.pretrain_steps + 1):
            loss = code_moment_loss(self.codes(self._draw_noise(c.pretrain_batch, g)))
            check_finite(self.name, {"mixer pre-training": loss}, step)
            if float(loss.detach()) / entries < c.pretrain_tolerance:
                break
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
    def _validate(self, held_out: tuple[Tensor, Tensor] | None) -> dict[str, float]:
        """One ``history`` row: weight-space diagnostics of ``diversity_samples`` networks
        and, with validation data, the NLL, accuracy and pairwise disagreement of the first
        ``val_nets`` of them."""
        c = self.config
        self._recalibrate_batchnorm()
        self._fitted = True
        draw = self.sample(max(c.val_nets, c.diversity_samples), generator=seeded_generator(1))
        norms = flat_weight_norms(draw)
        row = {"diversity": float(norms.std() / norms.mean()), **weight_spread(draw, self.specs)}
        if held_out is not None:
            x_val, y_val = held_out
            few = {k: v[: c.val_nets] for k, v in draw.items()}
            out = batched_predict(self.target, few, x_val, memory_budget=VALIDATION_MEMORY)
            row["val_nll"] = ensemble_nll(out, y_val, self.task)
            if self.task.is_classification:
                mean = out.softmax(-1).mean(0)
                row["val_acc"] = float((mean.argmax(-1) == y_val).float().mean())
                if c.val_nets >= 2:
                    row["val_disagreement"] = pairwise_disagreement(out)
        self._hypernet().train()
        return row
