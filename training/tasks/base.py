"""The task-kind protocol: what a kind of task needs to be trained and measured."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import ClassVar

import torch

from training.registry import Registry


def count_above(values: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """For each threshold, how many of ``values`` exceed it (every threshold in one sort)."""
    ordered = torch.sort(values.flatten().double()).values
    return len(ordered) - torch.searchsorted(ordered, thresholds.double(), right=True)


class MetricAccumulator(ABC):
    """Accumulates a task's metrics over batches; ``compute`` returns them by name."""

    @abstractmethod
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add one batch of raw head outputs and targets."""

    @abstractmethod
    def compute(self) -> dict[str, float]:
        """Metrics over everything seen so far."""


class TaskKind(ABC):
    """One kind of task (segmentation, depth, ...): its head size, loss and metrics.

    Subclasses set ``kind``, ``dense`` (per-pixel output at input resolution, else one vector per
    image), ``primary_metric`` and ``higher_is_better`` (for every metric they report).
    ``regression`` says the loss is a regression error (a Gaussian or Laplace likelihood), not
    a classification's cross-entropy: uncertainty weighting takes Kendall's form from it.
    """

    kind: ClassVar[str]
    dense: ClassVar[bool]
    regression: ClassVar[bool] = False
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[dict[str, bool]]
    needs_labels: ClassVar[bool] = False

    def __init__(
        self, name: str, labels: tuple[str, ...] | None = None, auxiliary: bool = False
    ) -> None:
        """A task called ``name``; ``labels`` are class names for kinds that need them.

        An ``auxiliary`` task is trained and evaluated but not exported: it is there to help
        the others (PAD-Net's and MTI-Net's auxiliary tasks only get intermediate predictions).
        """
        if self.needs_labels and not labels:
            raise ValueError(f"task {name!r} of kind {self.kind!r} needs class labels")
        self.name = name
        self.labels = tuple(labels) if labels else None
        self.auxiliary = auxiliary

    @property
    def channels(self) -> int:
        """Number of output channels of the head: one per label unless a kind says otherwise."""
        if self.labels is None:
            raise NotImplementedError(f"{type(self).__name__} must define its channels")
        return len(self.labels)

    @abstractmethod
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar training loss for a batch of raw head outputs."""

    @abstractmethod
    def metric(self) -> MetricAccumulator:
        """A fresh accumulator for this task's metrics."""

    @abstractmethod
    def constant_output(self, targets: Iterable[torch.Tensor]) -> torch.Tensor:
        """The raw head output, one value per channel, of the best constant predictor.

        ``targets`` are batches of training targets (as the dataset gives them, stacked); the
        constant is what a model that sees no image would predict for every image (and every
        pixel of a dense task), so it goes through the same metrics as a model's output.
        """

    def initial_bias(self, targets: list[torch.Tensor]) -> torch.Tensor | None:
        """The output bias a fresh head should start from, given some training targets.

        None keeps the layer's own initialisation; a regression kind returns its targets' mean,
        so training starts from the constant predictor rather than from zero.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, channels={self.channels})"


TASK_KINDS: Registry[type[TaskKind]] = Registry("task kind")


def build_task(
    name: str, kind: str, labels: tuple[str, ...] | None = None, auxiliary: bool = False
) -> TaskKind:
    """Instantiate the registered kind ``kind`` for a task called ``name``."""
    return TASK_KINDS.get(kind)(name, labels, auxiliary)


def log_shares(counts: torch.Tensor) -> torch.Tensor:
    """Log of each class's share of ``counts`` (a class never seen counts as half a sample)."""
    if not counts.sum():
        raise ValueError("no labelled targets to fit a constant to")
    return torch.log(counts.clamp(min=0.5) / counts.sum()).float()


def logit_of_rate(
    name: str, targets: Iterable[torch.Tensor], thresholds: torch.Tensor
) -> torch.Tensor:
    """The logit of the positive share of binary ``targets``, inside ``thresholds``' range.

    The share is moved half a threshold step inside the range when it lies outside, so the
    constant probability is above the lowest threshold and below the highest one.
    """
    positives, pixels = 0.0, 0
    for t in targets:
        positives += float((t > 0.5).sum())
        pixels += t.numel()
    if not pixels:
        raise ValueError(f"task {name!r}: no targets to fit a constant to")
    step = float(thresholds[1] - thresholds[0]) / 2 if len(thresholds) > 1 else 0.005
    low, high = float(thresholds.min()) + step, float(thresholds.max()) - step
    rate = min(max(positives / pixels, low), high)
    return torch.logit(torch.tensor([rate], dtype=torch.float64)).float()


def valid_mask_2d(target: torch.Tensor) -> torch.Tensor:
    """Pixels whose dense target is valid: any non-zero channel ([N,C,H,W] -> [N,H,W])."""
    return target.abs().sum(dim=1) > 0
