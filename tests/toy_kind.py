"""A task kind that exists only in the tests, to show a new kind is one new module.

``toy_flow``: a 2-channel dense field (think optical flow), decoded in the graph to a float16
H×W×2 map, summarised by its mean magnitude. Importing this module registers it; nothing else
in the code base knows about it.
"""

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
    V2Output,
    encode_map,
    map_bytes,
    map_columns,
    scalar_column,
)
from serving.manifest import TaskSpec


def _magnitude(maps: Maps, task: TaskSpec) -> np.ndarray:
    f = maps["flow"].astype(np.float32)
    return np.array([float(np.hypot(f[..., 0], f[..., 1]).mean())], np.float32)


@register
class ToyFlow(Kind):
    """Two values per pixel, returned channels last; PNG is the magnitude, 8-bit."""

    name = "toy_flow"
    dense = True
    channels = 2
    decoded = (DecodedTensor("flow", ("channels_last", "float16"), "linear"),)
    view: ClassVar[dict[str, Any]] = {"draw": "overlay", "map": "map"}

    def summarize(
        self, task: TaskSpec, maps: Maps, options: DecodeOptions, placement: dict[str, Any] | None
    ) -> Decoded:
        """The mean magnitude and the map."""
        flow = maps["flow"]
        magnitude = np.hypot(*np.moveaxis(flow.astype(np.float32), -1, 0))
        png = np.round(255 * magnitude / max(float(magnitude.max()), 1e-6)).astype(np.uint8)
        return {
            "mean_magnitude": float(magnitude.mean()),
            "map": encode_map(flow, options, placement, png),
        }

    def response_bytes(self, task: TaskSpec, size: tuple[int, int], options: DecodeOptions) -> int:
        """The map and a number."""
        shape = (*size, 2)
        return (
            map_bytes(shape, options.encoding, raw_itemsize=2, png_itemsize=1, integer=False) + 100
        )

    def columns(self, task: TaskSpec, encoding: str) -> list[Column]:
        """``mean_magnitude`` and the map's columns."""
        import pyarrow as pa

        n = task.name
        return [
            scalar_column(n, "mean_magnitude", pa.float64()),
            *map_columns(n, "map", encoding, False),
        ]

    def v2_extra(self, task: TaskSpec) -> tuple[V2Output, ...]:
        """``magnitude``: the mean magnitude, FP32 [1]."""
        return (V2Output("magnitude", "FP32", lambda t: [1], _magnitude),)
