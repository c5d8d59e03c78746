r"""Last-layer Laplace (laplace-torch) as a uqbench ``WeightSampler``.

The method (MacKay 1992; Ritter et al. 2018; Daxberger et al., "Laplace Redux", 2021):
train the target to its MAP weights θ* under a Gaussian prior, then approximate the
posterior of the last layer's weights w (weight and bias of the final ``nn.Linear``) by
a Gaussian at the MAP with the curvature of the loss there; every other layer stays at
its MAP value::

    p(w | D) ≈ N(w*, P⁻¹),   P = G + δ I,
    G = Σ_i J_iᵀ Λ_i J_i   (generalised Gauss-Newton of the log-likelihood in w)

with G Kronecker-factored (``hessian="kron"``, per layer G ≈ A ⊗ B) or dense
(``hessian="full"``), and the prior precision δ chosen by maximising the Laplace
approximation of the marginal likelihood p(D | δ) (``prior="marglik"``, no held-out data
needed) or by a grid search of the validation split's NLL under the sampled predictive
(``prior="val"``). ``sample(n)`` returns n whole weight sets: the last layer drawn from
N(w*, P⁻¹), all other parameters at θ*, so uqbench's harness scores the Monte-Carlo
("nn") predictive of the n networks like every other method's samples.

Wrapping, not re-implementing: the curvature (laplace-torch's default curvlinops GGN),
the posterior precision, the marginal-likelihood and grid-search tuning of δ and the
Kronecker algebra used for sampling (``KronDecomposed.bmm(·, exponent=-1/2)``) all come
from laplace-torch. The plugin adds the MAP fit (uqbench's shared minibatches, task loss,
seed streams and divergence check) and the translation between laplace-torch's flat
last-layer vector and uqbench's named weight sets.

Departures and choices:

- The MAP net is trained with Adam and L2 weight decay λ (``weight_decay``); δ is then
  tuned post hoc, as in Laplace Redux, rather than tied to λ.
- With ``val`` the MAP training keeps the epoch with the lowest validation NLL; without
  one (a benchmark with no validation split) it keeps the last epoch, and ``prior="val"``
  falls back to the marginal likelihood (``extra_metrics["prior_from_val"]`` = 0).
- Regression uses laplace-torch's Gaussian likelihood with the benchmark's fixed noise
  σ (``Task.noise_std``); heteroscedastic targets are refused. ``prior="val"`` scores a
  candidate δ by the validation NLL in both tasks (for regression a Gaussian NLL with σ²
  added, in place of laplace-torch's default MSE, which is blind to the variance).
- The checkpoint holds tensors only — the MAP weights, the posterior mean and the
  factors needed to sample (eigen-decomposed Kronecker factors and δ, or the dense
  posterior scale) — never laplace-torch objects, so it loads with
  ``torch.load(weights_only=True)`` and samples identically after loading.

``reference_views()`` gives the MAP network as the row ``laplace:map``, so the table
shows how far the sampled predictive moves from the network it was built on.
"""

from __future__ import annotations

import copy
import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

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
from uqbench.sampler import PointView, Progress, Task, WeightSampler
from uqbench.targets import reinitialised
from uqbench.training import (
    as_tensors,
    check_finite,
    derive_seeds,
    lr_factor,
    minibatches,
    seeded_generator,
    task_loss,
)

__all__ = ["LaplaceConfig", "LastLayerLaplace"]


