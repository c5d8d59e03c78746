r"""APD: adversarial posterior distillation (Wang et al., ICML 2018).

A *teacher* draws posterior samples of the target's weights θ ∈ R^D with stochastic
gradient Langevin dynamics (SGLD; Welling & Teh 2011), and a *student* generator
G: z ~ N(0, I) ↦ θ is trained, while the teacher runs, to match the distribution of the
teacher's kept samples with WGAN-GP (Gulrajani et al. 2017). Sampling = generator output
reshaped into the target's parameters.

Teacher (per chain; prior N(0, σ_p² I), N training examples, temperature T)::

    U(θ)  = N · L̄_B(θ) + ‖θ‖² / (2σ_p²)          L̄_B = mean NLL of a minibatch B
    θ    ← θ − (ε/2) ∇U(θ) + √(εT) ξ,  ξ ~ N(0, I)

implemented with η = εN/2 (``step_size``: an SGD learning rate on the *mean* loss) in
the per-example scaled form ``θ ← θ − η (∇L̄_B + θ/(Nσ_p²)) + √(2ηT/N) ξ`` — the update
of the paper's code (its ``NoisedSGD``). T = 1 (the default) is the posterior. C =
``chains`` chains run at once (one vmapped forward, chain c on its own minibatch); after
``burn_in`` steps every chain keeps a sample every ``thin`` steps in a ring buffer of its
latest ``buffer_size`` samples.

Student (WGAN-GP: λ = ``gp_weight`` = 10, ``critic_steps`` = 5 critic updates per
generator update, Adam β = (0.5, 0.9)); x are the teacher's samples in standardised
coordinates (below), c a chain index::

    critic f:    min_f  E[f(G(z, c), c)] − E[f(x, c)] + λ E[(‖∇_x̂ f(x̂, c)‖₂ − 1)²],
                 x̂ = αx + (1−α)G(z, c), α ~ U[0, 1]
    generator G: min_G −E[f(G(z, c), c)]
    sample:      θ = m_c + s_c ⊙ G(z, c),  z ~ N(0, I), c ~ U{1..C}

One GAN iteration runs every ``gan_every`` teacher steps once each chain has kept two
samples, and ``final_gan_iters`` more on the final buffer after the teacher stops.

Departures from the paper, and why:

- Standardised coordinates: the GAN sees x = (θ − m_c) / s_c, with m_c, s_c the
  per-weight mean and standard deviation of chain c's buffer (recomputed whenever samples
  arrive and stored with the generator). This is the usual normalisation of GAN training
  data; on raw weights, whose scales differ ~10× between layers, the generator does not
  come near the teacher in the few hundred generator steps a CPU budget allows (the
  paper's code trained 200k steps on a GPU).
- A mixture over chains: independent chains sit in different modes, and their average
  is not a network, so the generator and the critic are conditioned on the chain
  (one-hot c appended to their inputs) and the student is the uniform mixture over
  chains. With ``chains=1`` this is the paper's unconditional GAN.
- Online with a ring buffer: the GAN trains while the teacher runs, as the paper
  describes (its code trains afterwards on samples written to disk).
- Generator and critic are MLPs with two hidden layers (the paper's code: three); widths
  are settings. The critic reads all D weights, so keep ``critic_hidden`` small.

What to expect at the presets' budgets (measured, see the project's results): the student
matches the teacher's per-weight spread (``std_ratio`` ≈ 1 takes a few hundred generator
steps) but not the joint structure of the posterior — its networks are more diverse in
function space than the teacher's (on toy1d its epistemic std is ~3× the teacher's), and
its accuracy sits a few tenths of a percent below the teacher's.

Teacher diagnostics: :meth:`APD.teacher_sample` draws weight sets from the teacher's kept
samples (so a harness can score the teacher exactly like the student), and ``fit`` puts
teacher and student accuracy on a held-out slice into ``extra_metrics`` (:meth:`APD.fit`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.utils.data import Dataset

from uqbench.errors import UserError
from uqbench.functional import batched_predict, fan_in, stacked_forward_per_net
from uqbench.sampler import Progress, Task, WeightSampler
from uqbench.targets import parametric_layers
from uqbench.training import as_tensors, regression_outputs, seeded_generator, task_loss


@dataclass
class APDConfig:
    """Settings of :class:`APD` (defaults: the small CNN on MNIST-5k)."""

    # --- teacher: SGLD ---------------------------------------------------------------
    #: Number of SGLD chains run at once.
    chains: int = 4
    #: SGLD steps per chain (burn-in included).
    steps: int = 1000
    #: Steps discarded before the first kept sample.
    burn_in: int = 400
    #: Keep one sample per chain every ``thin`` steps after burn-in.
    thin: int = 20
    #: Most recent kept samples held per chain (the GAN's data and the teacher's ensemble).
    buffer_size: int = 50
    #: η: SGD learning rate on the mean minibatch loss (ε = 2η/N in Welling & Teh's form).
    step_size: float = 0.1
    #: Minibatch size per chain.
    batch_size: int = 100
    #: σ_p of the N(0, σ_p² I) prior on every weight.
    prior_std: float = 1.0
    #: T: 1 = the posterior; < 1 a "cold" posterior with less injected noise.
    temperature: float = 1.0
    # --- student: WGAN-GP --------------------------------------------------------------
    #: Dimension of the generator's input noise z ~ N(0, I).
    noise_dim: int = 64
    #: Width of the generator's two hidden layers.
    gen_hidden: int = 128
    #: Width of the critic's two hidden layers (its first layer reads all D weights).
    critic_hidden: int = 32
    #: Weight sets per GAN batch (real and fake alike).
    gan_batch: int = 32
    #: Critic updates per generator update.
    critic_steps: int = 5
    #: λ of the gradient penalty.
    gp_weight: float = 10.0
    #: Adam learning rates (β = (0.5, 0.9) for both, as in WGAN-GP).
    gen_lr: float = 5e-4
    critic_lr: float = 5e-4
    #: One GAN iteration every ``gan_every`` teacher steps while the teacher runs.
    gan_every: int = 3
    #: GAN iterations on the final buffer after the teacher stops.
    final_gan_iters: int = 150
    #: Train the GAN in standardised coordinates (see the module docstring).
    standardize: bool = True
    # --- diagnostics -----------------------------------------------------------------
    #: Training examples held out (seeded) to score teacher and student; 0 = none.
    holdout: int = 0
    #: Call ``progress`` every this many teacher steps.
    log_every: int = 50


#: Networks (teacher and student each) behind the accuracies ``fit`` reports.
DIAGNOSTIC_NETS = 20
#: Training examples those accuracies use when nothing is held out.
DIAGNOSTIC_EXAMPLES = 500


class APD(WeightSampler):
    """SGLD teacher distilled online into a WGAN-GP generator over the flat weight vector."""

    name: ClassVar[str] = "apd"
    Config: ClassVar[type] = APDConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "tiny": {
            "chains": 2,
            "steps": 200,
            "burn_in": 60,
            "thin": 10,
            "batch_size": 32,
            "step_size": 5e-4,
            "buffer_size": 16,
            "gen_hidden": 32,
            "critic_hidden": 32,
            "noise_dim": 8,
            "gan_batch": 16,
            "gan_every": 4,
            "final_gan_iters": 30,
            "gen_lr": 1e-3,
            "critic_lr": 1e-3,
            "holdout": 30,
        },
        "toy1d": {
            "chains": 8,
            "steps": 4000,
            "burn_in": 1000,
            "thin": 25,
            "buffer_size": 50,
            "step_size": 0.01,
            "batch_size": 20,
            "noise_dim": 16,
            "gen_hidden": 128,
            "critic_hidden": 64,
            "gen_lr": 1e-4,
            "critic_lr": 1e-4,
            "gan_every": 4,
            "final_gan_iters": 500,
        },
        "mnist5k-split": {
            "chains": 2,
            "steps": 360,
            "burn_in": 200,
            "thin": 10,
            "buffer_size": 20,
            "gen_lr": 1e-3,
            "critic_lr": 1e-3,
            "gan_every": 4,
            "final_gan_iters": 40,
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
        _check_config(self.config)
        parametric_layers(self.target)  # UserError for parameters we cannot sample
        self._shapes = self.param_shapes()
        self._dim = sum(math.prod(s) for s in self._shapes.values())
        self.generator = self._make_generator(self.config)
        self.mean: Tensor | None = None
        self.scale: Tensor | None = None
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
        """Run the SGLD teacher and train the student on its samples as they arrive.

        Minibatches are drawn afresh each step (without replacement within a batch),
        independently per chain. ``extra_metrics`` afterwards (accuracies as fractions,
        of the mean softmax over networks; with ``holdout`` = 0 they are measured on the
        first ``DIAGNOSTIC_EXAMPLES`` training examples and named ``*_train_acc``):

        - ``teacher_acc``: ``DIAGNOSTIC_NETS`` of the teacher's kept samples, on the
          ``holdout`` examples held out of training (a seeded random choice);
        - ``student_acc``: ``DIAGNOSTIC_NETS`` student networks, on the same slice;
        - ``agreement``: share of that slice where teacher and student predict the same
          class (regression: ``teacher_rmse`` / ``student_rmse`` instead of the three);
        - ``teacher_samples``: samples kept in the buffer;
        - ``critic_gap``: E f(teacher) − E f(student) of the final critic on the buffer
          (the critic's Wasserstein-1 estimate, in standardised units);
        - ``std_ratio``: median over weights of std(student) / std(teacher);
        - ``teacher_s``, ``gan_s``: wall time of the two parts of ``fit``.
        """
        cfg = self.config
        torch.manual_seed(seed)
        x_all, y_all = (t.to(self.device) for t in as_tensors(train))
        split = seeded_generator(seed + 1)
        x, y, x_val, y_val, held_out = _split(x_all, y_all, cfg.holdout, split)
        if len(x) < 1:
            raise UserError(
                f"apd: the training set has {len(x)} examples after holdout={cfg.holdout}"
            )
        n_train = len(x)
        batch = min(cfg.batch_size, n_train)
        gen = seeded_generator(seed, self.device)  # SGLD noise and minibatches
        gan_gen = seeded_generator(seed + 2, self.device)  # GAN noise, buffer draws, α
        torch.manual_seed(seed + 3)
        self.generator = self._make_generator(cfg)
        critic = Conditional(self._dim, cfg.chains, cfg.critic_hidden, 1, nn.LeakyReLU(0.2))
        critic = critic.to(self.device)
        gen_opt = torch.optim.Adam(self.generator.parameters(), lr=cfg.gen_lr, betas=(0.5, 0.9))
        critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr, betas=(0.5, 0.9))

        theta = self._initial_chains(cfg.chains, gen)  # [C, D]
        buffer = torch.empty(cfg.chains, cfg.buffer_size, self._dim, device=self.device)
        filled, head = 0, 0
        noise_std = math.sqrt(2 * cfg.step_size * cfg.temperature / n_train)
        decay = 1.0 / (n_train * cfg.prior_std**2)
        teacher_s = gan_s = 0.0
        last: dict[str, float] = {}
        total = cfg.steps + cfg.final_gan_iters
        for step in range(1, cfg.steps + 1):
            t0 = time.perf_counter()
            index = torch.rand(cfg.chains, n_train, generator=gen, device=self.device)
            index = index.argsort(1)[:, :batch]
            loss, grad = self._chain_gradients(theta, x[index], y[index])
            with torch.no_grad():
                theta -= cfg.step_size * (grad + decay * theta)
                theta += noise_std * torch.randn(theta.shape, generator=gen, device=self.device)
            if not torch.isfinite(theta).all():
                raise UserError(
                    f"apd: SGLD diverged at step {step}; lower apd.step_size (now {cfg.step_size})"
                )
            if step > cfg.burn_in and (step - cfg.burn_in) % cfg.thin == 0:
                buffer[:, head] = theta  # ring buffer: overwrite each chain's oldest sample
                head = (head + 1) % cfg.buffer_size
                filled = min(filled + 1, cfg.buffer_size)
                self._set_normalisation(buffer[:, :filled])
            teacher_s += time.perf_counter() - t0
            if filled >= 2 and step % cfg.gan_every == 0:
                t0 = time.perf_counter()
                last = self._gan_iteration(critic, critic_opt, gen_opt, buffer[:, :filled], gan_gen)
                gan_s += time.perf_counter() - t0
            if progress is not None and (step % cfg.log_every == 0 or step == cfg.steps):
                progress(step, total, sgld_nll=float(loss.mean()), kept=filled * cfg.chains, **last)
        if filled == 0:
            raise UserError(
                f"apd: the teacher kept no samples (steps={cfg.steps}, burn_in={cfg.burn_in}, "
                f"thin={cfg.thin}); raise apd.steps or lower apd.burn_in / apd.thin"
            )
        t0 = time.perf_counter()
        for it in range(1, cfg.final_gan_iters + 1):
            last = self._gan_iteration(critic, critic_opt, gen_opt, buffer[:, :filled], gan_gen)
            if progress is not None and (it % cfg.log_every == 0 or it == cfg.final_gan_iters):
                progress(cfg.steps + it, total, kept=filled * cfg.chains, **last)
        gan_s += time.perf_counter() - t0
        self.teacher = buffer[:, :filled].clone()
        self.generator.eval()
        self.extra_metrics = {
            "teacher_samples": float(filled * cfg.chains),
            "teacher_s": teacher_s,
            "gan_s": gan_s,
            **self._diagnostics(critic, x_val, y_val, held_out, gan_gen),
        }

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """``n`` student networks θ_i = m_c + s_c ⊙ G(z_i), z_i ~ N(0, I), with chain
        c = (o + i) mod C for a random offset o: a stratified draw from the uniform
        mixture over chains. All noise is drawn on the CPU with ``generator``."""
        self.check_n(n)
        mean, scale = self._fitted()
        offset = torch.randint(len(mean), (1,), generator=generator)
        chain = ((offset + torch.arange(n)) % len(mean)).to(self.device)
        z = torch.randn(n, self.config.noise_dim, generator=generator).to(self.device)
        with torch.no_grad():
            flat = mean[chain] + scale[chain] * self.generator(z, chain)
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
        """Generator weights, standardisation (m, s), the teacher's buffer, the config."""
        mean, scale = self._fitted()
        return {
            "generator": {k: v.detach().cpu() for k, v in self.generator.state_dict().items()},
            "mean": mean.cpu(),
            "scale": scale.cpu(),
            "teacher": self._teacher().cpu(),
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: dict) -> None:
        config = APDConfig(**{**state["config"]})
        if state["mean"].shape[-1] != self._dim:
            raise UserError(
                f"apd checkpoint holds {state['mean'].shape[-1]} weights per network but the "
                f"target has {self._dim}; load it with the target it was trained with"
            )
        self.config = config
        self.generator = self._make_generator(config)
        self.generator.load_state_dict(state["generator"])
        self.generator.eval()
        self.mean = state["mean"].to(self.device)
        self.scale = state["scale"].to(self.device)
        self.teacher = state["teacher"].to(self.device)

    def num_stored_parameters(self) -> int:
        """Numbers needed to sample the student: generator weights, m and s (the teacher's
        buffer is kept for diagnostics only and is not counted)."""
        mean, scale = self._fitted()
        return sum(p.numel() for p in self.generator.parameters()) + mean.numel() + scale.numel()

    def _make_generator(self, cfg: APDConfig) -> Conditional:
        return Conditional(cfg.noise_dim, cfg.chains, cfg.gen_hidden, self._dim, nn.ReLU()).to(
            self.device
        )

    # --- teacher -----------------------------------------------------------------------
    def _initial_chains(self, chains: int, gen: torch.Generator) -> Tensor:
        """``[chains, D]``: every weight and bias ~ U(−1/√fan_in, 1/√fan_in), PyTorch's
        default Linear/Conv2d initialisation, drawn for all chains at once."""
        parts = []
        for name, module in parametric_layers(self.target):
            bound = 1.0 / math.sqrt(fan_in(module.weight.shape))
            for pname, p in module.named_parameters(recurse=False):
                u = torch.rand(chains, p.numel(), generator=gen, device=self.device)
                parts.append((f"{name}.{pname}", (2 * u - 1) * bound))
        by_name = dict(parts)
        return torch.cat([by_name[k] for k in self._shapes], dim=1)

    def _chain_gradients(self, theta: Tensor, xb: Tensor, yb: Tensor) -> tuple[Tensor, Tensor]:
        """Per-chain mean minibatch NLL ``[C]`` and its gradient ``[C, D]`` (chain k on
        its own minibatch ``xb[k]``)."""
        leaf = theta.detach().requires_grad_()
        outputs = stacked_forward_per_net(self.target, self._unflatten(leaf), xb)
        loss = vmap(lambda o, t: task_loss(o.unsqueeze(0), t, self.task).squeeze(0))(outputs, yb)
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
        return loss.detach(), grad

    # --- student -----------------------------------------------------------------------
    def _set_normalisation(self, samples: Tensor) -> None:
        """m_c, s_c ``[C, D]`` from each chain's kept samples ``[C, K, D]``."""
        if not self.config.standardize:
            self.mean = torch.zeros_like(samples[:, 0])
            self.scale = torch.ones_like(samples[:, 0])
            return
        self.mean = samples.mean(1)
        if samples.shape[1] < 2:
            self.scale = torch.full_like(self.mean, 1e-3)
            return
        std = samples.std(1, correction=0)
        # A coordinate that has not moved yet gets a tenth of its chain's typical spread.
        self.scale = torch.maximum(std, 0.1 * std.mean(1, keepdim=True).clamp_min(1e-8))

    def _gan_iteration(
        self,
        critic: nn.Module,
        critic_opt: torch.optim.Optimizer,
        gen_opt: torch.optim.Optimizer,
        buffer: Tensor,
        gen: torch.Generator,
    ) -> dict[str, float]:
        """``critic_steps`` WGAN-GP critic updates, then one generator update.

        Real data: kept samples ``buffer [C, K, D]`` drawn with replacement, each
        standardised with its own chain's (m_c, s_c)."""
        cfg = self.config
        b = cfg.gan_batch
        self.generator.train()
        mean, scale = self._fitted()
        chains, kept = buffer.shape[:2]
        for _ in range(cfg.critic_steps):
            chain = torch.randint(chains, (b,), generator=gen, device=self.device)
            pick = torch.randint(kept, (b,), generator=gen, device=self.device)
            real = (buffer[chain, pick] - mean[chain]) / scale[chain]
            with torch.no_grad():
                fake = self.generator(self._noise(b, gen), chain)
            alpha = torch.rand(b, 1, generator=gen, device=self.device)
            gap = critic(fake, chain).mean() - critic(real, chain).mean()
            penalty = gradient_penalty(
                lambda v, c=chain: critic(v, c), real, fake, alpha, weight=cfg.gp_weight
            )
            critic_opt.zero_grad(set_to_none=True)
            (gap + penalty).backward()
            critic_opt.step()
        for p in critic.parameters():
            p.requires_grad_(False)
        chain = torch.randint(chains, (b,), generator=gen, device=self.device)
        gen_loss = -critic(self.generator(self._noise(b, gen), chain), chain).mean()
        gen_opt.zero_grad(set_to_none=True)
        gen_loss.backward()
        gen_opt.step()
        for p in critic.parameters():
            p.requires_grad_(True)
        return {"w_dist": float(-gap.detach()), "gp": float(penalty.detach())}

    def _noise(self, n: int, gen: torch.Generator) -> Tensor:
        return torch.randn(n, self.config.noise_dim, generator=gen, device=self.device)

    # --- diagnostics -------------------------------------------------------------------
    @torch.no_grad()
    def _diagnostics(
        self, critic: nn.Module, x_val: Tensor, y_val: Tensor, held_out: bool, gen: torch.Generator
    ) -> dict[str, float]:
        """See :meth:`fit`; ``DIAGNOSTIC_NETS`` networks each, so that it stays cheap."""
        mean, scale = self._fitted()
        teacher = self._teacher()
        real = ((teacher - mean[:, None]) / scale[:, None]).flatten(0, 1)
        chain = torch.arange(len(teacher), device=self.device).repeat_interleave(teacher.shape[1])
        fake = self.generator(self._noise(len(real), gen), chain)
        out = {
            "critic_gap": float(critic(real, chain).mean() - critic(fake, chain).mean()),
            "std_ratio": float((fake.std(0) / real.std(0).clamp_min(1e-12)).median()),
        }
        k = min(DIAGNOSTIC_NETS, len(real))
        draw = torch.Generator().manual_seed(0)
        student = self.sample(k, generator=draw)
        teacher_w = self.teacher_sample(k, generator=draw)
        if self.task.is_classification:
            suffix = "acc" if held_out else "train_acc"
            soft = lambda o: o.softmax(-1)  # noqa: E731
            p_t = batched_predict(self.target, teacher_w, x_val, transform=soft).mean(0)
            p_s = batched_predict(self.target, student, x_val, transform=soft).mean(0)
            out[f"teacher_{suffix}"] = float((p_t.argmax(1) == y_val).float().mean())
            out[f"student_{suffix}"] = float((p_s.argmax(1) == y_val).float().mean())
            out["agreement"] = float((p_t.argmax(1) == p_s.argmax(1)).float().mean())
        else:
            suffix = "rmse" if held_out else "train_rmse"
            for who, w in (("teacher", teacher_w), ("student", student)):
                mu, _ = regression_outputs(batched_predict(self.target, w, x_val), self.task)
                out[f"{who}_{suffix}"] = float((mu.mean(0) - y_val).pow(2).mean().sqrt())
        return out

    # --- plumbing ----------------------------------------------------------------------
    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """``[n, D]`` -> name -> ``[n, *shape]`` (views, in ``named_parameters`` order)."""
        sizes = [math.prod(s) for s in self._shapes.values()]
        pieces = flat.split(sizes, dim=1)
        return {
            k: v.view(len(flat), *s) for (k, s), v in zip(self._shapes.items(), pieces, strict=True)
        }

    def _fitted(self) -> tuple[Tensor, Tensor]:
        if self.mean is None or self.scale is None:
            raise UserError("apd is not fitted; call fit or load a checkpoint first")
        return self.mean, self.scale

    def _teacher(self) -> Tensor:
        if self.teacher is None:
            raise UserError("apd is not fitted; call fit or load a checkpoint first")
        return self.teacher


class APDTeacher(WeightSampler):
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


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    alpha: Tensor,
    *,
    weight: float = 10.0,
) -> Tensor:
    """WGAN-GP's penalty λ · mean_i (‖∇_x f(x̂_i)‖₂ − 1)², x̂_i = α_i real_i + (1 − α_i) fake_i.

    ``critic``: ``[b, D] -> [b, 1]`` (any callable, e.g. a conditional critic with its
    labels bound); ``real``, ``fake``: ``[b, D]``; ``alpha``: ``[b, 1]`` in [0, 1].
    Differentiable in the critic's parameters (``create_graph``), so it can be added to
    the critic's loss.
    """
    mixed = (alpha * real + (1 - alpha) * fake).detach().requires_grad_()
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return weight * (grad.norm(dim=1) - 1).pow(2).mean()


