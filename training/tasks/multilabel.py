"""Multi-label image classification: one logit per label, BCE, mAP and F1 at 0.5."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from typing_extensions import override

from training.tasks.base import TASK_KINDS, MetricAccumulator, TaskKind

THRESHOLD = 0.5


def average_precision(scores: torch.Tensor, positives: torch.Tensor) -> float:
    """Non-interpolated average precision of one class (mean precision at each positive)."""
    n_pos = int(positives.sum().item())
    if n_pos == 0:
        return float("nan")
    order = torch.argsort(scores, descending=True, stable=True)
    hits = positives[order].double()
    precision_at_k = hits.cumsum(0) / torch.arange(1, len(hits) + 1, dtype=torch.float64)
    return float((precision_at_k * hits).sum().item() / n_pos)


class MultilabelMetric(MetricAccumulator):
    """mAP over classes with at least one positive, and micro F1 at a fixed threshold."""

    def __init__(self, threshold: float = THRESHOLD) -> None:
        self.threshold = threshold
        self.scores: list[torch.Tensor] = []
        self.targets: list[torch.Tensor] = []

    @override
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.scores.append(torch.sigmoid(pred.float()).detach().cpu())
        self.targets.append(target.detach().cpu() > 0.5)

    @override
    def compute(self) -> dict[str, float]:
        if not self.scores:
            return {"map": 0.0, "f1": 0.0}
        s, t = torch.cat(self.scores), torch.cat(self.targets)
        aps = [average_precision(s[:, c], t[:, c]) for c in range(s.shape[1])]
        valid = [a for a in aps if a == a]
        p = s > self.threshold
        tp, fp, fn = (p & t).sum().item(), (p & ~t).sum().item(), (~p & t).sum().item()
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        return {"map": sum(valid) / len(valid) if valid else 0.0, "f1": f1}


@TASK_KINDS.register("multilabel")
class Multilabel(TaskKind):
    """Which of ``labels`` are present in the image; decoded as ``sigmoid(logit) > threshold``."""

    kind = "multilabel"
    dense = False
    needs_labels = True
    primary_metric = "map"
    higher_is_better: ClassVar[dict[str, bool]] = {"map": True, "f1": True}

    @override
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(pred.float(), target)

    @override
    def metric(self) -> MetricAccumulator:
        return MultilabelMetric()

    @override
    def constant_output(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The logit of each label's training frequency, the same score for every image.

        Every image ties, so a label's AP is about its frequency in the evaluated split; at the
        0.5 threshold the labels present in more than half the training images are predicted.
        """
        positives, images = torch.zeros(self.channels, dtype=torch.float64), 0
        for t in targets:
            positives += (t > 0.5).double().sum(dim=0)
            images += t.shape[0]
        if not images:
            raise ValueError(f"task {self.name!r}: no targets to fit a constant to")
        return torch.logit(positives / images, eps=1e-4).float()
