"""Task heads: dense heads predict at input resolution, image heads one vector per image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from typing_extensions import override

from training.models.necks import conv_bn_relu


class DenseHead(nn.Module):
    """3x3 conv block then a 1x1 projection, upsampled bilinearly to the input size."""

    def __init__(self, in_channels: int, out_channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or max(in_channels // 2, 16)
        self.block = conv_bn_relu(in_channels, hidden)
        self.proj = nn.Conv2d(hidden, out_channels, 1)

    @override
    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        y = self.proj(self.block(x))
        return F.interpolate(y, size=size, mode="bilinear", align_corners=False)


class ImageHead(nn.Module):
    """Global average pooling of the coarsest features, then a linear layer."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_channels, out_channels)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))
