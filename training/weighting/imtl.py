"""IMTL (Liu et al., ICLR 2021, "Towards Impartial Multi-task Learning"): IMTL-L and IMTL-G."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext
from training.weighting.gradient import Gradients
from training.weighting.imtl_g import ImtlG


@WEIGHTINGS.register("imtl")
class Imtl(ImtlG):
    """Impartial on both losses and gradients: learned loss scales, then equal projections.

    IMTL-L replaces each loss L_t by e^{s_t} L_t - s_t with a learned s_t (a parameter of this
    module, trained by the optimizer with the model): its gradient e^{s_t} L_t - 1 drives the
    scaled losses to 1, so no task dominates by the size of its loss. IMTL-G then combines the
    scaled losses' gradients of the shared part so that the direction projects equally onto
    every task's unit gradient (``imtl_g``). Limits: as IMTL-G's; assumes positive losses.

    Args:
        tasks: task names.
        gradients: "parameters" or "representation".
    """

    def __init__(self, tasks: Sequence[str], gradients: Gradients = "parameters") -> None:
        super().__init__(tasks, gradients)
        self.loss_scale = nn.Parameter(torch.zeros(len(self.tasks)))

    @override
    def backward(self, losses: dict[str, torch.Tensor], ctx: BackwardContext) -> dict[str, float]:
        self._check(losses)
        s = self.loss_scale
        # the model's part: IMTL-G on the scaled losses (the scales held fixed)
        scales = torch.exp(s.detach())
        scaled = {t: scales[i] * losses[t] - s[i].detach() for i, t in enumerate(self.tasks)}
        weights = super().backward(scaled, ctx)
        # the scales' own gradient, d/ds_t (e^{s_t} L_t - s_t), through the same loss scale
        own = torch.stack([losses[t].detach() for t in self.tasks])
        ctx.scale((torch.exp(s) * own - s).sum()).backward(inputs=[s])
        return weights
