"""Semantic edges: one logit per pixel, weighted binary cross-entropy, F-score at a threshold."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from typing_extensions import override

from training.tasks.base import TASK_KINDS, MetricAccumulator, TaskKind

THRESHOLD = 0.5
POS_WEIGHT = 4.0  # edges cover a few % of pixels; without it the head learns "no edge"


class BinaryFScore(MetricAccumulator):
    """Precision, recall and F1 of ``sigmoid(logit) > threshold`` against a {0,1} target."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.tp = self.fp = self.fn = 0

    @override
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        p = torch.sigmoid(pred.float()) > self.threshold
        t = target > 0.5
        self.tp += int((p & t).sum().item())
        self.fp += int((p & ~t).sum().item())
        self.fn += int((~p & t).sum().item())

    @override
    def compute(self) -> dict[str, float]:
        precision = self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0
        recall = self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"f1": f1, "precision": precision, "recall": recall}


@TASK_KINDS.register("edges")
class Edges(TaskKind):
    """Per-pixel boundary detection; the decoded output is ``sigmoid(logit)``."""

    kind = "edges"
    dense = True
    primary_metric = "f1"
    higher_is_better: ClassVar[dict[str, bool]] = {"f1": True, "precision": True, "recall": True}

    @override
    @property
    def channels(self) -> int:
        return 1

    @override
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = torch.tensor(POS_WEIGHT, device=pred.device)
        return F.binary_cross_entropy_with_logits(pred.float(), target, pos_weight=weight)

    @override
    def metric(self) -> MetricAccumulator:
        return BinaryFScore()
