"""Fixed weights: a hand-tuned constant weight per task."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext, LossWeighting


@WEIGHTINGS.register("fixed")
class Fixed(LossWeighting):
    """Total loss = sum_t w_t L_t with constant ``weights`` (tasks not listed get 1.0).

    Args:
        tasks: task names.
        weights: task -> non-negative weight.
    """

    def __init__(self, tasks: Sequence[str], weights: dict[str, float] | None = None) -> None:
        super().__init__(tasks)
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(f"weights given for unknown tasks {unknown}; tasks are {self.tasks}")
        if any(w < 0 for w in weights.values()):
            raise ValueError(f"weights must be >= 0, got {weights}")
        self.weights = {t: float(weights.get(t, 1.0)) for t in self.tasks}

    @override
    def combine(
        self, losses: dict[str, torch.Tensor], ctx: BackwardContext
    ) -> dict[str, torch.Tensor]:
        return {t: self.weights[t] * losses[t] for t in self.tasks}
