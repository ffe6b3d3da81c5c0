"""IMTL-G (Liu et al., ICLR 2021, "Towards Impartial Multi-task Learning"), gradient part."""

from __future__ import annotations

from collections.abc import Sequence

from torchjd.aggregation import IMTLG, Aggregator
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("imtl_g")
class ImtlG(GradientAggregation):
    """The combination whose projection onto every task's unit gradient is the same.

    Every task advances equally along its own gradient direction: <d, g_t / |g_t|> is equal for
    all t. Limits: linearly dependent gradients make the system ill-posed (solved in the least
    squares sense).

    Args:
        tasks: task names.
        gradients: "parameters" or "representation".
    """

    def __init__(self, tasks: Sequence[str], gradients: Gradients = "parameters") -> None:
        super().__init__(tasks, gradients)

    @override
    def make_aggregator(self) -> Aggregator:
        return IMTLG()
