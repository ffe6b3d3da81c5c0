"""GradDrop (Chen et al., NeurIPS 2020).

"Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign Dropout".
"""

from __future__ import annotations

from collections.abc import Sequence

from torchjd.aggregation import Aggregator, GradDrop
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("graddrop")
class GradDropWeighting(GradientAggregation):
    """Per coordinate, keep only the gradients of one sign, chosen at random by sign purity.

    A coordinate where the tasks agree keeps every gradient; where they disagree, the positive or
    negative ones are kept with probability given by their share. Applied here to the shared
    parameters' gradients (the paper applies it at the shared activations, which would need
    the representation's gradient backpropagated coordinate by coordinate). Limits:
    stochastic; ignores gradient magnitudes in the choice.

    Args:
        tasks: task names.
        gradients: "parameters" (the only mode a coordinate-wise method supports).
    """

    def __init__(self, tasks: Sequence[str], gradients: Gradients = "parameters") -> None:
        super().__init__(tasks, gradients)

    @override
    def make_aggregator(self) -> Aggregator:
        return GradDrop()
