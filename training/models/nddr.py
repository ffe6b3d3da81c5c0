"""NDDR-CNN: one backbone per task, fused after every stage by a learned 1x1 projection."""

from __future__ import annotations

import torch
from torch import nn
from typing_extensions import override

from training.models.cross_stitch import PerTaskNetworks, mixing_init
from training.models.multitask import ARCHITECTURES


class NDDRLayer(nn.Module):
    """Task ``i``'s output is ``ReLU(BN_i(conv_i(concat(x_1, ..., x_T))))``, 1x1 convolutions.

    Each conv starts as ``[b I, ..., a I, ..., b I]`` (``a`` on the task's own channels, ``b`` on
    the others', rows of the mixing matrix of ``mixing_init``), so every task starts close to its
    own features.

    Args:
        num_tasks: number of task networks it fuses.
        channels: channels of each task's feature map (in and out).
    """

    def __init__(self, num_tasks: int, channels: int) -> None:
        super().__init__()
        mixing = mixing_init(num_tasks)
        eye = torch.eye(channels)
        self.reduce = nn.ModuleList()
        for i in range(num_tasks):
            conv = nn.Conv2d(num_tasks * channels, channels, 1, bias=False)
            with torch.no_grad():
                weight = torch.cat([mixing[i, j] * eye for j in range(num_tasks)], dim=1)
                conv.weight.copy_(weight.view(channels, num_tasks * channels, 1, 1))
            self.reduce.append(nn.Sequential(conv, nn.BatchNorm2d(channels), nn.ReLU(True)))

    @override
    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        stacked = torch.cat(xs, dim=1)
        return [reduce(stacked) for reduce in self.reduce]


@ARCHITECTURES.register("nddr")
class NDDR(PerTaskNetworks):
    """NDDR-CNN (Gao, Ma, Zhao, Liu and Yuille, CVPR 2019).

    One backbone copy per task; after each stage every task's map becomes ReLU(BN(1x1 conv)) of
    the concatenation of all tasks' maps (initialised near the identity), then per-task neck and
    head. Costs T backbones; no layer-specific learning rates or the paper's shortcut variant.
    """

    @override
    def make_fusion(self, num_tasks: int, channels: int) -> nn.Module:
        return NDDRLayer(num_tasks, channels)
