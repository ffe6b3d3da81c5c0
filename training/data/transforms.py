"""Augmentations that keep every task consistent with the image.

A sample is a dict of numpy arrays: ``image`` (H,W,3 uint8) and one array per dense task, plus
``_kinds`` (task -> kind) so each transform knows how to treat each map. Labels are resampled
nearest-neighbour (class maps stay class maps; depth and normals are never interpolated across
object edges); a horizontal flip negates the x component of normals.

Random transforms draw from the ``np.random.Generator`` they are given, or by default from one
seeded per process from ``torch.initial_seed()`` (see ``_Draws``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image

Sample = dict[str, Any]


class _Draws:
    """The generator a transform draws from: the one it was given, or a per-process default.

    The default is seeded from ``torch.initial_seed()`` and made on first use in each process, so
    DataLoader workers (each with its own torch seed) draw differently, and runs seeded with
    ``torch.manual_seed`` repeat. Made at construction it would be copied into every worker.
    """

    def __init__(self, rng: np.random.Generator | None) -> None:
        self.given = rng
        self._seed: int | None = None
        self._default: np.random.Generator | None = None

    def get(self) -> np.random.Generator:
        if self.given is not None:
            return self.given
        import torch  # only for the per-worker seed; the transforms themselves are numpy

        seed = torch.initial_seed()
        if self._default is None or seed != self._seed:
            self._seed, self._default = seed, np.random.default_rng(seed)
        return self._default


def _maps(sample: Sample) -> dict[str, str]:
    """Dense task name -> kind for the maps present in ``sample``."""
    return {t: k for t, k in sample.get("_kinds", {}).items() if t in sample}


def _resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    return np.asarray(Image.fromarray(img).resize((w, h), Image.Resampling.BILINEAR))


def _resize_nearest(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    rows = np.minimum((np.arange(h) + 0.5) * a.shape[0] / h, a.shape[0] - 1).astype(np.int64)
    cols = np.minimum((np.arange(w) + 0.5) * a.shape[1] / w, a.shape[1] - 1).astype(np.int64)
    return a[rows][:, cols]


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]) -> None:
        """Chain ``transforms``."""
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        """Return the transformed sample (the input is not modified)."""
        for t in self.transforms:
            sample = t(sample)
        return sample


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``; normals get their x component negated."""

    def __init__(self, p: float = 0.5, rng: np.random.Generator | None = None) -> None:
        """Flip with probability ``p`` using draws from ``rng``."""
        self.p, self._draws = p, _Draws(rng)

    def __call__(self, sample: Sample) -> Sample:
        """Return the transformed sample (the input is not modified)."""
        if self._draws.get().random() >= self.p:
            return sample
        out = dict(sample)
        out["image"] = np.ascontiguousarray(sample["image"][:, ::-1])
        for task, kind in _maps(sample).items():
            flipped = np.ascontiguousarray(sample[task][:, ::-1])
            if kind == "normals":
                flipped = flipped.copy()
                flipped[..., 0] *= -1
            out[task] = flipped
        return out


class RandomScaleCrop:
    """Zoom in by a factor drawn from ``scale`` and crop back to the original size."""

    def __init__(
        self, scale: tuple[float, float] = (1.0, 1.5), rng: np.random.Generator | None = None
    ) -> None:
        """Zoom factors are uniform in ``scale`` (both >= 1)."""
        if not 1.0 <= scale[0] <= scale[1]:
            raise ValueError(f"scale must satisfy 1 <= min <= max, got {scale}")
        self.scale, self._draws = scale, _Draws(rng)

    def __call__(self, sample: Sample) -> Sample:
        """Return the transformed sample (the input is not modified)."""
        rng = self._draws.get()
        h, w = sample["image"].shape[:2]
        f = rng.uniform(*self.scale)
        big = (round(h * f), round(w * f))
        top = int(rng.integers(0, big[0] - h + 1))
        left = int(rng.integers(0, big[1] - w + 1))
        out = dict(sample)
        out["image"] = _resize_image(sample["image"], big)[top : top + h, left : left + w]
        for task in _maps(sample):
            out[task] = _resize_nearest(sample[task], big)[top : top + h, left : left + w]
        return out


class Resize:
    """Resize to ``size`` (H, W): the image bilinearly, every label nearest-neighbour."""

    def __init__(self, size: tuple[int, int]) -> None:
        """Target (height, width)."""
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"size must be (height, width) >= 1, got {size}")
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, sample: Sample) -> Sample:
        """Return the transformed sample (the input is not modified)."""
        out = dict(sample)
        out["image"] = _resize_image(sample["image"], self.size)
        for task in _maps(sample):
            out[task] = _resize_nearest(sample[task], self.size)
        return out


class ColorJitter:
    """Random brightness and contrast changes of the image only."""

    def __init__(
        self, brightness: float = 0.2, contrast: float = 0.2, rng: np.random.Generator | None = None
    ) -> None:
        """Factors are uniform in [1 - x, 1 + x]."""
        self.brightness, self.contrast, self._draws = brightness, contrast, _Draws(rng)

    def __call__(self, sample: Sample) -> Sample:
        """Return the transformed sample (the input is not modified)."""
        img = sample["image"].astype(np.float32)
        rng = self._draws.get()
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        mean = img.mean()
        img = (img * b - mean * b) * c + mean * b
        return {**sample, "image": np.clip(img + 0.5, 0, 255).astype(np.uint8)}
