"""Single-label image classification: softmax over labels, cross-entropy, top-1 accuracy."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from typing_extensions import override

from training.tasks.base import TASK_KINDS, MetricAccumulator, TaskKind, log_shares


class TopKAccuracy(MetricAccumulator):
    """Top-1 accuracy (and top-k when there are more than k classes)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.top1 = self.topk = self.total = 0

    @override
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        top = pred.float().topk(self.k, dim=1).indices.cpu()
        t = target.cpu().view(-1, 1)
        self.top1 += int((top[:, :1] == t).sum().item())
        self.topk += int((top == t).any(dim=1).sum().item())
        self.total += t.shape[0]

    @override
    def compute(self) -> dict[str, float]:
        if not self.total:
            return {"top1": 0.0}
        out = {"top1": self.top1 / self.total}
        if self.k > 1:
            out[f"top{self.k}"] = self.topk / self.total
        return out


@TASK_KINDS.register("classification")
class Classification(TaskKind):
    """Exactly one of ``labels`` per image."""

    kind = "classification"
    dense = False
    needs_labels = True
    primary_metric = "top1"
    higher_is_better: ClassVar[dict[str, bool]] = {"top1": True, "top5": True}

    @override
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(pred.float(), target)

    @override
    def metric(self) -> MetricAccumulator:
        return TopKAccuracy(5 if self.channels > 5 else 1)

    @override
    def constant_output(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The log of the training class prior: its argmax is the most frequent class."""
        counts = torch.zeros(self.channels, dtype=torch.float64)
        for t in targets:
            counts += torch.bincount(t.flatten(), minlength=self.channels).double()
        return log_shares(counts)