@dataclass
class LaplaceConfig(CheckedConfig):
    """Settings of :class:`LastLayerLaplace` (defaults: the small CNN on MNIST-5k)."""

    owner: ClassVar[str] = "laplace"

    #: Passes over the training set for the MAP network.
    epochs: int = setting(15, check=at_least(1), search=IntRange(5, 30))
    #: Minibatch size of the MAP training.
    batch_size: int = setting(64, check=at_least(1))
    #: Adam learning rate of the MAP training.
    lr: float = setting(1e-3, check=positive, search=LogUniform(1e-4, 1e-2))
    #: Adam's L2 weight decay λ of the MAP training.
    weight_decay: float = setting(1e-4, check=non_negative, search=LogUniform(1e-6, 1e-2))
    #: Learning-rate schedule of the MAP training (``constant`` or ``cosine``).
    schedule: str = setting("constant", check=one_of("constant", "cosine"))
    #: Structure of the last layer's GGN: Kronecker-factored or dense.
    hessian: str = setting("kron", check=one_of("kron", "full"), search=Choice(("kron", "full")))
    #: How δ is chosen: marginal likelihood, or grid search of the validation NLL.
    prior: str = setting("marglik", check=one_of("marglik", "val"))
    #: One δ for the whole last layer, or one for its weight and one for its bias.
    prior_structure: str = setting("scalar", check=one_of("scalar", "layerwise"))
    #: Name of the last layer in the target (empty: laplace-torch finds it).
    last_layer: str = setting("")
    #: Minibatch size of the curvature pass.
    hessian_batch_size: int = setting(256, check=at_least(1))
    #: Sampled networks per candidate δ in ``prior="val"``.
    val_samples: int = setting(100, check=at_least(1))
    #: Candidate δ in ``prior="val"``: log-spaced over [1e-4, 1e4].
    grid_size: int = setting(33, check=at_least(2))


