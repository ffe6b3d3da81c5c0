"""Edges: [N,1,H,W] logits -> a float16 per-pixel probability, and the share over threshold."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from serving.kinds import register
from serving.kinds.base import (
    Column,
    Decoded,
    DecodedTensor,
    DecodeOptions,
    Kind,
    Maps,
    encode_map,
    map_bytes,
    map_columns,
    scalar_column,
    threshold_of,
)
from serving.manifest import TaskSpec


def _above(prob: np.ndarray, threshold: float) -> np.ndarray:
    """``prob > threshold``; for float16 probabilities (never negative) on the bit patterns.

    Non-negative IEEE floats order like their bits read as unsigned integers, and NumPy has no
    fast float16 comparison: this is ~10x faster on a model-grid map.
    """
    if prob.dtype == np.float16:
        return prob.view(np.uint16) > np.float16(threshold).view(np.uint16)
    return prob > threshold


@register
class Edges(Kind):
    """Probability map (sigmoid); PNG is 8-bit with p = v / 255."""

    name = "edges"
    dense = True
    thresholded = True
    channels = 1
    decoded = (DecodedTensor("probability", ("sigmoid", "squeeze_channel", "float16"), "linear"),)
    view: ClassVar[dict[str, Any]] = {
        "draw": "overlay",
        "map": "probability",
        "threshold": "threshold",
        "share": "fraction_above_threshold",
        "colour": [255, 214, 0],
        "caption": "Probability that a pixel lies on an edge.",
    }

    def summarize(
        self, task: TaskSpec, maps: Maps, options: DecodeOptions, placement: dict[str, Any] | None
    ) -> Decoded:
        """Threshold, the share of pixels above it, and the probability map."""
        prob = maps["probability"]
        threshold = threshold_of(task)
        fraction = float(np.count_nonzero(_above(prob, threshold)) / prob.size)
        if options.encoding == "png":
            png = np.round(prob.astype(np.float32) * 255).astype(np.uint8)
            encoded = encode_map(prob, options, placement, png, scale=1 / 255)
        else:
            encoded = encode_map(prob, options, placement)
        return {
            "threshold": threshold,
            "fraction_above_threshold": fraction,
            "probability": encoded,
        }

    def response_bytes(self, task: TaskSpec, size: tuple[int, int], options: DecodeOptions) -> int:
        """The map and two numbers."""
        return (
            map_bytes(size, options.encoding, raw_itemsize=2, png_itemsize=1, integer=False) + 200
        )

    def columns(self, task: TaskSpec, encoding: str) -> list[Column]:
        """``fraction_above_threshold`` and the probability map's columns."""
        import pyarrow as pa

        n = task.name
        return [
            scalar_column(n, "fraction_above_threshold", pa.float64()),
            *map_columns(n, "probability", encoding, False),
        ]
