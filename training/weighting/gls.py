"""Geometric loss strategy (Chennupati et al., CVPR Workshops 2019, "MultiNet++")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext, Weighting


@WEIGHTINGS.register("gls")
class GeometricLoss(Weighting):
    """Minimise the geometric mean of the losses, (prod_t L_t)^(1/T).

    Invariant to each loss's scale: the gradient weighs task t by L / (T L_t), so a task whose
    loss is small relative to the others gets a larger weight. Limits: a loss at 0 makes the
    product 0 (losses are clamped to 1e-12); every loss must be positive.

    Args:
        tasks: task names.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)

    @override
    def backward(self, losses: dict[str, torch.Tensor], ctx: BackwardContext) -> dict[str, float]:
        self._check(losses)
        stacked = torch.stack([losses[t] for t in self.tasks]).clamp_min(1e-12)
        total = torch.exp(stacked.log().mean())
        ctx.scale(total).backward()
        with torch.no_grad():
            weights = total / (len(self.tasks) * stacked)
        return {t: float(weights[i]) for i, t in enumerate(self.tasks)}
