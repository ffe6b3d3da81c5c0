"""PAD-Net: intermediate predictions for every dense task, distilled into the final ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from training.models.backbones import Backbone
from training.models.multitask import (
    ARCHITECTURES,
    MultiTaskModel,
    MultiTaskOutput,
    task_heads,
    tasks_by_name,
)
from training.models.necks import LightFPN, conv_bn_relu
from training.tasks import TaskKind


class AttentionMessage(nn.Module):
    """A message from one task to another, gated by attention: ``sigmoid(conv(f)) * conv(f)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Conv2d(channels, channels, 3, padding=1)
        self.message = nn.Conv2d(channels, channels, 3, padding=1)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.gate(x)) * self.message(x)


class MultiModalDistillation(nn.Module):
    """Attention-guided message passing between tasks (PAD-Net's distillation module C).

    Task ``k``'s output is ``f_k + sum_{l != k} sigmoid(conv(f_l)) * conv(f_l)``, with separate
    convolutions for every ordered pair ``(k, l)``; with one task it is the identity. The
    senders ``l`` may include auxiliary tasks that receive nothing themselves.

    Args:
        names: the receiving tasks, in order.
        channels: channels of every task's feature map.
        senders: the tasks whose features are passed on (default: ``names``).
    """

    def __init__(
        self, names: Sequence[str], channels: int, senders: Sequence[str] | None = None
    ) -> None:
        super().__init__()
        self.names = list(names)
        self.senders = list(senders) if senders is not None else self.names
        self.messages = nn.ModuleDict(
            {
                dst: nn.ModuleDict(
                    {src: AttentionMessage(channels) for src in self.senders if src != dst}
                )
                for dst in self.names
            }
        )

    @override
    def forward(self, feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for dst in self.names:
            y = feats[dst]
            inbox = cast(nn.ModuleDict, self.messages[dst])
            for src, message in inbox.items():
                y = y + message(feats[src])
            out[dst] = y
        return out


class InitialPrediction(nn.Module):
    """One task's intermediate prediction, re-encoded with its features for the distillation.

    Returns ``(features, prediction)``: ``prediction = proj(block(x))`` is the intermediate
    prediction at the input map's resolution, ``features = encode([block(x), prediction])``.
    """

    def __init__(self, in_channels: int, channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = conv_bn_relu(in_channels, channels)
        self.proj = nn.Conv2d(channels, out_channels, 1)
        self.encode = conv_bn_relu(channels + out_channels, channels)

    @override
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.block(x)
        pred = self.proj(h)
        return self.encode(torch.cat([h, pred], dim=1)), pred


def _upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@ARCHITECTURES.register("padnet")
class PADNet(MultiTaskModel):
    """PAD-Net (Xu, Ouyang, Wang and Sebe, CVPR 2018): prediction, then multi-modal distillation.

    A shared backbone + FPN neck gives every dense task an initial prediction, supervised by the
    task's own loss (deep supervision, ``out.deep_supervision[task]["initial"]``, as the paper
    and Vandenhende et al.'s code do). Re-encoded with its features, each passes attention-gated
    messages to the others, and the distilled maps feed the final heads. An auxiliary dense task
    (``auxiliary: true``) gets only the initial prediction, which is its output, and sends
    messages without receiving any: the paper's edges and normals helping depth and
    segmentation. Image-level tasks read the pooled coarsest backbone map, as in HPS.
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskKind], neck_channels: int = 64
    ) -> None:
        super().__init__()
        self.tasks = tasks_by_name(tasks)
        self.backbone = backbone
        dense = [t for t in tasks if t.dense]
        self.has_dense = bool(dense)
        self.neck = LightFPN(backbone.feature_channels, neck_channels) if self.has_dense else None
        self.initial = nn.ModuleDict(
            {t.name: InitialPrediction(neck_channels, neck_channels, t.channels) for t in dense}
        )
        finals = [t for t in tasks if not (t.dense and t.auxiliary)]
        self.distillation = MultiModalDistillation(
            [t.name for t in finals if t.dense], neck_channels, [t.name for t in dense]
        )
        top = backbone.feature_channels[-1]
        self.heads = task_heads(finals, neck_channels, top)

    @override
    def output_layers(self, task: str) -> list[nn.Conv2d | nn.Linear]:
        initial = [cast(InitialPrediction, self.initial[task]).proj] if task in self.initial else []
        return super().output_layers(task) + initial

    @override
    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        size = (x.shape[-2], x.shape[-1])
        feats = self.backbone(x)
        shared = self.neck(feats) if self.neck is not None else None
        out = MultiTaskOutput()
        initial: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        distilled: dict[str, torch.Tensor] = {}
        if shared is not None:
            initial = {name: module(shared) for name, module in self.initial.items()}
            distilled = self.distillation({name: f for name, (f, _) in initial.items()})
        for name, task in self.tasks.items():
            if name not in self.heads:  # an auxiliary dense task: its initial prediction
                out[name] = _upsample(initial[name][1], size)
                continue
            head = self.heads[name]
            out[name] = head(distilled[name], size) if task.dense else head(feats[-1])
            if name in initial:
                out.deep_supervision[name] = {"initial": initial[name][1]}
        out.shared = [t for t in (shared, feats[-1]) if t is not None]
        return out
