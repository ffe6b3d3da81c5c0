"""Saliency: decoded and served like edges (a binary dense task), under its own kind name."""

from __future__ import annotations

from serving.kinds import register
from serving.kinds.edges import Edges


@register
class Saliency(Edges):
    """Per-pixel probability of being salient."""

    name = "saliency"
