"""MTAN: a shared trunk with per-task soft attention at every encoder and decoder scale."""

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
from training.models.necks import conv_bn_relu
from training.tasks import TaskKind


def attention_mask(in_channels: int, out_channels: int) -> nn.Sequential:
    """The paper's mask function g: 1x1 conv + BN + ReLU, 1x1 conv + BN + sigmoid.

    Full width inside (``out_channels``), as the paper's code (lorenmt/mtan) builds it.
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(True),
        nn.Conv2d(out_channels, out_channels, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.Sigmoid(),
    )


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class SharedDecoder(nn.Module):
    """The shared top-down decoder: one map of ``channels`` at every backbone scale.

    ``d_S = smooth(lateral(F_S))`` at the coarsest scale, then
    ``d_s = smooth(lateral(F_s) + up(d_{s+1}))``; returned fine to coarse.
    """

    def __init__(self, in_channels: Sequence[int], channels: int) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(conv_bn_relu(channels, channels) for _ in in_channels)

    @override
    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        maps: list[torch.Tensor] = []
        above: torch.Tensor | None = None
        for s in reversed(range(len(feats))):
            x = self.laterals[s](feats[s])
            if above is not None:
                x = x + F.interpolate(above, size=x.shape[-2:], mode="nearest")
            above = self.smooth[s](x)
            maps.append(above)
        return maps[::-1]


@ARCHITECTURES.register("mtan")
class MTAN(MultiTaskModel):
    """MTAN (Liu, Johns and Davison, CVPR 2019): a shared network, per-task attention modules.

    Encoder, at every backbone stage ``s``: task ``t``'s mask is computed from the stage's
    features before its last block (with the task's attended features of the previous stage)
    and applied to the stage's output, ``a_s = g_s^t([u_s, p_{s-1}]) * F_s``; the attended map
    goes through a shared 3x3 block ``f_s`` and a 2x2 max-pool to guide the next stage's mask
    (``p_s``). Decoder (dense tasks), coarse to fine over a shared top-down decoder's maps
    ``d_s``: ``b_s = h_s^t([d_s, up(f'_s(b_{s+1}))]) * d_s``, starting from the task's coarsest
    attended encoder map; the dense head reads the finest ``b_0``. Masks are full width, as in
    the paper's code; image tasks pool the coarsest attended encoder map.
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskKind], neck_channels: int = 64
    ) -> None:
        super().__init__()
        self.tasks = tasks_by_name(tasks)
        self.backbone = backbone
        channels = list(backbone.feature_channels)
        scales = len(channels)
        c = neck_channels
        self.has_dense = any(t.dense for t in tasks)
        self.encoder_masks = nn.ModuleDict(
            {
                t.name: nn.ModuleList(
                    attention_mask(channels[s] * (2 if s else 1), channels[s])
                    for s in range(scales)
                )
                for t in tasks
            }
        )
        # shared f_s: from stage s's attended map to stage s + 1's width
        self.encoder_refine = nn.ModuleList(
            conv_bn_relu(channels[s], channels[s + 1]) for s in range(scales - 1)
        )
        self.decoder = SharedDecoder(channels, c) if self.has_dense else None
        # shared f'_s: from the coarser attended map (the encoder's at the coarsest scale)
        self.decoder_refine = nn.ModuleList(
            conv_bn_relu(channels[-1] if s == scales - 1 else c, c) for s in range(scales)
        )
        self.decoder_masks = nn.ModuleDict(
            {
                t.name: nn.ModuleList(attention_mask(2 * c, c) for _ in range(scales))
                for t in tasks
                if t.dense
            }
        )
        if not self.has_dense:
            self.decoder_refine = nn.ModuleList()
        self.heads = task_heads(tasks, c, channels[-1])

    def _encoder(self, task: str, stages: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Task ``task``'s attended coarsest encoder map."""
        masks = cast(nn.ModuleList, self.encoder_masks[task])
        guide: torch.Tensor | None = None
        attended = stages[0][1]
        for s, (inner, full) in enumerate(stages):
            mask_input = inner if guide is None else torch.cat([inner, _resize(guide, inner)], 1)
            attended = masks[s](mask_input) * full
            if s < len(stages) - 1:
                guide = F.max_pool2d(self.encoder_refine[s](attended), 2, 2)
        return attended

    def _decoder(self, task: str, maps: list[torch.Tensor], encoded: torch.Tensor) -> torch.Tensor:
        """Task ``task``'s attended finest decoder map."""
        masks = cast(nn.ModuleList, self.decoder_masks[task])
        attended = encoded
        for s in reversed(range(len(maps))):
            guide = _resize(self.decoder_refine[s](attended), maps[s])
            attended = masks[s](torch.cat([maps[s], guide], 1)) * maps[s]
        return attended

    @override
    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        size = (x.shape[-2], x.shape[-1])
        stages = self.backbone.forward_stages(x)
        feats = [full for _, full in stages]
        maps = self.decoder(feats) if self.decoder is not None else []
        out = MultiTaskOutput()
        for name, task in self.tasks.items():
            encoded = self._encoder(name, stages)
            head = self.heads[name]
            out[name] = (
                head(self._decoder(name, maps, encoded), size) if task.dense else head(encoded)
            )
        out.shared = maps + feats
        return out
