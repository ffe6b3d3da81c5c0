"""Multi-task architectures, registered by name. The model returns ``{task: output}``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from training.models.backbones import Backbone
from training.models.heads import DenseHead, ImageHead
from training.models.necks import LightFPN
from training.registry import Registry
from training.tasks import TaskKind


class MultiTaskOutput(dict[str, torch.Tensor]):
    """``{task: output}`` plus the shared representations the heads read.

    ``shared`` holds the tensors produced by the shared layers (the neck's map for dense heads,
    the coarsest backbone map for image heads): gradient-based weighting methods that work on the
    representation rather than on the shared parameters need them.
    """

    shared: list[torch.Tensor]


class MultiTaskModel(nn.Module):
    """Base of multi-task architectures: ``forward(x) -> {task: tensor}``.

    Subclasses say which parameters are shared (``shared_parameters``) so gradient-based
    weighting methods can act on them.
    """

    tasks: dict[str, TaskKind]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss depends on."""
        raise NotImplementedError

    def task_parameters(self) -> list[nn.Parameter]:
        """Parameters that belong to exactly one task."""
        shared = {id(p) for p in self.shared_parameters()}
        return [p for p in self.parameters() if id(p) not in shared]


def tasks_by_name(tasks: Sequence[TaskKind]) -> dict[str, TaskKind]:
    """The tasks keyed by name, in order; no task, or a name twice, is an error."""
    if not tasks:
        raise ValueError("a multi-task model needs at least one task")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate task names: {names}")
    return {t.name: t for t in tasks}


def task_heads(
    tasks: Sequence[TaskKind], dense_channels: int, image_channels: int
) -> nn.ModuleDict:
    """Heads by task name: dense ones read ``dense_channels``, image ones ``image_channels``."""
    return nn.ModuleDict(
        {
            t.name: DenseHead(dense_channels, t.channels)
            if t.dense
            else ImageHead(image_channels, t.channels)
            for t in tasks
        }
    )


def trunk_parameters(backbone: nn.Module, neck: nn.Module | None) -> list[nn.Parameter]:
    """The backbone's parameters, then the neck's (when there is one): a shared trunk."""
    params = list(backbone.parameters())
    if neck is not None:
        params += list(neck.parameters())
    return params


ARCHITECTURES: Registry[type[MultiTaskModel]] = Registry("architecture")


@ARCHITECTURES.register("hps")
class HardParameterSharing(MultiTaskModel):
    """Hard parameter sharing (Caruana 1997): one backbone + neck shared by all task heads.

    Dense tasks read the neck's stride-4 map and are upsampled to the input size; image-level
    tasks read the pooled coarsest backbone map. One forward pass computes every task.
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskKind], neck_channels: int = 64
    ) -> None:
        super().__init__()
        self.tasks = tasks_by_name(tasks)
        self.backbone = backbone
        self.has_dense = any(t.dense for t in tasks)
        self.neck = LightFPN(backbone.feature_channels, neck_channels) if self.has_dense else None
        top = backbone.feature_channels[-1]
        self.heads = task_heads(tasks, neck_channels, top)

    @override
    def shared_parameters(self) -> list[nn.Parameter]:
        return trunk_parameters(self.backbone, self.neck)

    @override
    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        size = (x.shape[-2], x.shape[-1])
        feats = self.backbone(x)
        dense = self.neck(feats) if self.neck is not None else None
        out = MultiTaskOutput()
        for name, task in self.tasks.items():
            head = self.heads[name]
            out[name] = head(dense, size) if task.dense else head(feats[-1])
        out.shared = [t for t in (dense, feats[-1]) if t is not None]
        return out
