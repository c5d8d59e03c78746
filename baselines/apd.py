r"""APD: adversarial posterior distillation (Wang et al., ICML 2018).

A *teacher* draws posterior samples of the target's weights θ ∈ R^D with SGLD
(:mod:`uqbench.baselines.apd_sgld`: C chains, the authors' step size η = 0.025 and prior
σ_p ≈ 0.14), and a *student* generator G: (z, c) ↦ θ, z ~ N(0, I), is trained with
WGAN-GP (:mod:`uqbench.baselines.apd_gan`: λ = 10, 5 critic steps per generator step,
Adam β = (0.5, 0.9)) to match the distribution of the teacher's kept samples. Sampling =
generator output reshaped into the target's parameters.

After ``burn_in`` steps every chain keeps a sample every ``thin`` steps in a ring buffer
of its latest ``buffer_size`` samples. The GAN then trains ``final_gan_iters``
iterations on the kept samples (:meth:`APD.distill`), as the authors' released
``gan.py`` does with the SGLD samples saved to disk.

Coordinates of the GAN (``coordinates``):

- ``"span"`` (default): raw weights, written in an orthonormal basis V ``[r, D]`` of the
  span of the teacher's kept samples (thin SVD of the pooled ``[C·K, D]`` buffer, r ≤ C·K):
  u = V θ, θ = Vᵀ u. Every kept sample lies in that span, so the coordinates are exact
  for the teacher, and V is orthonormal, so distances — hence the critic's 1-Lipschitz
  constraint and the Wasserstein distance — are those of raw weights. This is the
  authors' raw-weight GAN with the generator's last layer and the critic's first layer
  factored through V; it costs r instead of D (31.6k on the MNIST CNN) inputs, which is
  what lets the critic be as wide as the authors' (theirs: 100 wide on 79.5k raw weights)
  at ~30 ms per GAN iteration on one CPU thread. The student learns its location, spread
  and correlations from the critic; only the subspace comes from the teacher, so a
  student network is a combination of the kept samples (rank ≤ C·K).
- ``"raw"``: the same GAN on θ itself (the authors' setting; D inputs to the critic,
  over a second per iteration at width 100 on the MNIST CNN, so not validated here).
- ``"standardized"`` (the earlier variant): u = (θ − m_c) / s_c with m_c, s_c the
  per-weight mean and std of chain c's buffer, θ = m_c + s_c ⊙ u: the student's
  per-chain mean and per-weight spread are copied from the teacher and the GAN only
  shapes the standardised residual.

``warm_start`` sets the generator's per-chain output bias so that G(0, c) is chain c's
mean kept sample (in the GAN's coordinates) before training — a data-dependent
initialisation, trained from there like every other weight.

Departures from the paper, and why (numbers: MNIST-5k, 4,500 training images, one
teacher, students selected on 250 validation images and scored on 250 others;
``results/apd_dev/validation_probes.md``):

- A mixture over chains: independent chains sit in different modes, and their average
  is not a network, so generator and critic are conditioned on the chain (one-hot c
  appended to their inputs, plus a per-chain output bias) and the student is the uniform
  mixture over chains. With ``chains=1`` this is the paper's unconditional GAN.
- Span coordinates instead of raw ones: the same geometry at ~1/150 of the critic's
  cost on the MNIST CNN. The earlier "standardized" variant is kept as an option only:
  it was worse on validation (single-network accuracy 95.2 % vs 96.0 %, NLL of 100
  networks 0.121 vs 0.108; the teacher: 95.7 %, 0.114) and its critic diverged after
  ~100 iterations.
- ``warm_start``: selection NLL 0.159 vs 0.165 without it, at 2,000 iterations.
- Generator and critic are MLPs with 3 hidden layers as in the authors' code, 256 wide
  instead of 100; 5,000 generator steps (the authors: 10⁵; selection NLL 0.154 vs 0.159
  at 2,000) with Adam at 1e-3 (theirs: 1e-4).
- The GAN runs after SGLD, not interleaved with it (the paper's Algorithm 1; the
  authors' MNIST commands run it afterwards too).
- Keep-best on the validation split (below); the authors' code saved the last generator.

Validation (``val`` in :meth:`APD.fit`): every ``val_every`` GAN iterations the
student's predictive NLL on ``val`` (``DIAGNOSTIC_NETS`` networks, the same noise each
time) is measured, and the generator with the lowest is kept. Without ``val`` (a
benchmark without a validation split) nothing is selected and the last generator is
kept. Teacher and student are scored on ``val`` in ``extra_metrics`` (on the first
``DIAGNOSTIC_EXAMPLES`` training examples without it); :meth:`APD.teacher_view` lets a
harness score the teacher exactly like the student.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from uqbench.baselines.apd_gan import WGANGP, Critic, Generator, gradient_penalty
from uqbench.baselines.apd_sgld import SGLDChains, initial_chains
from uqbench.configs import (
    CheckedConfig,
    Choice,
    IntRange,
    LogUniform,
    at_least,
    non_negative,
    one_of,
    positive,
    setting,
)
from uqbench.errors import FitDiverged, UserError
from uqbench.functional import batched_predict
from uqbench.sampler import Progress, Task, WeightSampler
from uqbench.targets import parametric_layers
from uqbench.training import (
    MinibatchSampler,
    as_tensors,
    check_finite,
    derive_seeds,
    regression_outputs,
    seeded_generator,
)

__all__ = ["APD", "APDConfig", "APDTeacher", "gradient_penalty"]


@dataclass
class APDConfig(CheckedConfig):
    """Settings of :class:`APD` (defaults: the small CNN on MNIST-5k)."""

    owner: ClassVar[str] = "apd"

    # --- teacher: SGLD ---------------------------------------------------------------
    #: Number of SGLD chains run at once.
    chains: int = setting(4, check=at_least(1))
    #: SGLD steps per chain (burn-in included).
    steps: int = setting(2000, check=at_least(1), search=IntRange(1000, 10000, log=True))
    #: Steps discarded before the first kept sample.
    burn_in: int = setting(1000, check=non_negative)
    #: Keep one sample per chain every ``thin`` steps after burn-in.
    thin: int = setting(20, check=at_least(1))
    #: Most recent kept samples held per chain (the GAN's data and the teacher's ensemble).
    buffer_size: int = setting(50, check=at_least(2))
    #: η: SGD learning rate on the mean minibatch loss (ε = 2η/N); the authors' 0.025.
    step_size: float = setting(0.025, check=positive, search=LogUniform(0.005, 0.1))
    #: Minibatch size per chain.
    batch_size: int = setting(100, check=at_least(1))
    #: σ_p of the N(0, σ_p² I) prior on every weight; the authors' ≈ 0.14.
    prior_std: float = setting(0.14, check=positive, search=LogUniform(0.05, 1.0))
    #: T: 1 = the posterior; < 1 a "cold" posterior with less injected noise.
    temperature: float = setting(1.0, check=non_negative)
    # --- student: WGAN-GP --------------------------------------------------------------
    #: The GAN's coordinates: "span", "raw" or "standardized" (module docstring).
    coordinates: str = setting("span", check=one_of("span", "raw", "standardized"))
    #: Start each chain's output bias at its mean kept sample (in the GAN's coordinates).
    warm_start: bool = True
    #: Dimension of the generator's input noise z ~ N(0, I) (the authors' 32).
    noise_dim: int = setting(32, check=at_least(1))
    #: Width and number of the generator's hidden layers.
    gen_hidden: int = setting(256, check=at_least(1), search=Choice((128, 256, 512)))
    gen_layers: int = setting(3, check=at_least(1))
    #: Width and number of the critic's hidden layers.
    critic_hidden: int = setting(256, check=at_least(1))
    critic_layers: int = setting(3, check=at_least(1))
    #: Weight sets per GAN batch (real and fake alike); the authors' 32.
    gan_batch: int = setting(32, check=at_least(1))
    #: Critic updates per generator update.
    critic_steps: int = setting(5, check=at_least(1))
    #: λ of the gradient penalty.
    gp_weight: float = setting(10.0, check=non_negative)
    #: Adam learning rates of generator and critic.
    gen_lr: float = setting(1e-3, check=positive, search=LogUniform(1e-4, 3e-3))
    critic_lr: float = setting(1e-3, check=positive, search=LogUniform(1e-4, 3e-3))
    #: GAN iterations on the final buffer after the teacher stops.
    final_gan_iters: int = setting(5000, check=non_negative, search=IntRange(500, 20000, log=True))
    #: Score the student on ``val`` every this many GAN iterations (keep-best).
    val_every: int = setting(500, check=at_least(1))
    # --- diagnostics -----------------------------------------------------------------
    #: Call ``progress`` every this many steps.
    log_every: int = setting(50, check=at_least(1))

    def check_together(self) -> None:
        if (self.steps - self.burn_in) // self.thin < 2:
            raise UserError(
                f"apd: the teacher keeps fewer than 2 samples per chain (steps={self.steps}, "
                f"burn_in={self.burn_in}, thin={self.thin}); raise apd.steps or lower "
                "apd.burn_in / apd.thin"
            )


#: Networks (teacher and student each) behind the accuracies and NLLs ``fit`` reports.
DIAGNOSTIC_NETS = 20
#: Training examples those scores use when there is no validation split.
DIAGNOSTIC_EXAMPLES = 500


class APD(WeightSampler[APDConfig]):
    """SGLD teacher distilled into a WGAN-GP generator over the flat weight vector."""

    name: ClassVar[str] = "apd"
    Config: ClassVar[type] = APDConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "toy1d": {
            "chains": 8,
            "steps": 4000,
            "burn_in": 1000,
            "thin": 25,
            "buffer_size": 50,
            "step_size": 0.01,
            "prior_std": 1.0,
            "batch_size": 20,
            "noise_dim": 16,
            "gen_hidden": 128,
            "critic_hidden": 64,
            "gen_lr": 1e-4,
            "critic_lr": 1e-4,
            # the GAN iterations it had when 1,000 of them ran online, now all after SGLD
            "final_gan_iters": 1500,
        },
        "mnist5000": {},  # the defaults
    }

    def __init__(
        self,
        target: nn.Module,
        config: APDConfig | None = None,
        *,
        task: Task | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(target, config, task=task, device=device)
        parametric_layers(self.target)  # UserError for parameters we cannot sample
        self._shapes = self.param_shapes()
        self._dim = sum(math.prod(s) for s in self._shapes.values())
        #: The student's coordinates (θ = coords.decode(G(z, c), c)); None before fit.
        self.coords: Coordinates | None = None
        self.generator: Generator | None = None
        #: The teacher's kept samples, flat, per chain ``[C, K, D]``; None before fit.
        self.teacher: Tensor | None = None

    # --- the contract ------------------------------------------------------------------
    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Run the SGLD teacher, then distill its kept samples (:meth:`distill`).

        Chain c reads the training set in epochs of its own shuffled order. Raises
        :class:`~uqbench.errors.FitDiverged` when the SGLD, critic or generator loss
        stops being finite. ``extra_metrics`` afterwards: those of :meth:`distill`, plus
        ``teacher_samples`` and ``teacher_s`` (wall time of the SGLD part).
        """
        cfg = self.config
        data_streams = tuple(f"data{c}" for c in range(cfg.chains))
        seeds = derive_seeds(seed, ("init", "sgld", "distill", *data_streams))
        x, y = (t.to(self.device) for t in as_tensors(train))
        if len(x) < 1:
            raise UserError("apd: the training set is empty")
        batches = MinibatchSampler(
            len(x), cfg.batch_size, [seeded_generator(seeds[s]) for s in data_streams]
        )
        theta = initial_chains(
            self.target,
            list(self._shapes),
            cfg.chains,
            seeded_generator(seeds["init"], self.device),
        )
        teacher = SGLDChains(
            self.target,
            self._unflatten,
            theta,
            self.task,
            n_train=len(x),
            step_size=cfg.step_size,
            prior_std=cfg.prior_std,
            temperature=cfg.temperature,
            rng=seeded_generator(seeds["sgld"], self.device),
        )
        buffer = torch.empty(cfg.chains, cfg.buffer_size, self._dim, device=self.device)
        filled, head = 0, 0
        total = cfg.steps + cfg.final_gan_iters
        t0 = time.perf_counter()
        for step in range(1, cfg.steps + 1):
            index = batches.next().to(self.device)
            loss = teacher.step(x[index], y[index])
            check_finite("apd", {"SGLD": loss}, step)
            if step > cfg.burn_in and (step - cfg.burn_in) % cfg.thin == 0:
                if not torch.isfinite(teacher.theta).all():
                    raise FitDiverged(
                        f"apd: the SGLD weights became non-finite at step {step}; "
                        f"lower apd.step_size (now {cfg.step_size})"
                    )
                buffer[:, head] = teacher.theta  # ring buffer: overwrite the oldest sample
                head = (head + 1) % cfg.buffer_size
                filled = min(filled + 1, cfg.buffer_size)
            if progress is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                progress(step, total, sgld_nll=float(loss.mean()), kept=filled * cfg.chains)
        teacher_s = time.perf_counter() - t0
        shifted = None if progress is None else _offset(progress, cfg.steps, total)
        self.distill(
            buffer[:, :filled],
            seed=seeds["distill"],
            val=val,
            progress=shifted,
            scoring=(x[:DIAGNOSTIC_EXAMPLES], y[:DIAGNOSTIC_EXAMPLES]),
        )
        self.extra_metrics.update(teacher_samples=float(filled * cfg.chains), teacher_s=teacher_s)

    def distill(
        self,
        samples: Tensor,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
        scoring: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        """Train the student on the teacher's kept samples ``[C, K, D]`` (flat weights, in
        ``named_parameters`` order; chain c's samples in row c), and keep them as the teacher.

        ``final_gan_iters`` WGAN-GP iterations in the configured coordinates; with ``val``,
        keep-best on the student's validation NLL every ``val_every`` iterations.
        ``scoring``: ``(x, y)`` to score on when ``val`` is None (default: none; ``fit``
        passes its first ``DIAGNOSTIC_EXAMPLES`` training examples). ``extra_metrics``
        afterwards (accuracies as fractions, on ``val``, or with suffix ``_train`` on
        ``scoring``):

        - ``teacher_acc`` / ``student_acc``: accuracy of the mean softmax over
          ``DIAGNOSTIC_NETS`` teacher samples / student networks; ``teacher_acc1`` /
          ``student_acc1``: mean accuracy of one network; ``teacher_nll`` /
          ``student_nll``: NLL of the mean softmax; ``agreement``: share of points where
          the two predictives agree (regression: ``teacher_rmse`` / ``student_rmse``);
        - ``selected_gan_iter``: the iteration keep-best chose (the last without ``val``);
        - ``critic_gap`` (E f(teacher) − E f(student), the final critic's Wasserstein
          estimate), ``std_ratio`` (median over coordinates of std(student) /
          std(teacher)), ``gan_s`` (wall time).
        """
        cfg = self.config
        if samples.ndim != 3 or samples.shape[0] != cfg.chains or samples.shape[2] != self._dim:
            raise UserError(
                f"apd.distill takes samples [chains={cfg.chains}, K, D={self._dim}]; "
                f"got {tuple(samples.shape)}"
            )
        if samples.shape[1] < 2:
            raise UserError("apd.distill needs at least 2 samples per chain")
        seeds = derive_seeds(seed, ("modules", "gan"))
        t0 = time.perf_counter()
        self.teacher = samples.detach().to(self.device).clone()
        self.coords = Coordinates.fit(cfg.coordinates, self.teacher)
        u = self.coords.encode(self.teacher)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds["modules"] % 2**63)
            self.generator = Generator(
                cfg.noise_dim, cfg.chains, cfg.gen_hidden, cfg.gen_layers, self.coords.dim
            ).to(self.device)
            critic = Critic(self.coords.dim, cfg.chains, cfg.critic_hidden, cfg.critic_layers)
        if cfg.warm_start:
            self.generator.set_chain_bias(u.mean(1))
        gan = WGANGP(
            self.generator,
            critic.to(self.device),
            gen_lr=cfg.gen_lr,
            critic_lr=cfg.critic_lr,
            batch=cfg.gan_batch,
            critic_steps=cfg.critic_steps,
            gp_weight=cfg.gp_weight,
            rng=seeded_generator(seeds["gan"], self.device),
        )
        if val is not None:
            x_val, y_val = self._tensors_of(val)
            suffix = ""
        else:
            x_val, y_val = scoring if scoring is not None else (None, None)
            suffix = "_train"
        scorer = _KeepBest(self, x_val, y_val) if val is not None else None
        last: dict[str, float] = {}
        for it in range(1, cfg.final_gan_iters + 1):
            last = gan.iteration(u)
            if scorer is not None and (it % cfg.val_every == 0 or it == cfg.final_gan_iters):
                last["val_nll"] = scorer.offer(it)
            if progress is not None and (it % cfg.log_every == 0 or it == cfg.final_gan_iters):
                progress(it, cfg.final_gan_iters, **last)
        selected = scorer.restore() if scorer is not None else cfg.final_gan_iters
        self.generator.eval()
        self.extra_metrics = {
            "gan_s": time.perf_counter() - t0,
            "selected_gan_iter": float(selected),
            "critic_gap": gan.critic_gap(u),
            "std_ratio": self._std_ratio(u),
        }
        if x_val is not None:
            self.extra_metrics.update(self._diagnostics(x_val, y_val, suffix))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``n`` student networks θ_i = decode(G(z_i, c_i)), z_i ~ N(0, I), chain
        c_i = (o + i) mod C for a random offset o: a stratified draw from the uniform
        mixture over chains. All noise is drawn on the CPU with ``generator``."""
        self.check_n(n)
        coords, net = self._fitted()
        offset = torch.randint(self.config.chains, (1,), generator=generator)
        chain = ((offset + torch.arange(n)) % self.config.chains).to(self.device)
        z = torch.randn(n, self.config.noise_dim, generator=generator).to(self.device)
        with torch.no_grad():
            flat = coords.decode(net(z, chain), chain)
        return self._unflatten(flat)

    def teacher_sample(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """``n`` of the teacher's kept SGLD samples (all chains pooled), without replacement.

        For scoring the teacher exactly like the student; ``n`` may be at most the number
        of kept samples (``extra_metrics["teacher_samples"]``).
        """
        teacher = self._teacher().flatten(0, 1)
        if n < 1 or n > len(teacher):
            raise UserError(
                f"apd: asked for {n} teacher samples but the teacher kept {len(teacher)}; "
                f"use 1..{len(teacher)} or raise apd.buffer_size / apd.chains"
            )
        order = torch.randperm(len(teacher), generator=generator)[:n].to(self.device)
        return self._unflatten(teacher[order].clone())

    def teacher_view(self) -> APDTeacher:
        """The teacher's kept samples as a sampler, e.g. ``evaluate(apd.teacher_view(), data,
        n_samples=100, seed=0)`` scores the teacher exactly like the student."""
        self._teacher()
        return APDTeacher(self)

    def reference_views(self) -> dict[str, WeightSampler]:
        """The teacher, so every comparison shows an ``apd:teacher`` row beside ``apd``."""
        return {"teacher": self.teacher_view()}

    def state_dict(self) -> dict:
        """Generator weights, the coordinates, the teacher's buffer, the config."""
        coords, net = self._fitted()
        return {
            "generator": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "coords": {k: v.cpu() for k, v in coords.tensors.items()},
            "teacher": self._teacher().cpu(),
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: dict) -> None:
        known = {f.name for f in dataclasses.fields(APDConfig)}
        unknown = sorted(set(state.get("config", {})) - known)
        if unknown or "coords" not in state:
            raise UserError(
                "apd checkpoint was written by another version of apd "
                f"(unknown settings: {', '.join(unknown) or 'none'}); refit it"
            )
        teacher = state["teacher"]
        if teacher.shape[-1] != self._dim:
            raise UserError(
                f"apd checkpoint holds {teacher.shape[-1]} weights per network but the "
                f"target has {self._dim}; load it with the target it was trained with"
            )
        config = APDConfig(**state["config"])
        tensors = {k: v.to(self.device) for k, v in state["coords"].items()}
        coords = Coordinates(config.coordinates, tensors, self._dim)
        generator = Generator(
            config.noise_dim, config.chains, config.gen_hidden, config.gen_layers, coords.dim
        ).to(self.device)
        generator.load_state_dict(state["generator"])
        generator.eval()
        self.config, self.coords, self.generator = config, coords, generator
        self.teacher = teacher.to(self.device)

    def num_stored_parameters(self) -> int:
        """Numbers needed to sample the student: the generator's weights and the
        coordinates' (the basis, or the per-chain mean and std); the teacher's buffer is
        kept for diagnostics only and is not counted."""
        coords, net = self._fitted()
        return sum(p.numel() for p in net.parameters()) + coords.num_parameters()

    # --- diagnostics -------------------------------------------------------------------
    def _tensors_of(self, val: Dataset) -> tuple[Tensor, Tensor]:
        x_val, y_val = as_tensors(val)
        if len(x_val) < 1:
            raise UserError("apd: the validation split is empty; pass val=None or add data")
        return x_val.to(self.device), y_val.to(self.device)

    @torch.no_grad()
    def _std_ratio(self, u: Tensor) -> float:
        """Median over coordinates of std(student) / std(teacher), per chain, pooled."""
        chains, kept = u.shape[:2]
        chain = torch.arange(chains, device=u.device).repeat_interleave(kept)
        z = torch.randn(
            len(chain), self.config.noise_dim, generator=torch.Generator().manual_seed(1)
        )
        fake = self._fitted()[1](z.to(self.device), chain).view_as(u)
        return float((fake.std(1) / u.std(1).clamp_min(1e-12)).median())

    @torch.no_grad()
    def _diagnostics(self, x: Tensor, y: Tensor, suffix: str) -> dict[str, float]:
        """See :meth:`distill`; ``DIAGNOSTIC_NETS`` networks each, so that it stays cheap."""
        out: dict[str, float] = {}
        draw = torch.Generator().manual_seed(0)
        k = min(DIAGNOSTIC_NETS, len(self._teacher().flatten(0, 1)))
        nets = {
            "teacher": self.teacher_sample(k, generator=draw),
            "student": self.sample(k, generator=draw),
        }
        if self.task.is_classification:
            preds = {}
            for who, w in nets.items():
                probs = batched_predict(self.target, w, x, transform=lambda o: o.softmax(-1))
                out.update(_classification_scores(who, probs, y, suffix))
                preds[who] = probs.mean(0).argmax(1)
            out[f"agreement{suffix}"] = float((preds["teacher"] == preds["student"]).float().mean())
        else:
            for who, w in nets.items():
                mu, _ = regression_outputs(batched_predict(self.target, w, x), self.task)
                out[f"{who}_rmse{suffix}"] = float((mu.mean(0) - y).pow(2).mean().sqrt())
        return out

    # --- plumbing ----------------------------------------------------------------------
    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``[n, D]`` -> name -> ``[n, *shape]`` (views, in ``named_parameters`` order)."""
        sizes = [math.prod(s) for s in self._shapes.values()]
        pieces = flat.split(sizes, dim=1)
        return {
            k: v.view(len(flat), *s) for (k, s), v in zip(self._shapes.items(), pieces, strict=True)
        }

    def _fitted(self) -> tuple[Coordinates, Generator]:
        if self.coords is None or self.generator is None:
            raise UserError("apd is not fitted; call fit or load a checkpoint first")
        return self.coords, self.generator

    def _teacher(self) -> Tensor:
        if self.teacher is None:
            raise UserError("apd is not fitted; call fit or load a checkpoint first")
        return self.teacher


class Coordinates:
    """The map between flat weights θ ``[..., D]`` and the GAN's coordinates u (module
    docstring): ``"span"`` (an orthonormal basis ``[r, D]`` of the kept samples' span),
    ``"raw"`` (θ itself) or ``"standardized"`` (per-chain mean and std ``[C, D]``)."""

    def __init__(self, kind: str, tensors: dict[str, Tensor], dim: int) -> None:
        self.kind, self.tensors = kind, tensors
        #: Dimension of u: the basis' rank for "span", else D.
        self.dim = tensors["basis"].shape[0] if kind == "span" else dim

    @classmethod
    def fit(cls, kind: str, samples: Tensor) -> Coordinates:
        """Coordinates for the kept samples ``[C, K, D]``."""
        if kind == "span":
            _, sv, vh = torch.linalg.svd(samples.flatten(0, 1), full_matrices=False)
            rank = int((sv > sv[0] * 1e-5).sum())
            return cls(kind, {"basis": vh[:rank].contiguous()}, rank)
        if kind == "standardized":
            std = samples.std(1, correction=0)
            # A coordinate that has not moved gets a tenth of its chain's typical spread.
            floor = 0.1 * std.mean(1, keepdim=True).clamp_min(1e-8)
            tensors = {"mean": samples.mean(1), "std": torch.maximum(std, floor)}
            return cls(kind, tensors, samples.shape[-1])
        return cls(kind, {}, samples.shape[-1])

    def encode(self, samples: Tensor) -> Tensor:
        """``[C, K, D]`` -> ``[C, K, dim]``."""
        if self.kind == "span":
            return samples @ self.tensors["basis"].T
        if self.kind == "standardized":
            return (samples - self.tensors["mean"][:, None]) / self.tensors["std"][:, None]
        return samples

    def decode(self, u: Tensor, chain: Tensor) -> Tensor:
        """``[n, dim]`` of chains ``chain [n]`` -> flat weights ``[n, D]``."""
        if self.kind == "span":
            return u @ self.tensors["basis"]
        if self.kind == "standardized":
            return self.tensors["mean"][chain] + self.tensors["std"][chain] * u
        return u

    def num_parameters(self) -> int:
        return sum(v.numel() for v in self.tensors.values())


def student_nll(apd: APD, x: Tensor, y: Tensor, n: int, seed: int) -> float:
    """NLL of the student's predictive on ``(x, y)`` with ``n`` networks drawn with ``seed``
    (classification: −log of the mean softmax; regression: of the Gaussian mixture)."""
    weights = apd.sample(n, generator=torch.Generator().manual_seed(seed))
    outputs = batched_predict(apd.target, weights, x)
    if apd.task.is_classification:
        log_p = outputs.log_softmax(-1).gather(-1, y.view(1, -1, 1).expand(n, -1, 1))[..., 0]
    else:
        mu, log_var = regression_outputs(outputs, apd.task)
        log_p = -0.5 * (log_var + math.log(2 * math.pi) + (y - mu) ** 2 / log_var.exp())
    return float(-(log_p.logsumexp(0) - math.log(n)).mean())


class _KeepBest:
    """Keeps the generator whose student has the lowest NLL on the validation split."""

    def __init__(self, apd: APD, x: Tensor, y: Tensor) -> None:
        self.apd, self.x, self.y = apd, x, y
        self.best = math.inf
        self.best_iter = 0
        self.state: dict[str, Tensor] | None = None

    def offer(self, iteration: int) -> float:
        self.apd.generator.eval()
        with torch.no_grad():
            nll = student_nll(self.apd, self.x, self.y, DIAGNOSTIC_NETS, seed=0)
        self.apd.generator.train()
        if nll < self.best:
            self.best, self.best_iter = nll, iteration
            self.state = copy.deepcopy(self.apd.generator.state_dict())
        return nll

    def restore(self) -> int:
        if self.state is not None:
            self.apd.generator.load_state_dict(self.state)
        return self.best_iter


def _classification_scores(who: str, probs: Tensor, y: Tensor, suffix: str) -> dict[str, float]:
    """Accuracy and NLL of the mean softmax, and one network's mean accuracy."""
    mean = probs.mean(0)
    nll = -mean.gather(1, y.view(-1, 1)).clamp_min(1e-12).log().mean()
    return {
        f"{who}_acc{suffix}": float((mean.argmax(1) == y).float().mean()),
        f"{who}_acc1{suffix}": float((probs.argmax(-1) == y).float().mean()),
        f"{who}_nll{suffix}": float(nll),
    }


def _offset(progress: Progress, done: int, total: int) -> Progress:
    """``progress`` for a later phase: its step ``i`` is reported as ``done + i`` of ``total``."""

    def report(step: int, _: int, **metrics: float) -> None:
        progress(done + step, total, **metrics)

    return report


class APDTeacher(WeightSampler[APDConfig]):
    """A fitted :class:`APD`'s teacher: ``sample(n)`` = n of its kept SGLD samples, drawn
    without replacement (n ≤ the samples kept = ``max_samples``). Not fitted on its own."""

    name: ClassVar[str] = "apd-teacher"
    Config: ClassVar[type] = APDConfig

    def __init__(self, apd: APD) -> None:
        super().__init__(apd.target, apd.config, task=apd.task, device=apd.device)
        self.apd = apd
        self.max_samples = int(apd._teacher().shape[0] * apd._teacher().shape[1])

    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        raise UserError("apd-teacher is a view of a fitted APD; fit the APD instead")

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        self.check_n(n)
        return self.apd.teacher_sample(n, generator=generator)

    def state_dict(self) -> dict:
        return self.apd.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.apd.load_state_dict(state)
        self.max_samples = int(self.apd._teacher().shape[0] * self.apd._teacher().shape[1])