class LastLayerLaplace(WeightSampler[LaplaceConfig]):
    """Last-layer Laplace around a MAP network (laplace-torch); see the module docstring.

    ``extra_metrics`` after ``fit``: ``prior_precision`` (δ, the mean over groups when
    layerwise), ``prior_from_val`` (1 when δ came from the validation split),
    ``map_epoch`` (the epoch kept), ``map_val_nll`` (its validation NLL, when ``val``),
    ``train_loss`` (last epoch's mean minibatch loss) and ``laplace_s`` (seconds of
    curvature and δ tuning on top of the MAP training).
    """

    name: ClassVar[str] = "laplace"
    Config: ClassVar[type] = LaplaceConfig
    presets: ClassVar[dict[str, dict[str, Any]]] = {
        "toy1d": {"epochs": 1000, "batch_size": 20, "lr": 1e-2, "schedule": "cosine"},
        "mnist5000": {"epochs": 15},
        "mnist5k-split": {"epochs": 10},
    }

    def __init__(
        self,
        target: nn.Module,
        config: LaplaceConfig | None = None,
        *,
        task: Task | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__(target, config, task=task, device=device)
        self.state: dict[str, Any] | None = None
        #: laplace-torch's ``KronDecomposed`` posterior precision, or the dense scale.
        self._posterior: Any = None

    # --- fit -------------------------------------------------------------------------
    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Train the MAP network, then fit the last-layer posterior with laplace-torch."""
        if not self.task.is_classification and self.task.heteroscedastic:
            raise UserError(
                "laplace: heteroscedastic regression targets are not supported (laplace-torch's "
                "Gaussian likelihood has a fixed noise); use a target with one output"
            )
        seeds = derive_seeds(seed, ("init", "data", "prior"))
        x, y = (t.to(self.device) for t in as_tensors(train))
        xv, yv = (None, None) if val is None else (t.to(self.device) for t in as_tensors(val))
        net = reinitialised(self.target, seeds["init"], self.device)
        metrics = self._train_map(net, x, y, xv, yv, seeds["data"], progress)

        start = time.perf_counter()
        la = self._fit_laplace(net, x, y, xv, yv, seeds["prior"])
        prior = la.prior_precision.detach().cpu().reshape(-1)
        check_finite("laplace", {"prior precision": prior, "posterior mean": la.mean}, step=0)
        metrics["laplace_s"] = time.perf_counter() - start
        metrics["prior_precision"] = float(prior.mean())
        metrics["prior_from_val"] = float(self.config.prior == "val" and val is not None)
        self.load_state_dict(self._state_from(net, la))
        self.extra_metrics = metrics

    def _train_map(
        self,
        net: nn.Module,
        x: Tensor,
        y: Tensor,
        xv: Tensor | None,
        yv: Tensor | None,
        data_seed: int,
        progress: Progress | None,
    ) -> dict[str, float]:
        """Adam on the mean minibatch NLL + L2; keeps the epoch of lowest validation NLL."""
        cfg = self.config
        order = seeded_generator(data_seed)
        batch = min(cfg.batch_size, len(x))
        per_epoch = len(x) // batch
        total = cfg.epochs * per_epoch
        optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        best: tuple[float, int, dict[str, Tensor]] | None = None
        step, loss_sum = 0, 0.0
        for epoch in range(1, cfg.epochs + 1):
            net.train()
            loss_sum = 0.0
            for idx in minibatches(len(x), batch, order):
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * lr_factor(cfg.schedule, step, total)
                loss = task_loss(net(x[idx]).unsqueeze(0), y[idx], self.task)[0]
                check_finite("laplace", {"MAP training": loss}, step)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                loss_sum += float(loss.detach())
            report = {"loss": loss_sum / per_epoch}
            if xv is not None and yv is not None:
                report["val_nll"] = self._nll(net, xv, yv)
                if best is None or report["val_nll"] < best[0]:
                    best = (report["val_nll"], epoch, copy.deepcopy(net.state_dict()))
            if progress is not None:
                progress(step, total + 1, **report)
        metrics = {"train_loss": loss_sum / per_epoch, "map_epoch": float(cfg.epochs)}
        if best is not None:
            net.load_state_dict(best[2])
            metrics.update(map_epoch=float(best[1]), map_val_nll=best[0])
        net.eval()
        return metrics

    @torch.no_grad()
    def _nll(self, net: nn.Module, x: Tensor, y: Tensor) -> float:
        net.eval()
        total = 0.0
        for start in range(0, len(x), 1024):
            out = net(x[start : start + 1024]).unsqueeze(0)
            total += float(task_loss(out, y[start : start + 1024], self.task)[0]) * len(out[0])
        return total / len(x)

    def _fit_laplace(
        self,
        net: nn.Module,
        x: Tensor,
        y: Tensor,
        xv: Tensor | None,
        yv: Tensor | None,
        prior_seed: int,
    ) -> Any:
        """laplace-torch's last-layer posterior at ``net``, with δ tuned as configured."""
        cfg = self.config
        if self.task.is_classification:
            likelihood, extra = "classification", {}
        else:
            likelihood, extra = "regression", {"sigma_noise": self.task.noise_std}
        laplace, _ = _laplace_torch()
        la = laplace(
            net,
            likelihood,
            subset_of_weights="last_layer",
            hessian_structure=cfg.hessian,
            last_layer_name=cfg.last_layer or None,
            **extra,
        )
        loader = self._loader(x, y, cfg.hessian_batch_size)
        with warnings.catch_warnings(), torch.random.fork_rng(devices=_devices(self.device)):
            warnings.simplefilter("ignore", UserWarning)
            torch.manual_seed(prior_seed)
            try:
                la.fit(loader)
                if cfg.prior == "val" and xv is not None and yv is not None:
                    la.optimize_prior_precision(
                        method="gridsearch",
                        pred_type="nn",
                        link_approx="mc",
                        n_samples=cfg.val_samples,
                        prior_structure=cfg.prior_structure,
                        val_loader=self._loader(xv, yv, cfg.hessian_batch_size),
                        grid_size=cfg.grid_size,
                        loss=None if self.task.is_classification else self._gaussian_nll,
                    )
                else:
                    la.optimize_prior_precision(
                        method="marglik", pred_type="glm", prior_structure=cfg.prior_structure
                    )
            except torch.linalg.LinAlgError as exc:
                raise FitDiverged(
                    f"laplace: laplace-torch could not fit the last-layer posterior ({exc}); "
                    "check the MAP fit or use laplace.hessian=kron"
                ) from None
        return la

    def _gaussian_nll(self, mean: Tensor, var: Tensor, y: Tensor) -> Tensor:
        """Validation NLL of the sampled regression predictive, noise σ² included
        (laplace-torch's default regression loss, the MSE, ignores the variance)."""
        total = var.reshape(-1) + self.task.noise_std**2
        return F.gaussian_nll_loss(mean.reshape(-1), y.reshape(-1), total, full=True)

    def _loader(self, x: Tensor, y: Tensor, batch_size: int) -> DataLoader:
        """Batches in order; regression targets as ``[B, 1]``, laplace-torch's shape."""
        labels = y if self.task.is_classification else y.reshape(-1, 1).to(x.dtype)
        return DataLoader(TensorDataset(x, labels), batch_size=batch_size)

    def _state_from(self, net: nn.Module, la: Any) -> dict[str, Any]:
        """Tensors only: the MAP weights, the last layer's name and posterior factors."""
        layer = la.model.last_layer
        names = [n for n, m in la.model.model.named_modules() if m is layer]
        if not names or not isinstance(layer, nn.Linear):
            raise UserError(
                "laplace: laplace-torch did not find a final nn.Linear layer in the target; "
                "name it with --set laplace.last_layer=<module name>"
            )
        state: dict[str, Any] = {
            "map": {k: v.detach().cpu().clone() for k, v in net.named_parameters()},
            "last_layer": names[0],
            "mean": la.mean.detach().cpu().clone(),
            "config": dataclasses.asdict(self.config),
        }
        if self.config.hessian == "kron":
            precision = la.posterior_precision
            state["eigenvectors"] = [[v.detach().cpu() for v in g] for g in precision.eigenvectors]
            state["eigenvalues"] = [[v.detach().cpu() for v in g] for g in precision.eigenvalues]
            state["deltas"] = precision.deltas.detach().cpu().reshape(-1)
            state["damping"] = bool(precision.damping)
        else:
            state["scale"] = la.posterior_scale.detach().cpu().clone()
        return state

    # --- sample, save, load ----------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """n weight sets: the last layer ~ N(w*, P⁻¹) (noise drawn on the CPU with
        ``generator``), every other parameter at the MAP."""
        self.check_n(n)
        state = self._fitted()
        mean: Tensor = state["mean"]
        eps = torch.randn(n, mean.numel(), generator=generator, dtype=mean.dtype)
        if isinstance(self._posterior, Tensor):
            offset = eps @ self._posterior.T
        else:
            offset = self._posterior.bmm(eps, exponent=-0.5).reshape(n, -1)
        flat = mean.unsqueeze(0) + offset
        layer = state["last_layer"]
        weights = {k: v.unsqueeze(0).expand(n, *v.shape).clone() for k, v in state["map"].items()}
        cursor = 0
        for pname in ("weight", "bias"):
            key = f"{layer}.{pname}"
            if key in weights:
                size = weights[key][0].numel()
                weights[key] = flat[:, cursor : cursor + size].reshape(weights[key].shape)
                cursor += size
        return {k: v.to(self.device) for k, v in weights.items()}

    def map_weights(self) -> dict[str, Tensor]:
        """The MAP network's parameters (name -> tensor on ``self.device``)."""
        return {k: v.to(self.device) for k, v in self._fitted()["map"].items()}

    def reference_views(self) -> dict[str, WeightSampler]:
        """The MAP network the posterior is built around: the table row ``laplace:map``."""
        return {"map": PointView(self, self.map_weights())}

    def state_dict(self) -> dict:
        """The MAP weights, the posterior mean and the factors to sample (tensors only)."""
        return self._fitted()

    def load_state_dict(self, state: dict) -> None:
        shapes = self.param_shapes()
        saved = state["map"]
        if set(saved) != set(shapes) or any(saved[k].shape != shapes[k] for k in shapes):
            raise UserError(
                "laplace checkpoint does not match the target's parameters; "
                "load it with the target it was trained with"
            )
        self.config = LaplaceConfig(**state["config"])
        if "eigenvectors" in state:
            _, kron_decomposed = _laplace_torch()
            self._posterior = kron_decomposed(
                [list(g) for g in state["eigenvectors"]],
                [list(g) for g in state["eigenvalues"]],
                deltas=state["deltas"],
                damping=state["damping"],
            )
        else:
            self._posterior = state["scale"]
        self.state = state

    def _fitted(self) -> dict[str, Any]:
        if self.state is None:
            raise UserError("laplace is not fitted; call fit or load a checkpoint first")
        return self.state


def _laplace_torch() -> tuple[Any, Any]:
    """laplace-torch's ``Laplace`` and ``KronDecomposed``, imported on first use.

    Registering the plugin then costs nothing (``uqbench list`` and runs of other methods
    never import it), and the FutureWarning that its asdl dependency raises at import
    (``torch.jit.script`` is deprecated) does not reach the command line's output.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script", category=FutureWarning)
        from laplace import Laplace
        from laplace.utils.matrix import KronDecomposed
    return Laplace, KronDecomposed


def _devices(device: torch.device) -> list[int]:
    """CUDA devices whose RNG ``fork_rng`` must save (the sampler's, if on CUDA)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
