"""Multi-label: [N,C] logits -> independent sigmoid probabilities, the labels over threshold."""

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
    json_bytes,
    labels_of,
    threshold_of,
)
from serving.manifest import TaskSpec


@register
class Multilabel(Kind):
    """Every label's probability, and the labels over the task's threshold (most probable first)."""

    name = "multilabel"
    dense = False
    labelled = True
    thresholded = True
    decoded = (DecodedTensor("probabilities", ("sigmoid",)),)
    view: ClassVar[dict[str, Any]] = {
        "draw": "scores",
        "items": "scores",
        "threshold": "threshold",
        "present": "labels",
        "caption": "Each label on its own: present when over the threshold.",
    }

    def summarize(
        self, task: TaskSpec, maps: Maps, options: DecodeOptions, placement: dict[str, Any] | None
    ) -> Decoded:
        """Threshold, labels over it, and every label's score."""
        p = maps["probabilities"].astype(np.float64)
        labels = labels_of(task)
        threshold = threshold_of(task)
        order = np.argsort(-p, kind="stable")
        present = [
            {"label": labels[i], "probability": float(p[i])} for i in order if p[i] > threshold
        ]
        return {
            "threshold": threshold,
            "labels": present,
            "scores": {labels[i]: float(p[i]) for i in range(len(p))},
        }

    def response_bytes(self, task: TaskSpec, size: tuple[int, int], options: DecodeOptions) -> int:
        """Every label twice, with a probability."""
        return 2 * json_bytes(labels_of(task)) + 60 * task.channels + 100

    def columns(self, task: TaskSpec, encoding: str) -> list[Column]:
        """``labels`` (list of {label, probability}) and ``scores`` ({label: probability})."""
        import pyarrow as pa

        n = task.name
        label_p = pa.list_(pa.struct([("label", pa.string()), ("probability", pa.float64())]))
        scores = pa.struct([(label, pa.float64()) for label in labels_of(task)])
        return [
            Column(f"{n}.labels", label_p, ("labels",)),
            Column(f"{n}.scores", scores, ("scores",)),
        ]
