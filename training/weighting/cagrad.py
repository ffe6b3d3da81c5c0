"""CAGrad (Liu et al., NeurIPS 2021, "Conflict-Averse Gradient Descent for Multi-task Learning")."""

from __future__ import annotations

from collections.abc import Sequence

from torchjd.aggregation import Aggregator, CAGrad
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("cagrad")
class CAGradWeighting(GradientAggregation):
    """Maximise the worst task's improvement within a ball around the average gradient.

    d = argmax_{|d - g0| <= c |g0|} min_t <g_t, d>, g0 the mean gradient; c = 0 is plain gradient
    descent on the mean loss, larger c leans toward MGDA. Needs cvxpy. Limits: one small convex
    problem per step; c needs tuning (the paper uses 0.4-0.5).

    Args:
        tasks: task names.
        c: radius of the ball, relative to |g0| (>= 0).
        norm_eps: guards the normalisation of the Gramian.
        gradients: "parameters" or "representation".
    """

    def __init__(
        self,
        tasks: Sequence[str],
        c: float = 0.5,
        norm_eps: float = 1e-4,
        gradients: Gradients = "parameters",
    ) -> None:
        if c < 0:
            raise ValueError(f"c must be >= 0, got {c}")
        self.c, self.norm_eps = float(c), float(norm_eps)
        super().__init__(tasks, gradients)

    @override
    def make_aggregator(self) -> Aggregator:
        return CAGrad(c=self.c, norm_eps=self.norm_eps)
