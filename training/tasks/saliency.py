"""Saliency: one logit per pixel, class-balanced binary cross-entropy, max-F over thresholds.

The loss weighs each batch's salient and background pixels by the other's share (the balanced
cross-entropy Vandenhende et al. train saliency with). The primary metric is max-F: precision
and recall of the region ``sigmoid(logit) > t`` summed over the whole dataset for 99 thresholds
from 0.01 to 0.99, F_beta with beta^2 = 0.3 (the saliency literature's weighting of precision),
and the best threshold's F. ``iou`` is the salient region's IoU at 0.5.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from typing_extensions import override

from training.tasks.base import (
    TASK_KINDS,
    MetricAccumulator,
    TaskKind,
    count_above,
    logit_of_rate,
)

THRESHOLDS = torch.linspace(0.01, 0.99, 99)
BETA2 = 0.3


class MaxF(MetricAccumulator):
    """max-F (beta^2 = 0.3) over dataset-wide thresholds, and IoU at 0.5."""

    def __init__(self, thresholds: torch.Tensor = THRESHOLDS) -> None:
        self.thresholds = thresholds
        self.predicted = torch.zeros(len(thresholds), dtype=torch.float64)
        self.right = torch.zeros(len(thresholds), dtype=torch.float64)
        self.salient = 0.0
        self.intersection = self.union = 0.0

    @override
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        prob = torch.sigmoid(pred.float()).detach().cpu()
        t = target.detach().cpu() > 0.5
        self.predicted += count_above(prob, self.thresholds)
        self.right += count_above(prob[t], self.thresholds)
        self.salient += float(t.sum())
        p = prob > 0.5
        self.intersection += float((p & t).sum())
        self.union += float((p | t).sum())

    @override
    def compute(self) -> dict[str, float]:
        precision = self.right / self.predicted.clamp(min=1)
        recall = self.right / max(self.salient, 1.0)
        f = (1 + BETA2) * precision * recall / (BETA2 * precision + recall).clamp(min=1e-12)
        iou = self.intersection / self.union if self.union else 1.0
        return {"max_f": float(f.max()), "iou": iou}


@TASK_KINDS.register("saliency")
class Saliency(TaskKind):
    """Per-pixel salient-object mask; the decoded output is ``sigmoid(logit)``."""

    kind = "saliency"
    dense = True
    primary_metric = "max_f"
    higher_is_better: ClassVar[dict[str, bool]] = {"max_f": True, "iou": True}

    @override
    @property
    def channels(self) -> int:
        return 1

    @override
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        positive = target.mean().clamp(0.01, 0.99)  # the batch's salient share
        weight = torch.where(target > 0.5, 1 - positive, positive)
        loss = F.binary_cross_entropy_with_logits(pred.float(), target, weight=weight)
        return 2 * loss  # weights average 0.5 on a balanced batch: keep the loss's scale

    @override
    def metric(self) -> MetricAccumulator:
        return MaxF()

    @override
    def constant_output(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The logit of the training salient share, kept inside max-F's thresholds' range.

        Every threshold below it sees the whole image as salient: max-F is then the F of
        "salient everywhere", the same for any value inside the range.
        """
        return logit_of_rate(self.name, targets, THRESHOLDS)
