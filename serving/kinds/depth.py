"""Depth: [N,1,H,W] -> a float16 depth map, with its min, max and mean."""

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
)
from serving.manifest import TaskSpec


@register
class Depth(Kind):
    """Depth map in the task's units; PNG is 16-bit over [value_min, value_max]."""

    name = "depth"
    dense = True
    channels = 1
    decoded = (DecodedTensor("depth", ("squeeze_channel", "float16"), "linear"),)
    view: ClassVar[dict[str, Any]] = {
        "draw": "heat",
        "map": "map",
        "stats": ["min", "mean", "max"],
        "units": "units",
        "colormap": "viridis",
        "caption": "Distance from the camera: dark is near, bright is far.",
    }

    def summarize(
        self, task: TaskSpec, maps: Maps, options: DecodeOptions, placement: dict[str, Any] | None
    ) -> Decoded:
        """min, max, mean and the map (PNG: depth = value_min + v / 65535 * span)."""
        depth = maps["depth"]
        d32 = depth.astype(np.float32, copy=False)
        lo, hi = float(d32.min()), float(d32.max())
        stats = {
            "min": lo,
            "max": hi,
            "mean": float(d32.mean(dtype=np.float64)),
            "units": task.units,
        }
        if options.encoding == "png":
            span = hi - lo if hi > lo else 1.0
            q = np.round((d32 - lo) / span * 65535).astype(np.uint16)
            encoded = encode_map(depth, options, placement, q, value_min=lo, value_max=lo + span)
        else:
            encoded = encode_map(depth, options, placement)
        return {**stats, "map": encoded}

    def response_bytes(self, task: TaskSpec, size: tuple[int, int], options: DecodeOptions) -> int:
        """The map and four numbers."""
        return (
            map_bytes(size, options.encoding, raw_itemsize=2, png_itemsize=2, integer=False) + 300
        )

    def columns(self, task: TaskSpec, encoding: str) -> list[Column]:
        """``min``, ``max``, ``mean``, the map's columns (+ ``map_value_min/max`` with PNG)."""
        import pyarrow as pa

        n = task.name
        cols = [scalar_column(n, s, pa.float64()) for s in ("min", "max", "mean")]
        cols += map_columns(n, "map", encoding, False)
        if encoding == "png":
            cols += [
                Column(f"{n}.map_value_min", pa.float64(), ("map", "value_min")),
                Column(f"{n}.map_value_max", pa.float64(), ("map", "value_max")),
            ]
        return cols
