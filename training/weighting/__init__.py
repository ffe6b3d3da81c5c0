"""Loss weighting and gradient aggregation strategies, registered by name.

Loss-based (a weighted sum of the losses, weights fixed, learned or scheduled): equal, fixed,
uncertainty, dwa, gradnorm, rlw, gls, famo. Gradient-based (per-task gradients of the shared
part combined by a torchjd aggregator, see ``gradient.py``): mgda, pcgrad, cagrad, imtl_g, imtl,
aligned_mtl, nash_mtl, upgrad, graddrop, gradvac, dualproj.
"""

from training.weighting import (
    aligned_mtl,
    cagrad,
    dualproj,
    dwa,
    equal,
    famo,
    fixed,
    gls,
    graddrop,
    gradnorm,
    gradvac,
    imtl,
    imtl_g,
    mgda,
    nash_mtl,
    pcgrad,
    rlw,
    uncertainty,
    upgrad,
)
from training.weighting.base import (
    WEIGHTINGS,
    BackwardContext,
    LossWeighting,
    Weighting,
    build_weighting,
)
from training.weighting.gradient import GradientAggregation

__all__ = [
    "WEIGHTINGS",
    "BackwardContext",
    "GradientAggregation",
    "LossWeighting",
    "Weighting",
    "aligned_mtl",
    "build_weighting",
    "cagrad",
    "dualproj",
    "dwa",
    "equal",
    "famo",
    "fixed",
    "gls",
    "graddrop",
    "gradnorm",
    "gradvac",
    "imtl",
    "imtl_g",
    "mgda",
    "nash_mtl",
    "pcgrad",
    "rlw",
    "uncertainty",
    "upgrad",
]
