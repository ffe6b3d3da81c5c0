"""UPGrad (Quinton and Rey, 2024, "Jacobian Descent for Multi-Objective Optimization")."""

from __future__ import annotations

from collections.abc import Sequence

from torchjd._linalg._dual_cone import QuadprogProjector
from torchjd.aggregation import Aggregator, UPGrad
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("upgrad")
class UPGradWeighting(GradientAggregation):
    """Project every task gradient onto the dual cone of all of them, then average.

    The result never conflicts with any task gradient (<d, g_t> >= 0 for all t) and is
    proportional to the mean gradient when none conflict. Limits: a quadratic program per
    gradient per step (small: one variable per task).

    Args:
        tasks: task names.
        reg_eps: added to the diagonal of the normalised Gramian before the quadratic program
            (robust to nearly dependent gradients; the result may then conflict by about this
            much in cosine; 0 = exact).
        gradients: "parameters" or "representation".
    """

    def __init__(
        self, tasks: Sequence[str], reg_eps: float = 1e-4, gradients: Gradients = "parameters"
    ) -> None:
        if reg_eps < 0:
            raise ValueError(f"reg_eps must be >= 0, got {reg_eps}")
        self.reg_eps = float(reg_eps)
        super().__init__(tasks, gradients)

    @override
    def make_aggregator(self) -> Aggregator:
        return UPGrad(projector=QuadprogProjector(reg_eps=self.reg_eps))
