"""The sampler contract: every method is a distribution over the weights of one target net.

A fitted :class:`WeightSampler` draws ``n`` whole weight sets at once as a dict
``parameter name -> Tensor[n, *param.shape]``, keyed exactly like
``target.named_parameters()``. The harness runs those ``n`` networks in one vmapped call
(:func:`uqbench.functional.stacked_forward`); no method evaluates networks itself.

A target with batch-norm layers normalises with running statistics that depend on each
network's weights, so for such a target the dict also carries every network's running
means and variances (``bn.running_mean -> Tensor[n, C]``, the names of
:func:`uqbench.targets.batch_norm_statistics`). Only methods that produce them declare
``batch_norm = True``; the others refuse the target when they are built.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from uqbench.errors import UserError
from uqbench.targets import batch_norm_statistics

#: The config dataclass type of a sampler (``WeightSampler[MyConfig]``).
ConfigT = TypeVar("ConfigT")

#: ``progress(step, total, **metrics)``: called by ``fit`` so the CLI can show progress.
Progress = Callable[..., None]


@dataclass(frozen=True)
class Task:
    """What the target net predicts and under which likelihood it is trained.

    classification: the net outputs ``num_classes`` logits; loss = cross-entropy.
    regression: the net outputs the mean (1 unit), or mean and log-variance (2 units,
    ``heteroscedastic``); with one output the likelihood is N(mean, noise_std**2).
    """

    kind: Literal["classification", "regression"] = "classification"
    num_classes: int = 10
    noise_std: float = 1.0
    heteroscedastic: bool = False

    @property
    def is_classification(self) -> bool:
        return self.kind == "classification"


class WeightSampler(ABC, Generic[ConfigT]):
    """A distribution over the weights of ``target``, fitted to a training set.

    Subclasses set ``name`` (the registry key) and ``Config`` (a dataclass whose defaults
    work, ideally a :class:`uqbench.configs.CheckedConfig`), name it as the type argument
    (``class MyMethod(WeightSampler[MyConfig])``, so ``self.config`` is typed), and
    implement ``fit``, ``sample``, ``state_dict`` and ``load_state_dict``.
    """

    name: ClassVar[str]
    Config: ClassVar[type]
    #: Largest ``n`` that ``sample`` can return (an ensemble has M members); None = any.
    max_samples: int | None = None
    #: Benchmark name -> config overrides tuned for it, applied before the user's ``--set``.
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: Whether ``sample`` returns per-network batch-norm statistics (see the module), so
    #: that a target with batch-norm layers is scored correctly; False refuses one.
    batch_norm: ClassVar[bool] = False

    def __init__(
        self,
        target: nn.Module,
        config: ConfigT | None = None,
        *,
        task: Task | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        statistics = batch_norm_statistics(target)
        if statistics and not self.batch_norm:
            layers = sorted({name.rsplit(".", 1)[0] for name in statistics})
            raise UserError(
                f"{self.name}: the target has batch-norm layers ({', '.join(layers)}) and "
                f"{self.name} does not produce per-network batch-norm statistics; use a "
                "target without batch-norm or a method that handles it (swag)"
            )
        self.target = target.to(device)
        self.config: ConfigT = config if config is not None else self.Config()
        self.task = task if task is not None else Task()
        self.device = torch.device(device)
        #: Extra numbers a method reports beside the shared metrics (e.g. APD's teacher).
        self.extra_metrics: dict[str, float] = {}

    # --- the contract -------------------------------------------------------------
    @abstractmethod
    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Fit the weight distribution to ``train`` (deterministic given ``seed``).

        ``val`` is the benchmark's validation split: the only data a method may use for
        any choice (keep-best, early stopping, an internal holdout). It never holds test
        or OOD data; None where a benchmark has no validation split.
        """

    @abstractmethod
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw ``n`` weight sets: name -> Tensor[n, *shape] on ``self.device``."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to sample again after ``load_state_dict`` (tensors, numbers)."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

    def reference_views(self) -> dict[str, WeightSampler]:
        """Other samplers this fit produced, scored beside it by the same harness.

        Each becomes its own table row, ``<method>:<name>`` (APD: ``apd:teacher``, the SGLD
        samples it distilled), so a reader sees what the method gained or lost against
        it. Default: none.
        """
        return {}

    # --- shared helpers -------------------------------------------------------------
    def check_n(self, n: int) -> None:
        """Raise a UserError when ``n`` is not a number of networks this sampler can draw."""
        if n < 1:
            raise UserError(f"{self.name}: asked for {n} sampled networks; ask for at least 1")
        if self.max_samples is not None and n > self.max_samples:
            raise UserError(
                f"{self.name}: asked for {n} networks but it holds only {self.max_samples}; "
                f"ask for at most {self.max_samples} samples, or train more members"
            )

    def param_shapes(self) -> dict[str, torch.Size]:
        """Parameter names and shapes of the target net, in registration order."""
        return {k: p.shape for k, p in self.target.named_parameters()}

    def num_stored_parameters(self) -> int:
        """How many numbers the method stores to sample again (the ``params`` cost metric)."""
        total = 0
        for value in _tensors(self.state_dict()):
            if value.is_floating_point():
                total += value.numel()
        return total

    @classmethod
    def make_config(
        cls, overrides: dict[str, str] | None = None, *, benchmark: str | None = None
    ) -> Any:
        """Build ``Config``: defaults, then ``presets[benchmark]``, then string overrides
        (``--set name.key=value``) cast to each field's type — all overrides at once, so
        rules between fields judge the final combination, not an intermediate one."""
        config = cls.Config()
        if benchmark is not None and benchmark in cls.presets:
            config = dataclasses.replace(config, **cls.presets[benchmark])
        fields = {f.name for f in dataclasses.fields(config)}
        changes = {}
        for key, raw in (overrides or {}).items():
            if key not in fields:
                raise UserError(
                    f"{cls.name} has no setting {key!r}; "
                    f"known settings: {', '.join(sorted(fields))}"
                )
            changes[key] = _cast(raw, getattr(config, key), f"{cls.name}.{key}")
        return dataclasses.replace(config, **changes) if changes else config


