"""Semantic segmentation: per-pixel class logits, cross-entropy, mIoU and pixel accuracy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from typing_extensions import override

from training.tasks.base import TASK_KINDS, MetricAccumulator, TaskKind, log_shares

IGNORE_INDEX = 255


class ConfusionMetric(MetricAccumulator):
    """mIoU (over classes present in targets or predictions) and pixel accuracy."""

    def __init__(self, num_classes: int) -> None:
        self.n = num_classes
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    @override
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        cls = pred.argmax(dim=1).flatten().cpu()
        tgt = target.flatten().cpu()
        keep = tgt != IGNORE_INDEX
        idx = tgt[keep] * self.n + cls[keep]
        self.confusion += torch.bincount(idx, minlength=self.n * self.n).view(self.n, self.n)

    @override
    def compute(self) -> dict[str, float]:
        c = self.confusion.double()
        tp = c.diag()
        union = c.sum(0) + c.sum(1) - tp
        seen = union > 0
        miou = (tp[seen] / union[seen]).mean().item() if seen.any() else 0.0
        total = c.sum().item()
        return {"miou": miou, "pixel_acc": tp.sum().item() / total if total else 0.0}


@TASK_KINDS.register("segmentation")
class Segmentation(TaskKind):
    """Per-pixel classification into ``labels`` (255 marks pixels to ignore)."""

    kind = "segmentation"
    dense = True
    needs_labels = True
    primary_metric = "miou"
    higher_is_better: ClassVar[dict[str, bool]] = {"miou": True, "pixel_acc": True}

    @override
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.float(), target, ignore_index=IGNORE_INDEX)

    @override
    def metric(self) -> MetricAccumulator:
        return ConfusionMetric(self.channels)

    @override
    def constant_output(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The log of each class's pixel share: its argmax, the most frequent class, everywhere.

        Every pixel then counts for that class alone: the best constant for pixel accuracy and
        for mIoU (a class never predicted has an IoU of 0 whatever the constant is).
        """
        counts = torch.zeros(self.channels, dtype=torch.float64)
        for t in targets:
            kept = t[t != IGNORE_INDEX].flatten()
            counts += torch.bincount(kept, minlength=self.channels).double()
        return log_shares(counts)
