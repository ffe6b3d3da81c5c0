"""Task kinds, registered by name: each says its head size, loss and metrics."""

from training.tasks import (
    classification,
    depth,
    edges,
    multilabel,
    normals,
    saliency,
    segmentation,
)
from training.tasks.base import TASK_KINDS, MetricAccumulator, TaskKind, build_task

__all__ = [
    "TASK_KINDS",
    "MetricAccumulator",
    "TaskKind",
    "build_task",
    "classification",
    "depth",
    "edges",
    "multilabel",
    "normals",
    "saliency",
    "segmentation",
]
