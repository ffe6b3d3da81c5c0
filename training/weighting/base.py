"""The weighting seam: how per-task losses become one update of the shared parameters.

A weighting owns the backward pass. Loss-weighting methods (equal, fixed, uncertainty, DWA) turn
the losses into one scalar; gradient-based methods (PCGrad, MGDA, CAGrad, ...) need each task's
gradient with respect to the shared parameters or the shared representation, and so get both in
the ``BackwardContext``. Hyperparameters are typed constructor arguments; anything that changes
while training (learned log-variances, loss history) lives in the module's ``state_dict`` so
checkpoints carry it.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from typing_extensions import override

from training.errors import ConfigError
from training.registry import Registry


def _identity(t: torch.Tensor) -> torch.Tensor:
    return t


@dataclass
class BackwardContext:
    """Everything a weighting may read to compute one update (explicit, never set on the object).

    Attributes:
        shared_parameters: parameters shared by every task (backbone, neck).
        shared_features: the shared representation(s) the heads read, still in the graph.
        task_parameters: parameters of one task each (heads); gradient-based methods give them
            their own task's gradient (when empty, every non-shared leaf gets the summed loss).
        step: optimizer steps taken so far.
        epoch: current epoch (0-based).
        scale: multiplies a loss before ``backward`` (the AMP grad scaler; identity without AMP).
    """

    shared_parameters: list[nn.Parameter]
    shared_features: list[torch.Tensor] = field(default_factory=list)
    task_parameters: list[nn.Parameter] = field(default_factory=list)
    step: int = 0
    epoch: int = 0
    scale: Callable[[torch.Tensor], torch.Tensor] = _identity


class Weighting(nn.Module, ABC):
    """Turns per-task losses into gradients on the model; returns the weights it used (to log).

    A method that needs the losses of the same batch after the optimizer step (FAMO) sets
    ``wants_losses_after_step``: the trainer then evaluates the batch again, without gradients,
    and hands the losses to :meth:`after_step`.
    """

    wants_losses_after_step: bool = False

    def __init__(self, tasks: Sequence[str]) -> None:
        """Weight the tasks named ``tasks`` (their order is the order of any state tensors)."""
        super().__init__()
        if not tasks:
            raise ValueError("a weighting needs at least one task")
        self.tasks = list(tasks)

    @abstractmethod
    def backward(self, losses: dict[str, torch.Tensor], ctx: BackwardContext) -> dict[str, float]:
        """Run the backward pass for ``losses``; return each task's effective weight."""

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Called once per epoch with that epoch's mean training loss per task."""

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        """The same batch's losses after the optimizer step (if ``wants_losses_after_step``)."""

    def _check(self, losses: dict[str, torch.Tensor]) -> None:
        if set(losses) != set(self.tasks):
            raise ValueError(f"losses for {sorted(losses)} but weighting built for {self.tasks}")


class LossWeighting(Weighting):
    """A weighting that is a (possibly learned) linear combination of the losses."""

    @abstractmethod
    def combine(
        self, losses: dict[str, torch.Tensor], ctx: BackwardContext
    ) -> dict[str, torch.Tensor]:
        """Each task's term of the total loss (weighted loss plus any regulariser)."""

    @override
    def backward(self, losses: dict[str, torch.Tensor], ctx: BackwardContext) -> dict[str, float]:
        self._check(losses)
        terms = self.combine(losses, ctx)
        total = torch.stack([terms[t] for t in self.tasks]).sum()
        ctx.scale(total).backward()
        with torch.no_grad():
            return {t: float(terms[t] / losses[t]) if float(losses[t]) else 0.0 for t in self.tasks}


WEIGHTINGS: Registry[type[Weighting]] = Registry("weighting")


def build_weighting(
    name: str,
    tasks: Sequence[str],
    params: dict[str, Any] | None = None,
    regression: Sequence[str] | None = None,
) -> Weighting:
    """Instantiate a registered weighting; unknown or ill-typed hyperparameters are ConfigErrors.

    ``regression`` names the tasks whose loss is a regression error (from their task kinds): a
    weighting with a ``regression`` parameter gets it unless the config sets it.
    """
    cls = WEIGHTINGS.get(name)
    params = dict(params or {})
    sig = inspect.signature(cls.__init__)
    accepted = [p for p in sig.parameters if p not in ("self", "tasks")]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(
            f"weighting {name!r} has no parameter(s) {unknown}; it accepts {accepted or 'none'}"
        )
    if regression is not None and "regression" in accepted and "regression" not in params:
        params["regression"] = list(regression)
    try:
        return cls(tasks, **params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"weighting {name!r}: {e}") from e
