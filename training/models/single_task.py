"""A single-task network: the baseline multi-task results are compared against."""

from __future__ import annotations

from collections.abc import Sequence

from training.models.backbones import Backbone
from training.models.multitask import ARCHITECTURES, HardParameterSharing
from training.tasks import TaskKind


@ARCHITECTURES.register("single_task")
class SingleTask(HardParameterSharing):
    """Single-task baseline: one network per task, as multi-task models are judged against.

    Vandenhende et al. (TPAMI 2021, "Multi-Task Learning for Dense Prediction Tasks: A Survey")
    measure multi-task gains relative to it. Backbone (+ LightFPN neck for a dense task) + head:
    HPS's components with one task, so the baseline has the same backbone and budget. Exactly one
    task; backbone and neck count as shared parameters so every weighting method runs unchanged.
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskKind], neck_channels: int = 64
    ) -> None:
        if len(tasks) != 1:
            raise ValueError(
                f"single_task takes exactly one task, got {len(tasks)}: {[t.name for t in tasks]}"
            )
        super().__init__(backbone, tasks, neck_channels)
