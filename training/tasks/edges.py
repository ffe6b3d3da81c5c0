"""Semantic edges: one logit per pixel, weighted binary cross-entropy, ODS-F with a tolerance.

The primary metric is ODS-F, the boundary F-measure at the one threshold best for the whole
dataset, as the edge-detection literature reports it (BSDS; Vandenhende et al.'s NYUD and
PASCAL tables), computed here as follows:

- thinning: non-maximum suppression of the probability map across the edge, the edge's
  orientation taken from the map's second derivatives (as Dollar's ``edgesNms`` does), once per
  image, so every threshold sees one-pixel-wide edges;
- thresholds: 99, from 0.01 to 0.99;
- matching: a predicted edge pixel is right when a target edge pixel lies within the tolerance,
  and a target pixel is found when a predicted one lies within it; the tolerance is
  ``MAX_DIST`` (0.0075, BSDS's value) of the image diagonal, at least one pixel, measured as a
  disc. This matching is relaxed: BSDS's ``correspondPixels`` also makes it one-to-one, so a
  cluster of predicted pixels near one target pixel scores a little higher here than there.

``f1``, ``precision`` and ``recall`` are also reported at the fixed threshold 0.5 with
pixel-exact matching (a one-pixel shift scores 0 there).
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

THRESHOLD = 0.5
THRESHOLDS = torch.linspace(0.01, 0.99, 99)
MAX_DIST = 0.0075  # the matching tolerance, as a fraction of the image diagonal (BSDS)
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


def _disc_offsets(radius: int) -> list[tuple[int, int]]:
    r = range(-radius, radius + 1)
    return [(dy, dx) for dy in r for dx in r if dy * dy + dx * dx <= radius * radius]


def near_max(values: torch.Tensor, radius: int) -> torch.Tensor:
    """Each pixel's largest value within ``radius`` (a disc), B×H×W (outside counts as 0)."""
    padded = F.pad(values, (radius, radius, radius, radius))
    h, w = values.shape[-2:]
    out = torch.zeros_like(values)
    for dy, dx in _disc_offsets(radius):
        window = padded[..., radius + dy : radius + dy + h, radius + dx : radius + dx + w]
        out = torch.maximum(out, window)
    return out


def within(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Pixels within ``radius`` (a disc) of a set pixel of ``mask`` (B×H×W bool)."""
    return near_max(mask.float(), radius) > 0.5


def edge_nms(prob: torch.Tensor) -> torch.Tensor:
    """Thin edges: keep a pixel only where it is a maximum across the edge (B×H×W in, out)."""
    x = prob[:, None].float()
    smooth = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)

    def grad(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p = F.pad(a, (1, 1, 1, 1), mode="replicate")
        return (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2, (
            p[..., 2:, 1:-1] - p[..., :-2, 1:-1]
        ) / 2

    ox, oy = grad(smooth)
    oxx, _ = grad(ox)
    oxy, oyy = grad(oy)
    # orientation of the normal to the edge (Dollar's edgesNms convention)
    theta = torch.remainder(torch.atan(oyy * torch.sign(-oxy) / (oxx + 1e-5)), torch.pi)
    h, w = x.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    dx, dy = torch.cos(theta)[:, 0], torch.sin(theta)[:, 0]
    keep = torch.ones_like(prob, dtype=torch.bool)
    for sign in (1.0, -1.0):
        gx = (xs + sign * dx) / max(w - 1, 1) * 2 - 1
        gy = (ys + sign * dy) / max(h - 1, 1) * 2 - 1
        grid = torch.stack([gx, gy], dim=-1)
        neighbour = F.grid_sample(x, grid, align_corners=True, padding_mode="border")[:, 0]
        keep &= x[:, 0] >= neighbour
    return torch.where(keep, x[:, 0], torch.zeros_like(x[:, 0]))


class EdgeODS(MetricAccumulator):
    """ODS-F over a dataset (see the module docstring), plus F1 at 0.5, pixel-exact."""

    def __init__(self, thresholds: torch.Tensor = THRESHOLDS, max_dist: float = MAX_DIST) -> None:
        self.thresholds, self.max_dist = thresholds, max_dist
        k = len(thresholds)
        self.matched_pred = torch.zeros(k, dtype=torch.float64)
        self.total_pred = torch.zeros(k, dtype=torch.float64)
        self.matched_target = torch.zeros(k, dtype=torch.float64)
        self.total_target = 0.0
        self.exact = BinaryFScore()

    @override
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.exact.update(pred, target)
        prob = torch.sigmoid(pred.float()).reshape(-1, *pred.shape[-2:]).cpu()
        t = (target.reshape(-1, *target.shape[-2:]) > 0.5).cpu()
        h, w = t.shape[-2:]
        radius = max(1, round(self.max_dist * (h * h + w * w) ** 0.5))
        thin = edge_nms(prob)
        # every threshold at once: a predicted pixel counts where its value exceeds it, a
        # target pixel is found where the largest predicted value within reach exceeds it
        self.total_pred += count_above(thin, self.thresholds)
        self.matched_pred += count_above(thin[within(t, radius)], self.thresholds)
        self.matched_target += count_above(near_max(thin, radius)[t], self.thresholds)
        self.total_target += float(t.sum())

    @override
    def compute(self) -> dict[str, float]:
        precision = self.matched_pred / self.total_pred.clamp(min=1)
        recall = self.matched_target / max(self.total_target, 1.0)
        f = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
        best = int(torch.argmax(f))
        return {"ods_f": float(f[best]), **self.exact.compute()}


@TASK_KINDS.register("edges")
class Edges(TaskKind):
    """Per-pixel boundary detection; the decoded output is ``sigmoid(logit)``."""

    kind = "edges"
    dense = True
    primary_metric = "ods_f"
    higher_is_better: ClassVar[dict[str, bool]] = {
        "ods_f": True,
        "f1": True,
        "precision": True,
        "recall": True,
    }

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
        return EdgeODS()

    @override
    def constant_output(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The logit of the training edge rate, kept inside the range of ODS-F's thresholds.

        A constant map survives thinning whole, so every threshold below it sees every pixel
        as an edge: ODS-F is then the F of "edge everywhere" (recall 1, precision the share of
        pixels within the tolerance of an edge), the same for any value inside the range.
        """
        return logit_of_rate(self.name, targets, THRESHOLDS)
