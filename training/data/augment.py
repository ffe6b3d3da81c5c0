"""Training augmentation built from the config, reseeded per sample for exact reproducibility.

Each sample's random draws come from ``(seed, epoch, sample id)``, never from a shared stream,
so the augmentation a sample gets does not depend on worker count, batch order or on where a
resumed run restarted.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from training.config import AugmentConfig
from training.data.transforms import ColorJitter, Compose, RandomHorizontalFlip, RandomScaleCrop


class SeededAugment:
    """A transform callable for ``FolderDataset``; call ``set_epoch`` before each epoch."""

    def __init__(self, cfg: AugmentConfig, seed: int) -> None:
        """Augment as ``cfg`` says, with draws derived from ``seed``."""
        self.cfg, self.seed, self.epoch = cfg, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws the next samples get."""
        self.epoch = epoch

    def pipeline(self, rng: np.random.Generator) -> Compose:
        """The configured transforms, all drawing from ``rng``."""
        steps: list[Any] = []
        if self.cfg.scale[1] > 1.0:
            steps.append(RandomScaleCrop(scale=self.cfg.scale, rng=rng))
        if self.cfg.hflip:
            steps.append(RandomHorizontalFlip(p=0.5, rng=rng))
        if self.cfg.color_jitter > 0:
            j = self.cfg.color_jitter
            steps.append(ColorJitter(brightness=j, contrast=j, rng=rng))
        return Compose(steps)

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Return the transformed sample (the input is not modified)."""
        key = zlib.crc32(str(sample["id"]).encode())
        rng = np.random.default_rng([self.seed, self.epoch, key])
        return self.pipeline(rng)(sample)
