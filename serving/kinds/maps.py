"""Dense maps laid back onto the image: the content of the model grid, resized as asked.

A decoded dense map is (H, W) or (H, W, C) at the model's grid. Its content (the model grid
minus letterbox bars) covers ``Geometry.box`` of the original image. By default the content is
returned at the model's grid; ``resolution=original`` resizes it to the box's size in the
image's pixels, and ``max_side`` caps that size's long side. Resizing uses OpenCV (SIMD):
nearest neighbour (pixel centres aligned) for class maps, bilinear for continuous maps (area
averaging when shrinking).
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

import numpy as np

from serving.geometry import Geometry

Resample = Literal["nearest", "linear"]


@cache
def cv2() -> Any:
    """OpenCV, imported on first use, single-threaded: the callers already run in a pool."""
    import cv2 as _cv2

    _cv2.setNumThreads(1)
    return _cv2


def content(grid_map: np.ndarray, g: Geometry) -> np.ndarray:
    """The part of a model-grid map (H, W[, C]) that covers the image (drops letterbox bars)."""
    top, left = g.offset
    h, w = g.resized
    if (top, left) == (0, 0) and grid_map.shape[:2] == (h, w):
        return grid_map
    return grid_map[top : top + h, left : left + w]


def target_size(g: Geometry, resolution: str, max_side: int | None) -> tuple[int, int]:
    """(H, W) a dense map of this image is returned at."""
    if resolution == "model":
        return g.resized
    _, _, w, h = g.box
    if max_side is not None and max(h, w) > max_side:
        s = max_side / max(h, w)
        return (max(1, round(h * s)), max(1, round(w * s)))
    return (h, w)


def resize(array: np.ndarray, size: tuple[int, int], resample: Resample) -> np.ndarray:
    """``array`` (H, W[, C]) resized to ``size`` (H, W); float maps come back float32."""
    h, w = size
    if array.shape[:2] == (h, w):
        return array
    cv = cv2()
    if resample == "nearest":
        src = np.ascontiguousarray(array)
        flag = cv.INTER_NEAREST_EXACT
    else:
        src = np.ascontiguousarray(array, dtype=np.float32)
        shrinking = h < array.shape[0] and w < array.shape[1]
        flag = cv.INTER_AREA if shrinking else cv.INTER_LINEAR
    out = cv.resize(src, (w, h), interpolation=flag)
    if array.ndim == 3 and out.ndim == 2:  # OpenCV drops a channel axis of size 1
        out = out[:, :, None]
    return out


def lay_back(
    grid_map: np.ndarray, g: Geometry, size: tuple[int, int], resample: Resample
) -> np.ndarray:
    """The content of a model-grid map at ``size``."""
    return resize(content(grid_map, g), size, resample)


def placement(g: Geometry) -> dict[str, Any]:
    """What a client needs to lay a map on the image: the box it covers and the image size."""
    left, top, width, height = g.box
    return {
        "box": {"left": left, "top": top, "width": width, "height": height},
        "image": {"width": g.original[1], "height": g.original[0]},
    }
