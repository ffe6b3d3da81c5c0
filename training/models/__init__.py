"""Backbones, necks, heads and multi-task architectures (registered by name in ARCHITECTURES)."""

# importing an architecture module registers it
from training.models import branched, cross_stitch, mtan, mtinet, nddr, padnet, single_task
from training.models.backbones import BACKBONES, Backbone, build_backbone
from training.models.multitask import ARCHITECTURES, MultiTaskModel, MultiTaskOutput

__all__ = [
    "ARCHITECTURES",
    "BACKBONES",
    "Backbone",
    "MultiTaskModel",
    "MultiTaskOutput",
    "branched",
    "build_backbone",
    "cross_stitch",
    "mtan",
    "mtinet",
    "nddr",
    "padnet",
    "single_task",
]
