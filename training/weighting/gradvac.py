"""Gradient Vaccine (Wang et al., ICLR 2021).

"Gradient Vaccine: Investigating and Improving Multi-task Optimization in Massively
Multilingual Models".
"""

from __future__ import annotations

from collections.abc import Sequence

from torchjd.aggregation import Aggregator, GradVac
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("gradvac")
class GradVacWeighting(GradientAggregation):
    """Like PCGrad, but pulls each pair's cosine similarity up to a running target, not just to 0.

    The target for each pair is an exponential moving average of its observed similarity, so
    gradients that usually agree are kept aligned even when they do not conflict. Limits: the
    targets are state (carried in checkpoints); random pair order.

    Args:
        tasks: task names.
        beta: EMA rate of the similarity targets (0-1).
        eps: numerical guard.
        gradients: "parameters" or "representation".
    """

    def __init__(
        self,
        tasks: Sequence[str],
        beta: float = 0.5,
        eps: float = 1e-8,
        gradients: Gradients = "parameters",
    ) -> None:
        if not 0 <= beta <= 1:
            raise ValueError(f"beta must be in [0, 1], got {beta}")
        self.beta, self.eps = float(beta), float(eps)
        super().__init__(tasks, gradients)

    @override
    def make_aggregator(self) -> Aggregator:
        return GradVac(beta=self.beta, eps=self.eps)
