"""MTI-Net: task interactions distilled at every scale, propagated coarse to fine."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from training.models.backbones import Backbone
from training.models.heads import DenseHead, ImageHead
from training.models.multitask import ARCHITECTURES, MultiTaskModel, MultiTaskOutput, tasks_by_name
from training.models.necks import conv_bn_relu
from training.models.padnet import MultiModalDistillation
from training.tasks import TaskKind


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SqueezeExcitation(nn.Module):
    """Channel gating from globally pooled features (Hu et al. 2018)."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(True), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.fc(x.mean(dim=(2, 3)))[:, :, None, None]


class FeaturePropagation(nn.Module):
    """MTI-Net's feature propagation module (FPM) at one scale.

    The tasks' features are concatenated; with several tasks, a shared non-linear function gives
    per-channel softmax weights over the tasks. The weighted concatenation is reduced to one
    shared map, and each task adds its own squeeze-and-excitation of it to its features.

    Args:
        names: the tasks, in order.
        channels: channels of every task's feature map.
    """

    def __init__(self, names: Sequence[str], channels: int) -> None:
        super().__init__()
        self.names = list(names)
        n = len(self.names)
        total, hidden = n * channels, max(n * channels // 4, 4)
        # one task: the softmax over tasks would be constant, so there is nothing to weigh
        self.weigh = (
            nn.Sequential(conv_bn_relu(total, hidden), nn.Conv2d(hidden, total, 1))
            if n > 1
            else None
        )
        self.reduce = conv_bn_relu(total, channels)
        self.se = nn.ModuleDict({name: SqueezeExcitation(channels) for name in self.names})

    @override
    def forward(
        self, feats: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        n = len(self.names)
        concat = torch.cat([feats[t] for t in self.names], dim=1)
        if self.weigh is not None:
            weights = torch.softmax(self.weigh(concat).unflatten(1, (n, -1)), dim=1)
            concat = (weights * concat.unflatten(1, (n, -1))).flatten(1, 2)
        shared = self.reduce(concat)
        return {t: self.se[t](shared) + feats[t] for t in self.names}, shared


class ScaleFeatures(nn.Module):
    """One task's features at one scale: backbone map (+ propagated coarser features), refined."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.refine = nn.Sequential(
            conv_bn_relu(in_channels, channels), conv_bn_relu(channels, channels)
        )

    @override
    def forward(self, x: torch.Tensor, propagated: torch.Tensor | None = None) -> torch.Tensor:
        if propagated is not None:
            x = torch.cat([x, _resize(propagated, x)], dim=1)
        return self.refine(x)


@ARCHITECTURES.register("mtinet")
class MTINet(MultiTaskModel):
    """MTI-Net (Vandenhende, Georgoulis and Van Gool, ECCV 2020): multi-scale task interactions.

    From the coarsest backbone scale to the finest, each dense task refines its own features and
    makes a prediction from them at that scale (supervised by the task's loss: deep supervision,
    ``out.deep_supervision[task]["scale_s"]``, as in the paper and its code); the features are
    distilled across tasks (PAD-Net's module) at that scale and propagated (FPM) to the next
    finer one; each task's head aggregates its distilled maps of all scales. An auxiliary dense
    task (``auxiliary: true``) has per-scale predictions only (its finest is its output) and
    takes part in propagation and distillation as a sender, as the paper's auxiliary tasks do.
    Compact: one width for every scale; image tasks pool the coarsest map.
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskKind], neck_channels: int = 64
    ) -> None:
        super().__init__()
        self.tasks = tasks_by_name(tasks)
        self.backbone = backbone
        channels = list(backbone.feature_channels)
        scales = len(channels)
        dense = [t for t in tasks if t.dense]
        names = [t.name for t in dense]
        receivers = [t.name for t in dense if not t.auxiliary]
        self.has_dense = bool(dense)
        c = neck_channels
        if not dense:
            scales = 0  # no per-scale task features at all
        # scale_features[s][task]: at the coarsest scale from the backbone map only
        self.scale_features = nn.ModuleList(
            nn.ModuleDict(
                {
                    t: ScaleFeatures(channels[s] + (c if s < len(channels) - 1 else 0), c)
                    for t in names
                }
            )
            for s in range(scales)
        )
        # each dense task's prediction at every scale (deep supervision)
        self.scale_predictions = nn.ModuleList(
            nn.ModuleDict({t.name: nn.Conv2d(c, t.channels, 1) for t in dense})
            for _ in range(scales)
        )
        # propagation from scale s to s - 1, for every scale but the finest
        self.propagation = nn.ModuleList(
            FeaturePropagation(names, c) if s > 0 else nn.Identity() for s in range(scales)
        )
        self.distillation = nn.ModuleList(
            MultiModalDistillation(receivers, c, names) for _ in range(scales)
        )
        top = channels[-1]
        self.heads = nn.ModuleDict(
            {
                t.name: DenseHead(c * len(channels), t.channels, hidden=c)
                if t.dense
                else ImageHead(top, t.channels)
                for t in tasks
                if not (t.dense and t.auxiliary)
            }
        )

    @override
    def output_layers(self, task: str) -> list[nn.Conv2d | nn.Linear]:
        per_scale = [
            cast(nn.Conv2d, cast(nn.ModuleDict, m)[task])
            for m in self.scale_predictions
            if task in cast(nn.ModuleDict, m)
        ]
        return super().output_layers(task) + per_scale

    @override
    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        size = (x.shape[-2], x.shape[-1])
        feats = self.backbone(x)
        out = MultiTaskOutput()
        shared: list[torch.Tensor] = []
        multi_scale: dict[str, list[torch.Tensor]] = {}
        predictions: dict[str, dict[str, torch.Tensor]] = {}
        if self.has_dense:
            propagated: dict[str, torch.Tensor] | None = None
            distilled: list[dict[str, torch.Tensor]] = []
            for s in reversed(range(len(feats))):
                task_feats = {
                    t: module(feats[s], None if propagated is None else propagated[t])
                    for t, module in cast(nn.ModuleDict, self.scale_features[s]).items()
                }
                for t, predict in cast(nn.ModuleDict, self.scale_predictions[s]).items():
                    predictions.setdefault(t, {})[f"scale_{s}"] = predict(task_feats[t])
                distilled.append(self.distillation[s](task_feats))
                fpm = self.propagation[s]
                if isinstance(fpm, FeaturePropagation):
                    propagated, fpm_shared = fpm(task_feats)
                    shared.append(fpm_shared)
            finest = distilled[-1]
            multi_scale = {
                t: [_resize(d[t], finest[t]) for d in reversed(distilled)] for t in finest
            }
        for name, task in self.tasks.items():
            if name not in self.heads:  # an auxiliary dense task: its finest prediction
                preds = dict(predictions[name])
                finest_pred = preds.pop("scale_0")
                out[name] = F.interpolate(
                    finest_pred, size=size, mode="bilinear", align_corners=False
                )
                out.deep_supervision[name] = preds
                continue
            head = self.heads[name]
            if task.dense:
                out[name] = head(torch.cat(multi_scale[name], dim=1), size)
                out.deep_supervision[name] = predictions[name]
            else:
                out[name] = head(feats[-1])
        out.shared = shared + list(feats)
        return out
