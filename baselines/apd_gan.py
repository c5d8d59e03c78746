r"""APD's student: a WGAN-GP (Gulrajani et al. 2017) over flat weight vectors.

The generator maps noise z ~ N(0, I) and a chain index c to a weight vector u ∈ R^D; the
critic f(u, c) scores weight vectors. With x the teacher's samples::

    critic:    min_f  E f(G(z, c), c) − E f(x, c) + λ E (‖∇_x̂ f(x̂, c)‖₂ − 1)²,
               x̂ = αx + (1−α)G(z, c),  α ~ U[0, 1]
    generator: min_G −E f(G(z, c), c)

Both are MLPs on ``[input, one_hot(c)]`` with ``layers`` hidden layers (the authors' code:
three of width 100, ReLU); the generator adds a per-chain output bias ``b_c``, so a chain's
location is one trainable vector the generator may start wherever its owner says
(:meth:`Generator.set_chain_bias`). Nothing here knows about networks: :class:`WGANGP`
trains on whatever ``[C, K, D]`` sample buffer it is given, which is what the tests use
to check that the student learns correlations a per-chain diagonal Gaussian cannot.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from uqbench.training import check_finite


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


def conditional_mlp(
    inputs: int, classes: int, hidden: int, layers: int, outputs: int, act: type[nn.Module]
) -> nn.Sequential:
    """``inputs + classes -> hidden (x layers, act after each) -> outputs``."""
    width = [inputs + classes] + [hidden] * layers
    parts: list[nn.Module] = []
    for a, b in zip(width[:-1], width[1:], strict=True):
        parts += [nn.Linear(a, b), act()]
    parts.append(nn.Linear(width[-1], outputs))
    return nn.Sequential(*parts)


class Generator(nn.Module):
    """G(z, c) = MLP([z, one_hot(c)]) + b_c: noise and chain -> a flat weight vector."""

    def __init__(self, noise_dim: int, chains: int, hidden: int, layers: int, dim: int) -> None:
        super().__init__()
        self.chains = chains
        self.noise_dim = noise_dim
        self.net = conditional_mlp(noise_dim, chains, hidden, layers, dim, nn.ReLU)
        self.chain_bias = nn.Parameter(torch.zeros(chains, dim))

    def forward(self, z: Tensor, c: Tensor) -> Tensor:
        return self.net(torch.cat([z, self._one_hot(c)], dim=1)) + self.chain_bias[c]

    @torch.no_grad()
    def set_chain_bias(self, location: Tensor) -> None:
        """Start chain c's outputs at ``location[c]`` (``[C, D]``): the output bias is set so
        that G(0, c) = ``location[c]``; the spread around it is left to training."""
        chain = torch.arange(self.chains, device=location.device)
        zero = torch.zeros(self.chains, self.noise_dim, device=location.device)
        self.chain_bias.copy_(location - self.net(torch.cat([zero, self._one_hot(chain)], 1)))

    def _one_hot(self, c: Tensor) -> Tensor:
        return nn.functional.one_hot(c, self.chains).to(self.chain_bias.dtype)


class Critic(nn.Module):
    """f(u, c) = MLP([u, one_hot(c)]) -> one score per weight vector (LeakyReLU 0.2)."""

    def __init__(self, dim: int, chains: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.chains = chains
        self.net = conditional_mlp(dim, chains, hidden, layers, 1, _LeakyReLU)

    def forward(self, u: Tensor, c: Tensor) -> Tensor:
        return self.net(torch.cat([u, nn.functional.one_hot(c, self.chains).to(u.dtype)], dim=1))


class _LeakyReLU(nn.LeakyReLU):
    def __init__(self) -> None:
        super().__init__(0.2)


class WGANGP:
    """Generator, critic and their Adams (β = (0.5, 0.9), as in WGAN-GP); one
    :meth:`iteration` = ``critic_steps`` critic updates, then one generator update."""

    def __init__(
        self,
        generator: Generator,
        critic: Critic,
        *,
        gen_lr: float,
        critic_lr: float,
        batch: int,
        critic_steps: int,
        gp_weight: float,
        rng: torch.Generator,
    ) -> None:
        self.generator, self.critic = generator, critic
        self.gen_opt = torch.optim.Adam(generator.parameters(), lr=gen_lr, betas=(0.5, 0.9))
        self.critic_opt = torch.optim.Adam(critic.parameters(), lr=critic_lr, betas=(0.5, 0.9))
        self.batch, self.critic_steps, self.gp_weight = batch, critic_steps, gp_weight
        self.rng = rng
        self.iterations = 0

    def noise(self, n: int) -> Tensor:
        dim = self.generator.noise_dim
        return torch.randn(n, dim, generator=self.rng, device=self.rng.device)

    def iteration(self, buffer: Tensor) -> dict[str, float]:
        """Train on real samples drawn with replacement from ``buffer [C, K, D]`` (already in
        the GAN's coordinates); return the critic's Wasserstein estimate and penalty.

        Raises :class:`~uqbench.errors.FitDiverged` when a loss is not finite."""
        b, rng, dev = self.batch, self.rng, self.rng.device
        chains, kept = buffer.shape[:2]
        self.generator.train()
        self.iterations += 1
        for _ in range(self.critic_steps):
            chain = torch.randint(chains, (b,), generator=rng, device=dev)
            real = buffer[chain, torch.randint(kept, (b,), generator=rng, device=dev)]
            with torch.no_grad():
                fake = self.generator(self.noise(b), chain)
            alpha = torch.rand(b, 1, generator=rng, device=dev)
            gap = self.critic(fake, chain).mean() - self.critic(real, chain).mean()
            penalty = gradient_penalty(
                lambda v, c=chain: self.critic(v, c), real, fake, alpha, weight=self.gp_weight
            )
            critic_loss = gap + penalty
            self.critic_opt.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_opt.step()
        self.critic.requires_grad_(False)
        chain = torch.randint(chains, (b,), generator=rng, device=dev)
        gen_loss = -self.critic(self.generator(self.noise(b), chain), chain).mean()
        # Once per iteration (a non-finite critic loss leaves the critic non-finite).
        check_finite("apd", {"critic": critic_loss, "generator": gen_loss}, self.iterations)
        self.gen_opt.zero_grad(set_to_none=True)
        gen_loss.backward()
        self.gen_opt.step()
        self.critic.requires_grad_(True)
        return {"w_dist": float(-gap.detach()), "gp": float(penalty.detach())}

    @torch.no_grad()
    def critic_gap(self, buffer: Tensor) -> float:
        """E f(teacher) − E f(student) of the current critic over the whole buffer."""
        chains, kept = buffer.shape[:2]
        chain = torch.arange(chains, device=buffer.device).repeat_interleave(kept)
        fake = self.generator(self.noise(len(chain)), chain)
        real = buffer.flatten(0, 1)
        return float(self.critic(real, chain).mean() - self.critic(fake, chain).mean())
