r"""SWAG: SWA-Gaussian (Maddox, Izmailov, Garipov, Vetrov & Wilson, NeurIPS 2019).

SGD with momentum runs on the mean minibatch NLL plus L2 weight decay λ. After a
burn-in of B epochs the learning rate is held at α_SWA (``collect_schedule="constant"``)
or cycles linearly from α to α_SWA within every epoch (``"cyclical"``, Izmailov et al.
2018), and the weights θ_t ∈ R^d are collected once per epoch, at the epoch's end
(t = 1..T, T = epochs − B). From the collected iterates::

    θ_SWA = (1/T) Σ_t θ_t                          (SWA mean)
    Σ_diag = diag( (1/T) Σ_t θ_t² − θ_SWA² )        (clamped at 0)
    D = [θ_{T−K+1} − θ_SWA, …, θ_T − θ_SWA]  ∈ R^{d×K}   (the last K = min(rank, T))
    Σ_low = D Dᵀ / (K − 1)

and a sampled network is (z₁ ~ N(0, I_d), z₂ ~ N(0, I_K), s = ``scale``)::

    θ = θ_SWA + √s ( Σ_diag^{1/2} z₁ / √2 + D z₂ / √(2(K − 1)) ),
    i.e. θ ~ N(θ_SWA, s (Σ_diag + Σ_low) / 2).

``covariance="diag"`` drops the low-rank term (SWAG-Diagonal: θ ~ N(θ_SWA, s Σ_diag)).
The paper's settings: rank K = 20, one collection per epoch, a constant (or cyclical)
learning rate during collection, momentum 0.9; s = 0.5, the value of the authors'
uncertainty experiments (the paper's formula is s = 1).

Departures from the paper, and why:

- Deviations from the final mean: the last K iterates are kept and D is formed from the
  final θ_SWA, so D Dᵀ/(K − 1) is exactly the sample covariance of those iterates about
  the SWA mean. The authors' code subtracts the running mean at collection time, an
  online approximation of the same quantity; keeping K iterates costs the same K × d.
- Burn-in schedule: the paper starts from a conventionally pre-trained network; here the
  B burn-in epochs train it from the target's initialisation with SWA's schedule
  (α for the first half, then linear decay to α_SWA), so the whole fit is one call.
- Batch normalisation: as in the paper, every sampled network (and the SWA mean) gets its
  own batch-norm statistics: its running means and variances are reset and recomputed as
  the plain average over one train-mode pass (minibatches of ``batch_size``) and
  returned with its weights (the sampler contract's per-network statistics). The pass
  reads a fixed subset of ``bn_examples`` training inputs, drawn once per fit and kept in
  the state, instead of the authors' whole training set: the cost per sampled network is
  one forward pass over ``bn_examples`` inputs, and the subset lets ``sample`` run after
  ``load_state_dict`` without the data (0 keeps the whole training set). The batch-norm
  layers' affine weights are sampled with the other parameters. Targets without
  batch-norm are unaffected.

``val`` (when given) is scored every epoch — the current iterate's NLL, and the SWA
mean's once collection has begun — and reported through ``progress(..., val_nll=...,
swa_val_nll=...)``; SWAG makes no choice from it (the tuner may, through the config's
search ranges). Without ``val`` nothing changes but the report.

``reference_views()`` gives the SWA mean network as the row ``swag:swa``: the table shows
whether sampling around θ_SWA beats the single averaged network.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.data import Dataset

from uqbench.configs import (
    CheckedConfig,
    IntRange,
    LogUniform,
    Uniform,
    at_least,
    in_range,
    non_negative,
    one_of,
    positive,
    require,
    setting,
)
from uqbench.errors import UserError
from uqbench.sampler import PointView, Progress, Task, WeightSampler
from uqbench.targets import batch_norm_statistics, reinitialised
from uqbench.training import (
    as_tensors,
    check_finite,
    derive_seeds,
    minibatches,
    seeded_generator,
    task_loss,
)


@dataclass
class SWAGConfig(CheckedConfig):
    """Settings of :class:`SWAG` (defaults: the small CNN on MNIST-5k)."""

    owner: ClassVar[str] = "swag"

    #: SGD epochs in all, burn-in included.
    epochs: int = setting(30, check=at_least(2), search=IntRange(20, 60))
    #: Epochs before the first collection.
    burn_in: int = setting(10, check=at_least(0))
    #: Columns K of the low-rank deviation matrix D (the paper: 20).
    rank: int = setting(20, check=at_least(2))
    #: SGD learning rate α of the burn-in.
    lr: float = setting(0.05, check=positive, search=LogUniform(1e-3, 0.2))
    #: Learning rate α_SWA during collection.
    swa_lr: float = setting(0.01, check=positive, search=LogUniform(1e-3, 0.1))
    #: SGD momentum.
    momentum: float = setting(0.9, check=in_range(0.0, 1.0, include_high=False))
    #: L2 weight decay λ.
    weight_decay: float = setting(5e-4, check=non_negative, search=LogUniform(1e-5, 1e-2))
    #: Minibatch size.
    batch_size: int = setting(64, check=at_least(1))
    #: Learning rate during collection: held at α_SWA, or cycled α -> α_SWA every epoch.
    collect_schedule: str = setting("constant", check=one_of("constant", "cyclical"))
    #: Low-rank plus diagonal covariance, or the diagonal only (SWAG-Diagonal).
    covariance: str = setting("lowrank", check=one_of("lowrank", "diag"))
    #: Variance scale s of the samples (the authors' experiments: 0.5).
    scale: float = setting(0.5, check=positive, search=Uniform(0.1, 1.0))
    #: Training inputs each sampled network's batch-norm statistics are recomputed on
    #: (0 = the whole training set, the authors' choice); unused without batch-norm.
    bn_examples: int = setting(2048, check=at_least(0))

    def check_together(self) -> None:
        require(
            self.burn_in < self.epochs,
            self.owner,
            f"burn_in={self.burn_in} leaves no collection epoch out of epochs={self.epochs}; "
            "use burn_in < epochs",
        )


class SWAG(WeightSampler[SWAGConfig]):
    """SWA mean plus low-rank-plus-diagonal Gaussian from the SGD trajectory (see module).

    ``extra_metrics`` after ``fit``: ``collected`` (T), ``rank`` (K used),
    ``train_loss`` (last epoch's mean minibatch loss), ``diag_var_mean`` (mean of
    Σ_diag) and, with ``val``, ``swa_val_nll`` (the SWA mean's validation NLL).
    """

    name: ClassVar[str] = "swag"
    Config: ClassVar[type] = SWAGConfig
    batch_norm: ClassVar[bool] = True
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        # toy1d, chosen on training loss (set before toy1d had its validation draw): of lr
        # 1e-3, 3e-3, 1e-2 (swa_lr about half), the lowest (1.56, 1.45, 1.35; laplace MAP 1.40).
        "toy1d": {
            "epochs": 1500,
            "burn_in": 1000,
            "batch_size": 5,
            "lr": 1e-2,
            "swa_lr": 5e-3,
            "weight_decay": 0.0,
        },
        "mnist5000": {"epochs": 30, "burn_in": 10},
        "mnist5k-split": {"epochs": 20, "burn_in": 8},
    }

    def __init__(
        self,
        target: nn.Module,
        config: SWAGConfig | None = None,
        *,
        task: Task | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(target, config, task=task, device=device)
        #: Names of the target's batch-norm statistics (empty without batch-norm).
        self.statistics = batch_norm_statistics(self.target)
        self.mean: Tensor | None = None
        self.sq_mean: Tensor | None = None
        self.deviations: Tensor | None = None
        #: The training inputs batch-norm statistics are recomputed on (None without
        #: batch-norm).
        self.bn_inputs: Tensor | None = None

    # --- fit -------------------------------------------------------------------------
    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Run SGD, collect once per epoch after the burn-in, form θ_SWA, Σ_diag and D."""
        collected: list[Tensor] = []
        total = 0.0
        total_sq = 0.0
        last: dict[str, float] = {}
        for theta, report in self.trajectory(train, seed=seed, val=val, progress=progress):
            last = report
            total = total + theta.double()
            total_sq = total_sq + theta.double() ** 2
            collected = (collected + [theta])[-self.config.rank :]
        count = self.config.epochs - self.config.burn_in
        mean = total / count
        self.mean = mean.float()
        self.sq_mean = (total_sq / count).float()
        self.deviations = torch.stack([t.double() - mean for t in collected]).float()
        self.extra_metrics = {
            "collected": float(count),
            "rank": float(len(collected)),
            "train_loss": last.get("loss", math.nan),
            "diag_var_mean": float(self._diag_variance().mean()),
        }
        if val is not None:
            xv, yv = (t.to(self.device) for t in as_tensors(val))
            self.extra_metrics["swa_val_nll"] = self._nll(self._network(self.mean), xv, yv)

    def trajectory(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> Iterator[tuple[Tensor, dict[str, float]]]:
        """The collected iterates θ_t (flat, CPU copies) with each epoch's report, in order.

        Deterministic given ``seed``; :meth:`fit` consumes exactly this sequence.
        """
        cfg = self.config
        seeds = derive_seeds(seed, ("init", "data", "batch_norm"))
        x, y = (t.to(self.device) for t in as_tensors(train))
        xv, yv = (None, None) if val is None else (t.to(self.device) for t in as_tensors(val))
        if self.statistics:
            keep = len(x) if cfg.bn_examples == 0 else min(cfg.bn_examples, len(x))
            pick = torch.randperm(len(x), generator=seeded_generator(seeds["batch_norm"]))
            self.bn_inputs = x[pick[:keep].to(x.device)].cpu()
        net = reinitialised(self.target, seeds["init"], self.device)
        order = seeded_generator(seeds["data"])
        batch = min(cfg.batch_size, len(x))
        per_epoch = len(x) // batch
        optimizer = torch.optim.SGD(
            net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
        running: Tensor | None = None
        step = 0
        for epoch in range(cfg.epochs):
            net.train()
            loss_sum = 0.0
            for i, idx in enumerate(minibatches(len(x), batch, order)):
                for group in optimizer.param_groups:
                    group["lr"] = self.learning_rate(epoch, i, per_epoch)
                loss = task_loss(net(x[idx]).unsqueeze(0), y[idx], self.task)[0]
                check_finite("swag", {"SGD": loss}, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += float(loss.detach())
            report = {"loss": loss_sum / per_epoch}
            theta = None
            if epoch >= cfg.burn_in:
                theta = parameters_to_vector(net.parameters()).detach().cpu().clone()
                t = epoch - cfg.burn_in + 1
                running = theta.clone() if running is None else running + (theta - running) / t
            if xv is not None and yv is not None:
                report["val_nll"] = self._nll(net, xv, yv)
                if running is not None:
                    report["swa_val_nll"] = self._nll(self._network(running), xv, yv)
            if progress is not None:
                progress(step, cfg.epochs * per_epoch, **report)
            if theta is not None:
                yield theta, report

    def learning_rate(self, epoch: int, step: int, per_epoch: int) -> float:
        """Learning rate of minibatch ``step`` (0-based) of ``per_epoch`` in ``epoch`` (0-based).

        Burn-in: α for its first half, then linear to α_SWA at its end (SWA's schedule).
        Collection: α_SWA (constant), or linear from α to α_SWA within each epoch
        (cyclical), so the epoch's last step, just before each collection, uses α_SWA.
        """
        cfg = self.config
        if epoch >= cfg.burn_in:
            if cfg.collect_schedule == "constant":
                return cfg.swa_lr
            t = (step + 1) / per_epoch
            return (1 - t) * cfg.lr + t * cfg.swa_lr
        done = (epoch + step / per_epoch) / cfg.burn_in
        return cfg.lr + (cfg.swa_lr - cfg.lr) * min(1.0, max(0.0, 2 * done - 1))

    def _network(self, flat: Tensor) -> nn.Module:
        """The target with weights ``flat`` and, with batch-norm, statistics recomputed."""
        net = copy.deepcopy(self.target)
        vector_to_parameters(flat.to(self.device), net.parameters())
        if self.statistics:
            statistics = self._statistics(self._unflatten(flat.unsqueeze(0).to(self.device)))
            with torch.no_grad():
                for name, buffer in net.named_buffers():
                    if name in statistics:
                        buffer.copy_(statistics[name][0])
        return net

    def _weights(self, flat: Tensor) -> dict[str, Tensor]:
        """The networks ``flat`` (``[n, d]``) as a weight dict, with every network's own
        batch-norm statistics where the target has batch-norm."""
        weights = self._unflatten(flat.to(self.device))
        return {**weights, **self._statistics(weights)} if self.statistics else weights

    @torch.no_grad()
    def _statistics(self, weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every network's batch-norm statistics (``[n, C]`` each) as the plain average over
        one train-mode pass of :attr:`bn_inputs` in minibatches of ``batch_size`` (the SWAG
        recipe), for all n networks in one vmapped call per minibatch: momentum 1/b at
        minibatch b makes the running update that cumulative average."""
        if self.bn_inputs is None:
            raise UserError("swag is not fitted; call fit or load a checkpoint first")
        n = len(next(iter(weights.values())))
        net = copy.deepcopy(self.target).train()
        layers = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        buffers = dict(net.named_buffers())
        statistics = {k: buffers[k].new_zeros(n, *buffers[k].shape) for k in self.statistics}
        shared = {k: v for k, v in buffers.items() if k not in statistics}

        def one(params: dict[str, Tensor], own: dict[str, Tensor], x: Tensor) -> Tensor:
            return functional_call(net, (params, own, shared), (x,))

        forward = vmap(one, in_dims=(0, 0, None))
        step = self.config.batch_size
        for b, start in enumerate(range(0, len(self.bn_inputs), step)):
            for m in layers:
                m.momentum = 1.0 / (b + 1)
            forward(weights, statistics, self.bn_inputs[start : start + step].to(self.device))
        return statistics

    @torch.no_grad()
    def _nll(self, net: nn.Module, x: Tensor, y: Tensor) -> float:
        net.eval()
        total = 0.0
        for start in range(0, len(x), 1024):
            out = net(x[start : start + 1024]).unsqueeze(0)
            total += float(task_loss(out, y[start : start + 1024], self.task)[0]) * out.shape[1]
        return total / len(x)

    # --- sample, save, load ----------------------------------------------------------
    def covariance(self) -> Tensor:
        """The sampling covariance s (Σ_diag + Σ_low) / 2 (or s Σ_diag), dense ``[d, d]``.

        For tests and small targets only: d × d floats.
        """
        mean, _, dev = self._fitted()
        diag = self._diag_variance().double()
        if self.config.covariance == "diag":
            return self.config.scale * torch.diag(diag)
        low = dev.double().T @ dev.double() / (len(dev) - 1) if len(dev) > 1 else 0.0
        return self.config.scale * (torch.diag(diag) + low) / 2

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """n networks θ_SWA + √s(Σ_diag^{1/2} z₁/√2 + D z₂/√(2(K−1))) (noise drawn on the CPU
        with ``generator``)."""
        self.check_n(n)
        mean, _, dev = self._fitted()
        std = self._diag_variance().sqrt()
        z1 = torch.randn(n, mean.numel(), generator=generator)
        if self.config.covariance == "diag" or len(dev) < 2:
            offset = std * z1
        else:
            z2 = torch.randn(n, len(dev), generator=generator)
            offset = (std * z1 + z2 @ dev / math.sqrt(len(dev) - 1)) / math.sqrt(2.0)
        flat = mean + math.sqrt(self.config.scale) * offset
        return self._weights(flat)

    def swa_weights(self) -> dict[str, Tensor]:
        """The SWA mean network (with its batch-norm statistics where the target has
        batch-norm): name -> tensor on ``self.device``."""
        mean, _, _ = self._fitted()
        return {k: v[0] for k, v in self._weights(mean.unsqueeze(0)).items()}

    def reference_views(self) -> dict[str, WeightSampler]:
        """The SWA mean network: the table row ``swag:swa``."""
        return {"swa": PointView(self, self.swa_weights)}

    def state_dict(self) -> dict:
        """θ_SWA, the mean of squares, D (``[K, d]``), the config (tensors, numbers) and,
        with batch-norm, the inputs its statistics are recomputed on."""
        mean, sq_mean, dev = self._fitted()
        state = {
            "mean": mean.cpu(),
            "sq_mean": sq_mean.cpu(),
            "deviations": dev.cpu(),
            "config": dataclasses.asdict(self.config),
        }
        if self.bn_inputs is not None:
            state["bn_inputs"] = self.bn_inputs.cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        dim = sum(math.prod(s) for s in self.param_shapes().values())
        if state["mean"].shape != (dim,):
            raise UserError(
                f"swag checkpoint holds {state['mean'].numel()} weights but the target has {dim}; "
                "load it with the target it was trained with"
            )
        self.config = SWAGConfig(**state["config"])
        self.mean = state["mean"].float()
        self.sq_mean = state["sq_mean"].float()
        self.deviations = state["deviations"].float()
        self.bn_inputs = state.get("bn_inputs")
        if self.statistics and self.bn_inputs is None:
            raise UserError(
                "swag checkpoint holds no batch-norm inputs but the target has batch-norm; "
                "load it with the target it was trained with"
            )

    def _diag_variance(self) -> Tensor:
        mean, sq_mean, _ = self._fitted()
        return (sq_mean.double() - mean.double() ** 2).clamp_min(0.0).float()

    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        out, cursor = {}, 0
        for name, shape in self.param_shapes().items():
            size = math.prod(shape)
            out[name] = flat[:, cursor : cursor + size].reshape(len(flat), *shape)
            cursor += size
        return out

    def _fitted(self) -> tuple[Tensor, Tensor, Tensor]:
        if self.mean is None or self.sq_mean is None or self.deviations is None:
            raise UserError("swag is not fitted; call fit or load a checkpoint first")
        return self.mean, self.sq_mean, self.deviations
