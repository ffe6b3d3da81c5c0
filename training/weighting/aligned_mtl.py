"""Aligned-MTL (Senushkin et al., CVPR 2023).

"Independent Component Alignment for Multi-Task Learning".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from torchjd.aggregation import Aggregator, AlignedMTL
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("aligned_mtl")
class AlignedMtl(GradientAggregation):
    """Align the task gradients: make the Jacobian's condition number 1, then combine.

    The gradients are replaced by an orthogonal system with equal singular values (the smallest,
    median or RMS of the originals), which removes both conflict and dominance. Limits: the
    rescaling can shrink every update when one task's gradient is tiny (``scale_mode="min"``).

    Args:
        tasks: task names.
        scale_mode: "min", "median" or "rmse": which singular value the aligned system keeps.
        gradients: "parameters" or "representation".
    """

    def __init__(
        self,
        tasks: Sequence[str],
        scale_mode: Literal["min", "median", "rmse"] = "min",
        gradients: Gradients = "parameters",
    ) -> None:
        if scale_mode not in ("min", "median", "rmse"):
            raise ValueError(f"scale_mode must be min, median or rmse, got {scale_mode!r}")
        self.scale_mode: Literal["min", "median", "rmse"] = scale_mode
        super().__init__(tasks, gradients)

    @override
    def make_aggregator(self) -> Aggregator:
        return AlignedMTL(scale_mode=self.scale_mode)
