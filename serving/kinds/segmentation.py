"""Semantic segmentation: [N,C,H,W] logits -> a uint8 class map, and the classes present."""

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
    json_bytes,
    labels_of,
    map_bytes,
    map_columns,
)
from serving.manifest import TaskSpec


@register
class Segmentation(Kind):
    """Class map (argmax, uint8: at most 256 classes) and the share of each class present."""

    name = "segmentation"
    dense = True
    labelled = True
    max_channels = 256
    decoded = (DecodedTensor("classes", ("argmax",), "nearest"),)
    view: ClassVar[dict[str, Any]] = {
        "draw": "classes",
        "map": "map",
        "legend": "classes",
        "opacity": 0.6,
        "caption": "Each pixel coloured by its class, laid over the image.",
    }

    def summarize(
        self, task: TaskSpec, maps: Maps, options: DecodeOptions, placement: dict[str, Any] | None
    ) -> Decoded:
        """Classes present (most pixels first) with their share, and the class map."""
        classes = maps["classes"]
        labels = labels_of(task)
        counts = np.bincount(classes.ravel(), minlength=len(labels))
        total = classes.size
        present = [
            {"index": int(i), "label": labels[i], "share": round(float(counts[i]) / total, 6)}
            for i in np.argsort(-counts, kind="stable")
            if counts[i] > 0
        ]
        return {"classes": present, "map": encode_map(classes, options, placement, labels=labels)}

    def response_bytes(self, task: TaskSpec, size: tuple[int, int], options: DecodeOptions) -> int:
        """The map, the labels (twice) and one entry per class."""
        labels = json_bytes(labels_of(task))
        per_class = 60 * task.channels + labels
        data = map_bytes(size, options.encoding, raw_itemsize=1, png_itemsize=1, integer=True)
        return data + labels + per_class + 100

    def columns(self, task: TaskSpec, encoding: str) -> list[Column]:
        """``classes`` (list of {index, label, share}) and the map's columns."""
        import pyarrow as pa

        n = task.name
        classes = pa.list_(
            pa.struct([("index", pa.int32()), ("label", pa.string()), ("share", pa.float64())])
        )
        return [
            Column(f"{n}.classes", classes, ("classes",)),
            *map_columns(n, "map", encoding, True),
        ]
