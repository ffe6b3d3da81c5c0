"""MGDA (Désidéri 2012; Sener and Koltun, NeurIPS 2018).

"Multi-Task Learning as Multi-Objective Optimization".
"""

from __future__ import annotations

from collections.abc import Sequence

from torchjd.aggregation import MGDA, Aggregator
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("mgda")
class Mgda(GradientAggregation):
    """The minimum-norm point of the convex hull of the task gradients (Frank-Wolfe).

    The direction decreases every task's loss to first order (or is zero at a Pareto-stationary
    point). ``gradients="representation"`` is MGDA-UB, the paper's cheap upper bound. Limits:
    favours the task with the smallest gradient; slow progress when one gradient is tiny.

    Args:
        tasks: task names.
        epsilon: stop the Frank-Wolfe loop when the step falls below this.
        max_iters: Frank-Wolfe iterations at most.
        gradients: "parameters" or "representation" (MGDA-UB).
    """

    def __init__(
        self,
        tasks: Sequence[str],
        epsilon: float = 0.001,
        max_iters: int = 100,
        gradients: Gradients = "parameters",
    ) -> None:
        if epsilon <= 0 or max_iters < 1:
            raise ValueError("epsilon must be > 0 and max_iters >= 1")
        self.epsilon, self.max_iters = float(epsilon), int(max_iters)
        super().__init__(tasks, gradients)

    @override
    def make_aggregator(self) -> Aggregator:
        return MGDA(epsilon=self.epsilon, max_iters=self.max_iters)