def _cast(raw: Any, current: Any, label: str) -> Any:
    """``raw`` (a string as on the command line, or an already typed value) as a value of
    the type of the field's ``current`` value; non-finite floats are refused."""
    if not isinstance(raw, str):
        return _check_typed(raw, current, label)
    try:
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError(raw)
            return value
        if isinstance(current, tuple):
            return (
                tuple(type(current[0])(v) for v in raw.split(","))
                if current
                else tuple(raw.split(","))
            )
        if current is None:
            return None if raw.lower() == "none" else raw
        return type(current)(raw)
    except ValueError:
        raise UserError(f"{label}={raw}: expected {_kind(current)}") from None


def _kind(current: Any) -> str:
    return {bool: "true or false", int: "an integer", float: "a finite number"}.get(
        type(current), type(current).__name__
    )


def _check_typed(value: Any, current: Any, label: str) -> Any:
    ok = (
        current is None
        or (isinstance(current, bool) and isinstance(value, bool))
        or (
            isinstance(current, int)
            and not isinstance(current, bool)
            and isinstance(value, int)
            and not isinstance(value, bool)
        )
        or (
            isinstance(current, float)
            and isinstance(value, int | float)
            and not isinstance(value, bool)
        )
        or (isinstance(current, tuple) and isinstance(value, list | tuple))
        or (isinstance(current, str) and isinstance(value, str))
    )
    if not ok:
        raise UserError(f"{label}={value!r}: expected {_kind(current)}")
    if isinstance(current, float):
        value = float(value)
        if not math.isfinite(value):
            raise UserError(f"{label}={value!r}: expected {_kind(current)}")
    if isinstance(current, tuple):
        value = tuple(value)
    return value


def _tensors(obj: Any):
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _tensors(v)


class PointView(WeightSampler):
    """One fixed network of a fitted sampler, as a sampler of its own (``max_samples`` 1).

    For :meth:`WeightSampler.reference_views` rows such as ``laplace:map`` or ``swag:swa``:
    the harness scores the single network beside the method's samples. ``weights`` is a
    weight dict (name -> Tensor of the parameter's shape) or a function returning one,
    read when sampled, so the view follows its owner after a ``load_state_dict``.
    """

    name: ClassVar[str] = "point-view"
    Config: ClassVar[type] = dict
    max_samples = 1
    #: A view returns what its owner's weights hold (statistics included where it has them).
    batch_norm: ClassVar[bool] = True

    def __init__(
        self, owner: WeightSampler, weights: dict[str, Tensor] | Callable[[], dict[str, Tensor]]
    ) -> None:
        super().__init__(owner.target, owner.config, task=owner.task, device=owner.device)
        self.owner_name = owner.name
        self._weights = weights

    def weights(self) -> dict[str, Tensor]:
        return self._weights() if callable(self._weights) else self._weights

    def fit(
        self,
        train: Dataset,
        *,
        seed: int,
        val: Dataset | None = None,
        progress: Progress | None = None,
    ) -> None:
        raise UserError(f"this is a view of a fitted {self.owner_name}; fit {self.owner_name}")

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        self.check_n(n)
        return {k: v.unsqueeze(0).clone() for k, v in self.weights().items()}

    def state_dict(self) -> dict:
        return {"weights": {k: v.detach().cpu() for k, v in self.weights().items()}}

    def load_state_dict(self, state: dict) -> None:
        self._weights = {k: v.to(self.device) for k, v in state["weights"].items()}
