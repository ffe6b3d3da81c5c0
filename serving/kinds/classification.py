"""Classification: [N,C] logits -> softmax probabilities, the top-k labels."""

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
    labels_of,
    scalar_column,
)
from serving.manifest import TaskSpec


def _top_label(maps: Maps, task: TaskSpec) -> np.ndarray:
    return np.array([labels_of(task)[int(np.argmax(maps["probabilities"]))].encode()], dtype=object)


@register
class Classification(Kind):
    """One label per image: the most probable, and the top k with probabilities."""

    name = "classification"
    dense = False
    labelled = True
    decoded = (DecodedTensor("probabilities", ("softmax",)),)
    view: ClassVar[dict[str, Any]] = {
        "draw": "ranked",
        "items": "top_k",
        "label": "label",
        "caption": "One label for the whole image.",
    }

    def summarize(
        self, task: TaskSpec, maps: Maps, options: DecodeOptions, placement: dict[str, Any] | None
    ) -> Decoded:
        """The top label and probability, and the top ``top_k``."""
        p = maps["probabilities"].astype(np.float64)
        labels = labels_of(task)
        top = np.argsort(-p, kind="stable")[: max(1, min(options.top_k, len(p)))]
        ranked = [{"label": labels[i], "index": int(i), "probability": float(p[i])} for i in top]
        return {
            "label": ranked[0]["label"],
            "probability": ranked[0]["probability"],
            "top_k": ranked,
        }

    def response_bytes(self, task: TaskSpec, size: tuple[int, int], options: DecodeOptions) -> int:
        """K ranked entries."""
        k = min(options.top_k, task.channels)
        return (k + 1) * (60 + max(len(label) for label in labels_of(task)) * 6) + 100

    def columns(self, task: TaskSpec, encoding: str) -> list[Column]:
        """``label``, ``probability``, ``top_k`` (list of {label, index, probability})."""
        import pyarrow as pa

        n = task.name
        ranked = pa.list_(
            pa.struct(
                [("label", pa.string()), ("index", pa.int32()), ("probability", pa.float64())]
            )
        )
        return [
            scalar_column(n, "label", pa.string()),
            scalar_column(n, "probability", pa.float64()),
            Column(f"{n}.top_k", ranked, ("top_k",)),
        ]

    def v2_extra(self, task: TaskSpec) -> tuple[V2Output, ...]:
        """``label``: the top-1 label, BYTES [1]."""
        return (V2Output("label", "BYTES", lambda t: [1], _top_label),)
