"""Image collections for scoring tests and benchmarks: rendered scenes plus corrupt files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.synth import SceneConfig, render_scene

# sizes the collection cycles through: the model's own, larger, smaller, not square
SIZES = [(128, 128), (160, 120), (96, 128), (200, 150), (128, 96)]


def scene_image(seed: int, size: tuple[int, int] = (128, 128)) -> Image.Image:
    """A rendered multi-task scene (the demo model's domain) at ``size`` (w, h)."""
    pixels = render_scene(np.random.default_rng(seed), SceneConfig(size=128)).image
    img = Image.fromarray(pixels)
    return img if img.size == size else img.resize(size, Image.Resampling.BILINEAR)


def encode(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_collection(root: Path, n: int, seed: int = 0, nested: bool = True) -> list[Path]:
    """``n`` scene images under ``root`` (PNG and JPEG, several sizes, in subfolders)."""
    paths = []
    for i in range(n):
        fmt, ext = ("PNG", "png") if i % 3 else ("JPEG", "jpg")
        folder = root / f"group{i % 4}" if nested else root
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"img{i:05d}.{ext}"
        path.write_bytes(encode(scene_image(seed + i, SIZES[i % len(SIZES)]), fmt))
        paths.append(path)
    return paths


def write_corrupt(root: Path) -> list[Path]:
    """Five files named like images that are not: empty, truncated, random, text."""
    root.mkdir(parents=True, exist_ok=True)
    png = encode(scene_image(999), "PNG")
    jpg = encode(scene_image(998), "JPEG")
    files = {
        "empty.png": b"",
        "truncated.png": png[: len(png) // 2],
        "truncated.jpg": jpg[:200],
        "random.jpg": np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes(),
        "text.png": b"this is not an image\n",
    }
    paths = []
    for name, data in files.items():
        (root / name).write_bytes(data)
        paths.append(root / name)
    return paths