class Conditional(nn.Module):
    """MLP on ``[x, one_hot(c)]``: inputs + classes -> hidden -> hidden -> outputs, with
    ``act`` between layers (the generator G(z, c) and the critic f(x, c))."""

    def __init__(
        self, inputs: int, classes: int, hidden: int, outputs: int, act: nn.Module
    ) -> None:
        super().__init__()
        self.classes = classes
        self.net = nn.Sequential(
            nn.Linear(inputs + classes, hidden),
            act,
            nn.Linear(hidden, hidden),
            act,
            nn.Linear(hidden, outputs),
        )

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        return self.net(torch.cat([x, nn.functional.one_hot(c, self.classes).to(x.dtype)], dim=1))


def _split(
    x: Tensor, y: Tensor, holdout: int, gen: torch.Generator
) -> tuple[Tensor, Tensor, Tensor, Tensor, bool]:
    """(train x, y, validation x, y, whether validation is held out); without holdout the
    validation slice is the first ``DIAGNOSTIC_EXAMPLES`` training examples."""
    if holdout <= 0:
        return x, y, x[:DIAGNOSTIC_EXAMPLES], y[:DIAGNOSTIC_EXAMPLES], False
    if holdout >= len(x):
        raise UserError(f"apd.holdout={holdout} leaves no training data ({len(x)} examples)")
    order = torch.randperm(len(x), generator=gen).to(x.device)
    val, fit = order[:holdout], order[holdout:]
    return x[fit], y[fit], x[val], y[val], True


def _check_config(cfg: APDConfig) -> None:
    positive = (
        "chains",
        "steps",
        "thin",
        "buffer_size",
        "batch_size",
        "noise_dim",
        "gen_hidden",
        "critic_hidden",
        "gan_batch",
        "critic_steps",
        "gan_every",
        "log_every",
    )
    bad = [k for k in positive if getattr(cfg, k) < 1]
    if bad:
        raise UserError(f"apd: {', '.join(f'apd.{k}' for k in bad)} must be >= 1")
    if cfg.burn_in < 0 or cfg.final_gan_iters < 0 or cfg.holdout < 0:
        raise UserError("apd.burn_in, apd.final_gan_iters and apd.holdout must be >= 0")
    if min(cfg.step_size, cfg.prior_std, cfg.gen_lr, cfg.critic_lr) <= 0:
        raise UserError("apd.step_size, apd.prior_std, apd.gen_lr and apd.critic_lr must be > 0")
    if cfg.temperature < 0 or cfg.gp_weight < 0:
        raise UserError("apd.temperature and apd.gp_weight must be >= 0")
