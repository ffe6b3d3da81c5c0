"""Cross-stitch networks: one backbone per task, mixed after every stage by learned weights."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from training.models.backbones import Backbone
from training.models.multitask import ARCHITECTURES, MultiTaskModel, MultiTaskOutput, task_heads
from training.models.necks import LightFPN
from training.tasks import TaskKind

# Initial mixing weights: a task keeps SELF_WEIGHT of its own features and shares the rest
# evenly among the other tasks (rows sum to one; with one task the unit is the identity).
SELF_WEIGHT = 0.9


def mixing_init(num_tasks: int) -> torch.Tensor:
    """Initial ``[T, T]`` mixing matrix: SELF_WEIGHT on the diagonal, the rest spread evenly."""
    if num_tasks == 1:
        return torch.ones(1, 1)
    weights = torch.full((num_tasks, num_tasks), (1.0 - SELF_WEIGHT) / (num_tasks - 1))
    weights.fill_diagonal_(SELF_WEIGHT)
    return weights


class CrossStitchUnit(nn.Module):
    """Task ``i``'s output is ``sum_j alpha[i, j] * x_j`` (``alpha`` per channel if asked).

    Args:
        num_tasks: number of task networks it mixes.
        channels: channels of each task's feature map.
        per_channel: one ``T x T`` matrix per channel rather than one for the whole map.
    """

    def __init__(self, num_tasks: int, channels: int, per_channel: bool = True) -> None:
        super().__init__()
        self.num_tasks = num_tasks
        init = mixing_init(num_tasks).unsqueeze(-1)
        self.weight = nn.Parameter(init.repeat(1, 1, channels if per_channel else 1).contiguous())

    @override
    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for i in range(self.num_tasks):
            mixed = self.weight[i, 0].view(1, -1, 1, 1) * xs[0]
            for j in range(1, self.num_tasks):
                mixed = mixed + self.weight[i, j].view(1, -1, 1, 1) * xs[j]
            out.append(mixed)
        return out


class PerTaskNetworks(MultiTaskModel):
    """Base of cross-stitch and NDDR: one backbone copy per task, fused after every stage.

    Subclasses build the fusion unit of each stage (``make_fusion``): it takes the tasks' feature
    maps (task order) and returns one map per task. Every task reaches every backbone copy
    through the fusion units, so all of them are shared parameters for gradient methods; necks
    (dense tasks) and heads belong to their task. The fusion units train with their own learning
    rate (``model.fusion_lr_scale`` times the base one, 100 as in Vandenhende et al.'s code).
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskKind], neck_channels: int = 64
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a multi-task model needs at least one task")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate task names: {names}")
        stages = getattr(backbone, "stages", None)
        if not isinstance(getattr(backbone, "stem", None), nn.Module) or not isinstance(
            stages, nn.ModuleList
        ):
            raise TypeError(
                f"{type(self).__name__} runs the backbone stage by stage: it needs a backbone "
                f"with .stem and .stages (a ResNet), got {type(backbone).__name__}"
            )
        channels = list(backbone.feature_channels)
        if len(stages) != len(channels):
            raise ValueError(f"backbone has {len(stages)} stages but {len(channels)} scales")
        self.tasks = {t.name: t for t in tasks}
        self.branches = nn.ModuleDict({t.name: copy.deepcopy(backbone) for t in tasks})
        self.fusions = nn.ModuleList(self.make_fusion(len(tasks), c) for c in channels)
        self.necks = nn.ModuleDict(
            {t.name: LightFPN(channels, neck_channels) for t in tasks if t.dense}
        )
        self.heads = task_heads(tasks, neck_channels, channels[-1])

    @override
    def fusion_parameters(self) -> list[nn.Parameter]:
        return list(self.fusions.parameters())

    def make_fusion(self, num_tasks: int, channels: int) -> nn.Module:
        """The unit fusing ``num_tasks`` maps of ``channels`` channels after one stage."""
        raise NotImplementedError

    @override
    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        size = (x.shape[-2], x.shape[-1])
        branches = list(self.branches.values())
        xs = [branch.stem(x) for branch in branches]
        feats: list[list[torch.Tensor]] = [[] for _ in branches]
        for s, fusion in enumerate(self.fusions):
            xs = fusion([branch.stages[s](h) for branch, h in zip(branches, xs, strict=True)])
            for per_task, h in zip(feats, xs, strict=True):
                per_task.append(h)
        out = MultiTaskOutput()
        for (name, task), task_feats in zip(self.tasks.items(), feats, strict=True):
            head = self.heads[name]
            if task.dense:
                out[name] = head(self.necks[name](task_feats), size)
            else:
                out[name] = head(task_feats[-1])
        out.shared = list(xs)
        return out


@ARCHITECTURES.register("cross_stitch")
class CrossStitch(PerTaskNetworks):
    """Cross-stitch networks (Misra, Shrivastava, Gupta and Hebert, CVPR 2016).

    One backbone copy per task; after each stage a cross-stitch unit replaces every task's map by
    a learned linear combination of all tasks' maps (initialised near the identity), then each
    task has its own neck and head. Costs T backbones of compute and memory; only linear mixing,
    at the stage outputs (the paper stitches after every pooling / fully connected layer).
    """

    per_channel = True  # one T x T matrix per channel; False: one per stage

    @override
    def make_fusion(self, num_tasks: int, channels: int) -> nn.Module:
        return CrossStitchUnit(num_tasks, channels, self.per_channel)
