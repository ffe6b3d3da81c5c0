"""Regression: [N,K] values, returned as they are."""

from __future__ import annotations

from typing import Any, ClassVar

from serving.kinds import register
from serving.kinds.base import (
    Column,
    Decoded,
    DecodedTensor,
    DecodeOptions,
    Kind,
    Maps,
    scalar_column,
)
from serving.manifest import TaskSpec


@register
class Regression(Kind):
    """K real values per image, in the task's units."""

    name = "regression"
    dense = False
    decoded = (DecodedTensor("values", ()),)  # no ops: the raw output itself
    view: ClassVar[dict[str, Any]] = {
        "draw": "values",
        "items": "values",
        "units": "units",
        "caption": "Values predicted for the whole image, in the task's units.",
    }

    def summarize(
        self, task: TaskSpec, maps: Maps, options: DecodeOptions, placement: dict[str, Any] | None
    ) -> Decoded:
        """The values and their units."""
        return {"values": [float(v) for v in maps["values"]], "units": task.units}

    def response_bytes(self, task: TaskSpec, size: tuple[int, int], options: DecodeOptions) -> int:
        """K numbers."""
        return 26 * task.channels + 100

    def columns(self, task: TaskSpec, encoding: str) -> list[Column]:
        """``values``."""
        import pyarrow as pa

        return [scalar_column(task.name, "values", pa.list_(pa.float64()))]
