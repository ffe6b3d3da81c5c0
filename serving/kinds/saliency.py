"""Saliency: decoded and served like edges (a binary dense task), under its own kind name."""

from __future__ import annotations

from typing import Any, ClassVar

from serving.kinds import register
from serving.kinds.edges import Edges


@register
class Saliency(Edges):
    """Per-pixel probability of being salient."""

    name = "saliency"
    view: ClassVar[dict[str, Any]] = {
        **Edges.view,
        "colour": [255, 64, 160],
        "caption": "Probability that a pixel belongs to what draws the eye.",
    }
