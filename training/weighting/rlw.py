"""Random loss weighting (Lin et al., TMLR 2022, "Reasonable Effectiveness of Random Weighting")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext, LossWeighting


@WEIGHTINGS.register("rlw")
class RandomLossWeighting(LossWeighting):
    """Fresh random weights every step: w = T * softmax(z), z ~ N(0, I).

    A strong baseline in the paper: random weights escape the bad local minima a fixed
    weighting can settle in. Scaled by T so that the mean weight is 1, like ``equal``. Draws from
    torch's generator, so a seeded run (and a resumed one) repeats the same weights. Limits:
    noisy; no task is ever favoured on purpose.

    Args:
        tasks: task names.
    """

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__(tasks)

    @override
    def combine(
        self, losses: dict[str, torch.Tensor], ctx: BackwardContext
    ) -> dict[str, torch.Tensor]:
        n = len(self.tasks)
        w = n * torch.softmax(torch.randn(n), dim=0)
        return {t: float(w[i]) * losses[t] for i, t in enumerate(self.tasks)}
