"""Gradient aggregation: each task's gradient of the shared part, combined into one direction.

The combination rules (MGDA, PCGrad, CAGrad, UPGrad, ...) are torchjd's aggregators (Jacobian
descent, Quinton and Rey 2024); this module feeds them and applies what they return:

- ``gradients="parameters"``: the Jacobian has one row per task, the gradient of its loss with
  respect to every shared parameter (one backward pass per task through the shared layers). The
  aggregated row becomes the shared parameters' gradient.
- ``gradients="representation"``: rows are gradients with respect to the shared representation
  the heads read (MGDA-UB, Sener and Koltun 2018): no per-task pass through the backbone. The
  method's weights come from those rows' Gramian, and the shared layers get one backward pass of
  sum_t w_t L_t (exact, however the representation's tensors depend on one another). Only
  methods defined by weights on the Gramian can do this (not GradDrop or Nash-MTL).

Task-specific parameters always get the gradient of their own task's loss. The logged weights
are the aggregator's weights on the Jacobian's rows when it has them (Gramian-based methods),
otherwise each task's effective coefficient <d, g_t> / |g_t|^2.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torchjd.aggregation import Aggregator, GramianWeightedAggregator
from typing_extensions import override

from training import distributed
from training.weighting.base import BackwardContext, Weighting

Gradients = Literal["parameters", "representation"]


def _flat(grads: Sequence[torch.Tensor | None], like: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat(
        [
            (g if g is not None else torch.zeros_like(x)).reshape(-1)
            for g, x in zip(grads, like, strict=True)
        ]
    )


def _split(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    out, start = [], 0
    for x in like:
        out.append(vector[start : start + x.numel()].view_as(x))
        start += x.numel()
    return out


def _accumulate(param: torch.Tensor, grad: torch.Tensor) -> None:
    g = grad.to(param.dtype)
    param.grad = g.clone() if param.grad is None else param.grad + g


class GradientAggregation(Weighting):
    """Base of the gradient-based methods: subclasses say which torchjd aggregator combines."""

    def __init__(self, tasks: Sequence[str], gradients: Gradients = "parameters") -> None:
        """Combine the gradients of ``tasks``' losses, taken with respect to ``gradients``."""
        super().__init__(tasks)
        if gradients not in ("parameters", "representation"):
            raise ValueError(
                f"gradients must be 'parameters' or 'representation', got {gradients!r}"
            )
        self.gradients: Gradients = gradients
        self.aggregator = self.make_aggregator()
        if gradients == "representation" and not isinstance(
            self.aggregator, GramianWeightedAggregator
        ):
            raise ValueError(
                f"{type(self).__name__} combines gradients coordinate by coordinate; it needs "
                "gradients='parameters'"
            )
        # with ``record`` on, the last Jacobian and direction are kept (tests, diagnostics)
        self.record = False
        self.last_direction: torch.Tensor | None = None
        self.last_jacobian: torch.Tensor | None = None

    @abstractmethod
    def make_aggregator(self) -> Aggregator:
        """The torchjd aggregator that combines the Jacobian's rows."""

    def _targets(self, ctx: BackwardContext) -> list[torch.Tensor]:
        if self.gradients == "representation":
            targets = [f for f in ctx.shared_features if f.requires_grad]
            if not targets:
                raise ValueError("gradients='representation' needs the model's shared features")
            return targets
        return [p for p in ctx.shared_parameters if p.requires_grad]

    @override
    def backward(self, losses: dict[str, torch.Tensor], ctx: BackwardContext) -> dict[str, float]:
        self._check(losses)
        targets = self._targets(ctx)
        scaled = [ctx.scale(losses[t]) for t in self.tasks]
        rows = [
            _flat(torch.autograd.grad(loss, targets, retain_graph=True, allow_unused=True), targets)
            for loss in scaled
        ]
        # Under mixed precision every row is multiplied by the grad scaler's factor S: combine
        # the true gradients and scale the direction back, so methods that clip or normalise
        # (Nash-MTL's max_norm) see the same numbers with and without it.
        factor = float(ctx.scale(torch.ones((), device=rows[0].device)))
        jacobian = torch.stack(rows) / factor
        with torch.no_grad():
            direction, weights = self._combine(jacobian)
            direction = direction * factor
        if self.record:
            self.last_jacobian, self.last_direction = jacobian.detach(), direction.detach()

        total = torch.stack(scaled).sum()
        shared = [p for p in ctx.shared_parameters if p.requires_grad]
        if ctx.task_parameters:
            torch.autograd.backward(total, inputs=list(ctx.task_parameters), retain_graph=True)
        else:  # task parameters unknown: every leaf gets the summed loss, shared ones restored
            saved = [None if p.grad is None else p.grad.clone() for p in shared]
            total.backward(retain_graph=True)
            for p, g in zip(shared, saved, strict=True):
                p.grad = g
        if self.gradients == "representation":
            combined = torch.stack([w * loss for w, loss in zip(weights, scaled, strict=True)])
            torch.autograd.backward(combined.sum(), inputs=shared)
        else:
            for p, g in zip(targets, _split(direction, targets), strict=True):
                _accumulate(p, g)
        return {t: float(w) for t, w in zip(self.tasks, weights, strict=True)}

    def _combine(self, jacobian: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        """The direction and the weights; under data parallelism, the same on every rank.

        Parameter gradients are averaged across ranks first (the global batch's Jacobian);
        representation gradients belong to each rank's own samples, so their Gramians are
        summed. Gramian-based methods weigh the rows once (direction = weights @ rows); the
        others (coordinate-wise) return a direction, and each task's effective coefficient
        <d, g_t> / |g_t|^2 is reported as its weight.
        """
        if self.gradients == "parameters" and distributed.active():
            jacobian = distributed.average_(jacobian.clone())
        if isinstance(self.aggregator, GramianWeightedAggregator):
            gramian: Any = jacobian @ jacobian.T
            if self.gradients == "representation":
                gramian = distributed.sum_(gramian)
            weights = self.gramian_weights(gramian)
            return weights @ jacobian, weights.tolist()
        direction = self.aggregator(jacobian)
        norms = (jacobian * jacobian).sum(dim=1).clamp_min(1e-20)
        return direction, ((jacobian @ direction) / norms).tolist()

    def gramian_weights(self, gramian: torch.Tensor) -> torch.Tensor:
        """The weights of a Gramian-based method (a subclass may solve it its own way).

        The Gramian is divided by its trace first: these methods' weights do not change when
        it is scaled, but torchjd zeroes a Gramian whose trace is below 1e-4 (CAGrad's update
        became 0, UPGrad's and DualProj's the plain mean) and adds 1e-8 to GradVac's norms.
        """
        trace = gramian.diagonal().sum()
        if trace > 0:
            gramian = gramian / trace
        return self.aggregator.gramian_weighting(gramian)

    @override
    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        # Stateful aggregators (GradVac's running targets) start with empty buffers; give them a
        # tensor to load into, so a resumed run carries the state on.
        for module_prefix, module in self.named_modules(prefix=prefix.rstrip(".")):
            for name, buf in list(module._buffers.items()):
                key = f"{module_prefix}.{name}" if module_prefix else name
                if buf is None and key in state_dict:
                    module._buffers[name] = torch.empty_like(state_dict[key])
                    # torchjd's stateful weightings also keep the (size, dtype) their state was
                    # made for, and start again from zeros when it does not match: set it
                    if hasattr(module, "_state_key"):
                        value = state_dict[key]
                        module._state_key = (value.shape[0], value.dtype)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
