"""MTAN: a shared trunk with per-task soft attention over its features at every scale."""

from __future__ import annotations

from collections.abc import Sequence

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


def _reduced(channels: int) -> int:
    """Width of the small convolutions inside an attention module."""
    return max(channels // 4, 4)


def attention_mask(in_channels: int, out_channels: int) -> nn.Sequential:
    """The paper's mask function g: two 1x1 conv + BN, ReLU between, sigmoid at the end."""
    hidden = _reduced(out_channels)
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden, 1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(True),
        nn.Conv2d(hidden, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.Sigmoid(),
    )


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class TaskAttention(nn.Module):
    """One task's chain of attention modules over the shared multi-scale features.

    At scale ``s`` the mask is ``g_s([F_s, pool(f_s(a_{s-1}))])`` (only ``g_0(F_0)`` at the
    finest scale) and the task's features are ``a_s = mask * F_s``: the previous scale's attended
    features, passed through ``f_s`` (3x3 conv) and max-pooled, guide the next mask.

    Args:
        channels: channels of the shared features, fine to coarse.
    """

    def __init__(self, channels: Sequence[int]) -> None:
        super().__init__()
        carried = [_reduced(c) for c in channels]
        self.carry = nn.ModuleList(
            conv_bn_relu(channels[s - 1], carried[s]) for s in range(1, len(channels))
        )
        self.masks = nn.ModuleList(
            attention_mask(c + (carried[s] if s else 0), c) for s, c in enumerate(channels)
        )

    @override
    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        attended = [self.masks[0](feats[0]) * feats[0]]
        for s in range(1, len(feats)):
            guide = F.max_pool2d(self.carry[s - 1](attended[-1]), 3, 2, 1)
            guide = _resize(guide, feats[s])
            mask = self.masks[s](torch.cat([feats[s], guide], dim=1))
            attended.append(mask * feats[s])
        return attended


class DecoderAttention(nn.Module):
    """Attention over the shared neck map, guided by the task's coarsest attended features.

    Args:
        guide_channels: channels of the task's coarsest attended map.
        channels: channels of the shared neck map.
    """

    def __init__(self, guide_channels: int, channels: int) -> None:
        super().__init__()
        carried = _reduced(channels)
        self.carry = conv_bn_relu(guide_channels, carried)
        self.mask = attention_mask(channels + carried, channels)

    @override
    def forward(self, shared: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        g = _resize(self.carry(guide), shared)
        return self.mask(torch.cat([shared, g], dim=1)) * shared


@ARCHITECTURES.register("mtan")
class MTAN(MultiTaskModel):
    """MTAN (Liu, Johns and Davison, CVPR 2019): shared trunk, per-task attention at each scale.

    Each task masks the shared backbone features at every scale with sigmoid attention, each mask
    guided by the task's attended features of the previous (finer) scale. Image tasks pool the
    coarsest attended map; dense tasks mask the shared FPN map (guided by that coarsest map)
    instead of the paper's attention at every decoder scale. Masks use small 1x1 bottlenecks.
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskKind], neck_channels: int = 64
    ) -> None:
        super().__init__()
        self.tasks = tasks_by_name(tasks)
        self.backbone = backbone
        channels = list(backbone.feature_channels)
        self.has_dense = any(t.dense for t in tasks)
        self.neck = LightFPN(channels, neck_channels) if self.has_dense else None
        self.encoder_attention = nn.ModuleDict({t.name: TaskAttention(channels) for t in tasks})
        self.decoder_attention = nn.ModuleDict(
            {t.name: DecoderAttention(channels[-1], neck_channels) for t in tasks if t.dense}
        )
        self.heads = task_heads(tasks, neck_channels, channels[-1])

    @override
    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        size = (x.shape[-2], x.shape[-1])
        feats = self.backbone(x)
        dense = self.neck(feats) if self.neck is not None else None
        out = MultiTaskOutput()
        for name, task in self.tasks.items():
            attended = self.encoder_attention[name](feats)
            if task.dense:
                assert dense is not None
                out[name] = self.heads[name](
                    self.decoder_attention[name](dense, attended[-1]), size
                )
            else:
                out[name] = self.heads[name](attended[-1])
        out.shared = ([dense] if dense is not None else []) + list(feats)
        return out
