"""Monocular depth: one channel in the dataset's units, L1 loss, and the usual error measures."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import torch
from typing_extensions import override

from training.tasks.base import TASK_KINDS, MetricAccumulator, TaskKind

#: Predictions are clamped to this before logarithms and ratios (a depth is positive).
MIN_DEPTH = 1e-3


class DepthMetric(MetricAccumulator):
    """Errors over valid (target > 0) pixels, as Eigen et al. (2014) define them.

    ``rmse``, ``abs_rel`` (mean |p - t| / t), ``log_rmse`` (RMSE of log p - log t) and
    ``delta_1`` (share of pixels with max(p / t, t / p) < 1.25); predictions below
    ``MIN_DEPTH`` count as ``MIN_DEPTH`` in the last two.
    """

    def __init__(self) -> None:
        self.sq = 0.0
        self.rel = 0.0
        self.log_sq = 0.0
        self.delta = 0
        self.count = 0

    @override
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target > 0
        p, t = pred.double()[valid], target.double()[valid]
        self.sq += ((p - t) ** 2).sum().item()
        self.rel += ((p - t).abs() / t).sum().item()
        pc = p.clamp_min(MIN_DEPTH)
        self.log_sq += ((pc.log() - t.log()) ** 2).sum().item()
        self.delta += int((torch.maximum(pc / t, t / pc) < 1.25).sum().item())
        self.count += int(valid.sum().item())

    @override
    def compute(self) -> dict[str, float]:
        if not self.count:
            return {"rmse": 0.0, "abs_rel": 0.0, "log_rmse": 0.0, "delta_1": 0.0}
        n = self.count
        return {
            "rmse": (self.sq / n) ** 0.5,
            "abs_rel": self.rel / n,
            "log_rmse": (self.log_sq / n) ** 0.5,
            "delta_1": self.delta / n,
        }


@TASK_KINDS.register("depth")
class Depth(TaskKind):
    """Per-pixel depth regression; target 0 marks an invalid pixel."""

    kind = "depth"
    dense = True
    regression = True
    primary_metric = "rmse"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "rmse": False,
        "abs_rel": False,
        "log_rmse": False,
        "delta_1": True,
    }

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

    @override
    def constant_output(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The mean valid depth: the constant with the least RMSE."""
        total, count = 0.0, 0
        for t in targets:
            valid = t > 0
            total += float(t[valid].double().sum())
            count += int(valid.sum())
        if not count:
            raise ValueError(f"task {self.name!r}: no valid depth to fit a constant to")
        return torch.tensor([total / count])

    @override
    def initial_bias(self, targets: list[torch.Tensor]) -> torch.Tensor | None:
        """The mean valid depth of the targets.

        A head at 0 against targets of several metres spends its first epochs, and most of the
        summed loss, only getting to the right range.
        """
        values = torch.cat([t[t > 0].float().reshape(-1) for t in targets])
        return values.mean().reshape(1) if values.numel() else None
