"""Uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext, LossWeighting


@WEIGHTINGS.register("uncertainty")
class Uncertainty(LossWeighting):
    """Learned homoscedastic uncertainty: L = sum_t exp(-s_t) L_t + s_t, with s_t = log sigma_t^2.

    The s_t are parameters trained with the model (the trainer adds this module's parameters to
    the optimizer, without weight decay). The simplified form above (as in LibMTL) treats every
    task alike instead of the paper's 1/2 factor for regression; it is scale-invariant in the
    same way. Limits: weights drift toward tasks with small losses; a loss that can go negative
    breaks the derivation.

    Args:
        tasks: task names.
        init: initial log-variance for every task.
    """

    def __init__(self, tasks: Sequence[str], init: float = 0.0) -> None:
        super().__init__(tasks)
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init)))

    @override
    def combine(
        self, losses: dict[str, torch.Tensor], ctx: BackwardContext
    ) -> dict[str, torch.Tensor]:
        s = self.log_vars
        return {t: torch.exp(-s[i]) * losses[t] + s[i] for i, t in enumerate(self.tasks)}

    @override
    def backward(self, losses: dict[str, torch.Tensor], ctx: BackwardContext) -> dict[str, float]:
        super().backward(losses, ctx)
        # Report exp(-s_t), the factor on each loss, not the ratio that includes the regulariser.
        return {t: float(torch.exp(-self.log_vars[i]).detach()) for i, t in enumerate(self.tasks)}
