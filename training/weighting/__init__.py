"""Loss weighting and gradient aggregation strategies, registered by name."""

from training.weighting import dwa, equal, fixed, uncertainty
from training.weighting.base import (
    WEIGHTINGS,
    BackwardContext,
    LossWeighting,
    Weighting,
    build_weighting,
)

__all__ = [
    "WEIGHTINGS",
    "BackwardContext",
    "LossWeighting",
    "Weighting",
    "build_weighting",
    "dwa",
    "equal",
    "fixed",
    "uncertainty",
]
