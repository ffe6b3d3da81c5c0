"""Surface normals: [N,3,H,W] -> unit normals, float16 (H, W, 3)."""

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
)
from serving.kinds.ops import L2_EPS
from serving.manifest import TaskSpec


@register
class Normals(Kind):
    """Unit normal map, channels last; PNG is RGB with n = v / 127.5 - 1."""

    name = "normals"
    dense = True
    channels = 3
    decoded = (DecodedTensor("normals", ("l2_normalize", "channels_last", "float16"), "linear"),)
    # the camera frame of polyhead's datasets (training/data/synth.py): x right, y down, z forward
    view: ClassVar[dict[str, Any]] = {
        "draw": "rgb",
        "map": "map",
        "axes": {"red": "x, right", "green": "y, down", "blue": "z, away from the camera"},
        "caption": "Which way each surface faces; the ball is the key.",
    }

    def resampled(self, name: str, array: np.ndarray) -> np.ndarray:
        """Interpolated unit vectors are shorter than 1: normalise them again."""
        a = array.astype(np.float32, copy=False)
        return a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), L2_EPS)

    def summarize(
        self, task: TaskSpec, maps: Maps, options: DecodeOptions, placement: dict[str, Any] | None
    ) -> Decoded:
        """The map."""
        n = maps["normals"]
        if options.encoding == "png":
            png = np.round((n.astype(np.float32) + 1.0) * 127.5).clip(0, 255).astype(np.uint8)
            # how the page and decode_array read it back: n = v / 127.5 - 1
            return {"map": encode_map(n, options, placement, png, scale=1 / 127.5, offset=-1.0)}
        return {"map": encode_map(n, options, placement)}

    def response_bytes(self, task: TaskSpec, size: tuple[int, int], options: DecodeOptions) -> int:
        """The map (three values per pixel)."""
        shape = (*size, 3)
        return map_bytes(shape, options.encoding, raw_itemsize=2, png_itemsize=1, integer=False)

    def columns(self, task: TaskSpec, encoding: str) -> list[Column]:
        """The map's columns."""
        return map_columns(task.name, "map", encoding, False)
