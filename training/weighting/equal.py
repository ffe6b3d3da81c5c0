"""Equal weighting: the plain sum of task losses (the usual multi-task baseline)."""

from __future__ import annotations

import torch
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext, LossWeighting


@WEIGHTINGS.register("equal")
class Equal(LossWeighting):
    """Total loss = sum of task losses. No hyperparameters."""

    @override
    def combine(
        self, losses: dict[str, torch.Tensor], ctx: BackwardContext
    ) -> dict[str, torch.Tensor]:
        return dict(losses)
