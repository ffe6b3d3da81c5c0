"""Monocular depth: one channel in the dataset's units, L1 loss, RMSE and abs relative error."""

from __future__ import annotations

from typing import ClassVar

import torch
from typing_extensions import override

from training.tasks.base import TASK_KINDS, MetricAccumulator, TaskKind


class DepthMetric(MetricAccumulator):
    """RMSE and mean absolute relative error over valid (target > 0) pixels."""

    def __init__(self) -> None:
        self.sq = 0.0
        self.rel = 0.0
        self.count = 0

    @override
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target > 0
        p, t = pred.float()[valid], target.float()[valid]
        self.sq += ((p - t) ** 2).sum().item()
        self.rel += ((p - t).abs() / t).sum().item()
        self.count += int(valid.sum().item())

    @override
    def compute(self) -> dict[str, float]:
        if not self.count:
            return {"rmse": 0.0, "abs_rel": 0.0}
        return {"rmse": (self.sq / self.count) ** 0.5, "abs_rel": self.rel / self.count}


@TASK_KINDS.register("depth")
class Depth(TaskKind):
    """Per-pixel depth regression; target 0 marks an invalid pixel."""

    kind = "depth"
    dense = True
    primary_metric = "rmse"
    higher_is_better: ClassVar[dict[str, bool]] = {"rmse": False, "abs_rel": False}

    @override
    @property
    def channels(self) -> int:
        return 1

    @override
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = target > 0
        if not valid.any():
            return pred.sum() * 0.0
        return (pred.float()[valid] - target[valid]).abs().mean()

    @override
    def metric(self) -> MetricAccumulator:
        return DepthMetric()
