"""Necks fuse a backbone's multi-scale features into one shared dense representation."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    """Conv (no bias) + BatchNorm + ReLU, 'same' padding."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(True)
    )


class LightFPN(nn.Module):
    """A light feature pyramid: 1x1 laterals, top-down sum, one 3x3 fusion at stride 4.

    Returns one feature map of ``channels`` channels at the finest scale (stride 4): the shared
    representation every dense head reads.
    """

    def __init__(self, in_channels: list[int], channels: int) -> None:
        super().__init__()
        self.laterals = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = conv_bn_relu(channels, channels)
        self.out_channels = channels

    @override
    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = self.laterals[-1](feats[-1])
        for lateral, f in zip(reversed(self.laterals[:-1]), reversed(feats[:-1]), strict=True):
            x = lateral(f) + F.interpolate(x, size=f.shape[-2:], mode="nearest")
        return self.fuse(x)
