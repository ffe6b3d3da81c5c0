"""PCGrad (Yu et al., NeurIPS 2020, "Gradient Surgery for Multi-Task Learning")."""

from __future__ import annotations

from collections.abc import Sequence

from torchjd.aggregation import Aggregator, PCGrad
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("pcgrad")
class PCGradWeighting(GradientAggregation):
    """Project each task gradient onto the normal plane of every gradient it conflicts with.

    Conflicting pairs (negative inner product) lose their conflicting component, in a random
    order, then the projected gradients are summed. With two tasks the result never conflicts
    with either. Limits: random order makes it stochastic; with many tasks some conflict remains.

    Args:
        tasks: task names.
        gradients: "parameters" or "representation".
    """

    def __init__(self, tasks: Sequence[str], gradients: Gradients = "parameters") -> None:
        super().__init__(tasks, gradients)

    @override
    def make_aggregator(self) -> Aggregator:
        return PCGrad()
