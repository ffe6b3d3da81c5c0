"""Backbones registered by name; each returns multi-scale features (strides 4, 8, 16, 32).

Every backbone exposes the same interface (as timm's ``features_only``): ``forward(x)`` returns a
list of feature maps, fine to coarse, and ``feature_channels`` gives their channel counts.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import torch
from torch import nn
from typing_extensions import override

from training.errors import ConfigError
from training.models.pretrained import map_to_backbone, read_checkpoint
from training.registry import Registry


class Backbone(nn.Module):
    """Base class: ``feature_channels`` lists the channels of each returned scale."""

    feature_channels: list[int]
    feature_strides: list[int]

    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per stage, fine to coarse: (its features before its last block, its output).

        MTAN computes each attention mask from the first and applies it to the second.
        """
        raise NotImplementedError(f"{type(self).__name__} does not expose its stages")


BACKBONES: Registry[type[Backbone]] = Registry("backbone")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = _shortcut(cin, cout, stride)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.down(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand with a residual connection (ResNet-50 and up)."""

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = _shortcut(cin, cout, stride)

    @override
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.down(x))


def _shortcut(cin: int, cout: int, stride: int) -> nn.Module:
    if stride == 1 and cin == cout:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


class ResNet(Backbone):
    """ResNet (He et al. 2016) trunk without the classifier, with a width multiplier.

    ``width`` is the channel count of the first stage (64 in the paper); smaller widths give
    models small enough to train on a CPU and ship in a repository.
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: list[int], width: int) -> None:
        super().__init__()
        if width < 4:
            raise ConfigError(f"model.width must be >= 4, got {width}")
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        cin = width
        stages = []
        self.feature_channels = []
        for i, n in enumerate(layers):
            w = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w * block.expansion
            stages.append(nn.Sequential(*blocks))
            self.feature_channels.append(cin)
        self.stages = nn.ModuleList(stages)
        self.feature_strides = [4, 8, 16, 32]
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Zero-init the last BN of each residual branch: blocks start as identities.
        for m in self.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)
            elif isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    @override
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    @override
    def forward_stages(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x = self.stem(x)
        out = []
        for stage in self.stages:
            blocks = list(cast(nn.Sequential, stage))
            for block in blocks[:-1]:
                x = block(x)
            inner = x
            x = blocks[-1](x)
            # a one-block stage has no features of its own before its last block
            out.append((inner if len(blocks) > 1 else x, x))
        return out


def _resnet(block: type[BasicBlock | Bottleneck], layers: list[int]) -> type[Backbone]:
    class _Variant(ResNet):
        def __init__(self, width: int = 64) -> None:
            super().__init__(block, layers, width)

    return _Variant


for _name, _block, _layers in [
    ("resnet18", BasicBlock, [2, 2, 2, 2]),
    ("resnet34", BasicBlock, [3, 4, 6, 3]),
    ("resnet50", Bottleneck, [3, 4, 6, 3]),
    ("resnet101", Bottleneck, [3, 4, 23, 3]),
]:
    _cls = _resnet(_block, _layers)
    _cls.__name__ = _cls.__qualname__ = _name
    _cls.__doc__ = f"{_name}: ResNet with {_block.__name__} blocks {_layers}."
    BACKBONES.register(_name)(_cls)


def build_backbone(name: str, width: int = 64, weights: str | Path | None = None) -> Backbone:
    """Build a registered backbone, optionally loading a local weights file.

    ``weights`` is a safetensors or ``torch.save`` file (``.pth``/``.pt``/``.bin``) holding either
    this backbone's own state dict or a torchvision/timm ImageNet ResNet checkpoint (width 64
    only; see ``training.models.pretrained``); nothing is ever downloaded.
    """
    model = BACKBONES.get(name)(width=width)  # type: ignore[call-arg]
    if weights is not None:
        load_backbone_weights(model, Path(weights))
    return model


def load_backbone_weights(model: nn.Module, path: Path) -> None:
    """Load a local weights file into ``model`` through the key map; misfits are a ConfigError."""
    state = map_to_backbone(model, read_checkpoint(path), source=str(path))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # map_to_backbone checked keys and shapes; this is a backstop
        raise ConfigError(f"model.weights: {path} does not fit the backbone: {e}") from e
