"""Backbones, necks, heads and multi-task architectures."""

from training.models.backbones import BACKBONES, Backbone, build_backbone
from training.models.multitask import ARCHITECTURES, MultiTaskModel, MultiTaskOutput

__all__ = [
    "ARCHITECTURES",
    "BACKBONES",
    "Backbone",
    "MultiTaskModel",
    "MultiTaskOutput",
    "build_backbone",
]
