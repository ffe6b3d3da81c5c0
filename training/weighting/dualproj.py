"""DualProj (Quinton and Rey, 2024).

The dual-cone projection of GEM (Lopez-Paz and Ranzato, NeurIPS 2017) applied to the mean
gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

from torchjd._linalg._dual_cone import QuadprogProjector
from torchjd.aggregation import Aggregator, DualProj
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("dualproj")
class DualProjWeighting(GradientAggregation):
    """Project the mean gradient onto the dual cone of the task gradients.

    The closest direction to the mean gradient that conflicts with no task (<d, g_t> >= 0).
    Limits: when the cone is thin, the projection can be much shorter than the mean gradient.

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
        return DualProj(projector=QuadprogProjector(reg_eps=self.reg_eps))
