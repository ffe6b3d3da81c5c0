"""Surface normals: three channels normalised to unit length, cosine loss, angular errors."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from typing_extensions import override

from training.tasks.base import TASK_KINDS, MetricAccumulator, TaskKind, valid_mask_2d

_BINS_PER_DEGREE = 100


#: The angles (degrees) the literature reports the share of pixels within.
WITHIN = (11.25, 22.5, 30.0)


class AngularErrorMetric(MetricAccumulator):
    """Angles (degrees) between predicted and true normals: mean, median, RMSE, % within.

    The shares within 11.25°, 22.5° and 30° and the median come from a 0.01° histogram, so they
    are exact to that resolution without keeping every pixel's error in memory.
    """

    def __init__(self) -> None:
        self.hist = torch.zeros(180 * _BINS_PER_DEGREE + 1, dtype=torch.int64)
        self.sum = 0.0
        self.sq = 0.0
        self.count = 0

    @override
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = valid_mask_2d(target)
        p = F.normalize(pred.float(), dim=1).permute(0, 2, 3, 1)[valid]
        t = F.normalize(target.float(), dim=1).permute(0, 2, 3, 1)[valid]
        cos = (p * t).sum(-1).clamp(-1.0, 1.0)
        deg = torch.rad2deg(torch.acos(cos)).cpu()
        self.sum += deg.double().sum().item()
        self.sq += (deg.double() ** 2).sum().item()
        self.count += deg.numel()
        bins = (deg * _BINS_PER_DEGREE).round().long().clamp(0, self.hist.numel() - 1)
        self.hist += torch.bincount(bins, minlength=self.hist.numel())

    @override
    def compute(self) -> dict[str, float]:
        names = [_within_name(a) for a in WITHIN]
        if not self.count:
            return {"mean_angle": 0.0, "median_angle": 0.0, "rmse_angle": 0.0} | dict.fromkeys(
                names, 0.0
            )
        cdf = self.hist.cumsum(0)
        median_bin = int(torch.searchsorted(cdf, torch.tensor(math.ceil(self.count / 2))).item())
        within = {
            n: cdf[round(a * _BINS_PER_DEGREE)].item() / self.count
            for n, a in zip(names, WITHIN, strict=True)
        }
        return {
            "mean_angle": self.sum / self.count,
            "median_angle": median_bin / _BINS_PER_DEGREE,
            "rmse_angle": (self.sq / self.count) ** 0.5,
            **within,
        }


def _within_name(angle: float) -> str:
    return "within_" + f"{angle:g}".replace(".", "_")


@TASK_KINDS.register("normals")
class Normals(TaskKind):
    """Per-pixel unit surface normal; an all-zero target marks an invalid pixel."""

    kind = "normals"
    dense = True
    regression = True
    primary_metric = "mean_angle"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "mean_angle": False,
        "median_angle": False,
        "rmse_angle": False,
        **{_within_name(a): True for a in WITHIN},
    }

    @override
    @property
    def channels(self) -> int:
        return 3

    @override
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        valid = valid_mask_2d(target)
        if not valid.any():
            return pred.sum() * 0.0
        cos = F.cosine_similarity(pred.float(), target, dim=1, eps=1e-6)
        return (1.0 - cos[valid]).mean()

    @override
    def metric(self) -> MetricAccumulator:
        return AngularErrorMetric()

    @override
    def constant_output(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The mean valid normal, normalised: the unit vector with the largest mean cosine."""
        total = torch.zeros(3, dtype=torch.float64)
        for t in targets:
            valid = valid_mask_2d(t)
            total += F.normalize(t.double(), dim=1).permute(0, 2, 3, 1)[valid].sum(dim=0)
        if not total.any():
            raise ValueError(f"task {self.name!r}: no valid normal to fit a constant to")
        return F.normalize(total, dim=0).float()
