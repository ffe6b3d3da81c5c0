"""Procedural multi-task scenes: shapes over a slanted textured plane, with exact labels.

Geometry (orthographic camera): pixel (u, v) sits at x = (u - W/2) * PIXEL_SIZE metres to the
right and y = (v - H/2) * PIXEL_SIZE metres down; depth z (metres) grows away from the camera.
Every surface is a height field z(x, y): the background is a slanted plane, squares, triangles and
stars are slanted planar patches, circles are hemispheres. The normal of z(x, y) in this camera
frame (x right, y down, z forward) is ``n = normalize(dz/dx, dz/dy, -1)``: it faces the camera
(n_z < 0). Shapes are z-buffered, so the nearer surface wins wherever two overlap, and the image
is shaded from those normals (Lambert, a point light near the camera) with a depth fog, and the
background texture is drawn in perspective, so depth and normals can be inferred from the image.

Everything is deterministic in (seed, scene index): scene ``i`` of seed ``s`` is the same
whatever else is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("circle", "square", "triangle", "star")
BACKGROUNDS = ("stripes", "checker", "noise", "gradient")
SEMSEG_LABELS = ("background", *SHAPE_CLASSES)
VIEW_WIDTH_M = 2.0  # the image spans 2 m horizontally at any size
MIN_VISIBLE_PIXELS = 8  # a class counts as present in the image-level label from this many pixels
LIGHT_POSITION = np.array([0.3, -0.5, 0.0])  # a point light beside the camera
LIGHT_REACH_M = 5.5  # inverse-square falloff is 1 at this distance
FORMAT = "polyhead-dataset/1"


@dataclass(frozen=True)
class SceneConfig:
    """Scene size and how many shapes it holds."""

    size: int = 128
    min_shapes: int = 1
    max_shapes: int = 4


@dataclass
class Scene:
    """One rendered scene and every label of it."""

    image: np.ndarray  # H,W,3 uint8
    semseg: np.ndarray  # H,W uint8 class index (0 background)
    depth: np.ndarray  # H,W float32 metres, > 0
    normals: np.ndarray  # H,W,3 float32 unit
    edges: np.ndarray  # H,W bool
    instances: np.ndarray  # H,W int32 (0 background, 1.. shapes)
    shapes: list[str]
    background: str


def pixel_size(size: int) -> float:
    """Metres per pixel for a ``size``-pixel-wide image."""
    return VIEW_WIDTH_M / size


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    p = pixel_size(size)
    coords = (np.arange(size, dtype=np.float64) + 0.5 - size / 2) * p
    return np.meshgrid(coords, coords)  # x (right), y (down), metres


def _normals_of_plane(gx: float, gy: float, shape: tuple[int, int]) -> np.ndarray:
    n = np.array([gx, gy, -1.0])
    return np.broadcast_to(n / np.linalg.norm(n), (*shape, 3))


def _background_albedo(
    kind: str, rng: np.random.Generator, x: np.ndarray, y: np.ndarray, depth: np.ndarray
) -> np.ndarray:
    """The plane's texture, drawn in perspective: it gets denser where the plane is farther.

    Texture coordinates are the pixel's ray scaled by its depth, so a slanted plane shows a
    texture gradient, a monocular cue for its depth and orientation.
    """
    c1, c2 = rng.uniform(0.3, 0.95, 3), rng.uniform(0.3, 0.95, 3)
    scale = depth / 5.0
    tu, tv = x * scale, y * scale
    theta = rng.uniform(0, np.pi)
    along = tu * np.cos(theta) + tv * np.sin(theta)
    across = -tu * np.sin(theta) + tv * np.cos(theta)
    if kind == "stripes":
        period = rng.uniform(0.14, 0.3)
        t = (np.sin(2 * np.pi * along / period) > 0).astype(np.float64)
    elif kind == "checker":
        cell = rng.uniform(0.1, 0.22)
        t = ((np.floor(along / cell) + np.floor(across / cell)) % 2).astype(np.float64)
    elif kind == "noise":
        t = np.zeros_like(tu)
        for _ in range(6):
            freq = rng.uniform(2.0, 7.0)
            phi = rng.uniform(0, 2 * np.pi)
            ang = rng.uniform(0, np.pi)
            t += np.sin(2 * np.pi * freq * (tu * np.cos(ang) + tv * np.sin(ang)) + phi)
        t = np.clip(t / 4.0 + 0.5, 0, 1)
    else:  # gradient
        t = np.clip(along / 2.0 + 0.5, 0, 1)
    return c1 * (1 - t[..., None]) + c2 * t[..., None]


def _polygon(
    kind: str, rng: np.random.Generator, cx: float, cy: float, r: float
) -> list[tuple[float, float]]:
    rot = rng.uniform(0, 2 * np.pi)
    if kind == "square":
        angles = rot + np.arange(4) * np.pi / 2
        radii = np.full(4, r)
    elif kind == "triangle":
        angles = rot + np.arange(3) * 2 * np.pi / 3
        radii = np.full(3, r * 1.15)
    else:  # star
        angles = rot + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r * 1.15, r * 0.5)
    return [(cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(radii, angles, strict=True)]


def _polygon_mask(points: list[tuple[float, float]], size: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=1)
    return np.asarray(canvas, dtype=bool)


def render_scene(rng: np.random.Generator, cfg: SceneConfig = SceneConfig()) -> Scene:
    """Render one scene from ``rng``."""
    size = cfg.size
    p = pixel_size(size)
    x, y = _grid(size)

    bg_kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    gx, gy = rng.uniform(-0.9, 0.9, 2)
    depth = rng.uniform(6.0, 7.5) + gx * x + gy * y
    normals = np.array(_normals_of_plane(gx, gy, depth.shape))
    albedo = _background_albedo(bg_kind, rng, x, y, depth)
    semseg = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.int32)

    for inst in range(1, int(rng.integers(cfg.min_shapes, cfg.max_shapes + 1)) + 1):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        kind = SHAPE_CLASSES[cls]
        z0 = rng.uniform(2.0, 3.6)
        radius_m = rng.uniform(0.17, 0.34) * 2.8 / z0  # nearer shapes look a little larger
        cx_m, cy_m = rng.uniform(-0.75, 0.75, 2)
        dx, dy = x - cx_m, y - cy_m
        if kind == "circle":
            d2 = dx**2 + dy**2
            mask = d2 < radius_m**2
            s = np.sqrt(np.clip(radius_m**2 - d2, 1e-12, None))
            z = z0 - s
            n = np.stack([dx / s, dy / s, -np.ones_like(s)], axis=-1)
            n /= np.linalg.norm(n, axis=-1, keepdims=True)
        else:
            cu, cv = cx_m / p + size / 2, cy_m / p + size / 2
            mask = _polygon_mask(_polygon(kind, rng, cu, cv, radius_m / p), size)
            sgx, sgy = rng.uniform(-0.6, 0.6, 2)
            z = z0 + sgx * dx + sgy * dy
            n = np.array(_normals_of_plane(sgx, sgy, z.shape))
        visible = mask & (z < depth)
        color = rng.uniform(0.25, 1.0, 3)
        texture = 1.0 + rng.normal(0, 0.04, (size, size, 1))
        depth = np.where(visible, z, depth)
        normals = np.where(visible[..., None], n, normals)
        albedo = np.where(visible[..., None], color * texture, albedo)
        semseg[visible] = cls + 1
        instances[visible] = inst

    to_light = LIGHT_POSITION - np.stack([x, y, depth], axis=-1)
    distance = np.linalg.norm(to_light, axis=-1, keepdims=True)
    lambert = np.clip((normals * to_light / distance).sum(-1), 0.0, 1.0)
    falloff = np.minimum((LIGHT_REACH_M / distance[..., 0]) ** 2, 1.6)
    shade = 0.08 + 0.75 * lambert * falloff
    fog = np.clip((depth - 1.5) / 16.0, 0.0, 0.6)[..., None]
    rgb = albedo * shade[..., None] * (1 - fog) + 0.75 * fog
    rgb += rng.normal(0, 0.015, rgb.shape)
    image = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)

    counts = np.bincount(semseg.ravel(), minlength=len(SEMSEG_LABELS))
    present = [
        SHAPE_CLASSES[c - 1]
        for c in range(1, len(SEMSEG_LABELS))
        if counts[c] >= MIN_VISIBLE_PIXELS
    ]
    return Scene(
        image=image,
        semseg=semseg,
        depth=depth.astype(np.float32),
        normals=normals.astype(np.float32),
        edges=instance_edges(instances),
        instances=instances,
        shapes=present,
        background=bg_kind,
    )


def instance_edges(instances: np.ndarray) -> np.ndarray:
    """Pixels with a 4-neighbour of another instance (boundaries are two pixels thick)."""
    e = np.zeros(instances.shape, bool)
    h = instances[:, 1:] != instances[:, :-1]
    v = instances[1:, :] != instances[:-1, :]
    e[:, 1:] |= h
    e[:, :-1] |= h
    e[1:, :] |= v
    e[:-1, :] |= v
    return e


def dataset_tasks() -> dict[str, dict]:
    """The task block of dataset.json for synthetic scenes."""
    return {
        "semseg": {"kind": "segmentation", "labels": list(SEMSEG_LABELS), "ignore_index": 255},
        "depth": {"kind": "depth", "units": "m"},
        "normals": {"kind": "normals"},
        "edges": {"kind": "edges"},
        "shapes": {"kind": "multilabel", "labels": list(SHAPE_CLASSES)},
        "background": {"kind": "classification", "labels": list(BACKGROUNDS)},
    }


def split_ids(
    ids: list[str], seed: int, fractions: tuple[float, float, float]
) -> dict[str, list[str]]:
    """Shuffle ``ids`` deterministically and cut train/val/test (each non-empty from 3 ids)."""
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(ids))
    n = len(ids)
    n_val = max(1, round(n * fractions[1])) if n >= 3 else 0
    n_test = max(1, round(n * fractions[2])) if n >= 3 else 0
    n_train = n - n_val - n_test
    picked = [ids[i] for i in order]
    return {
        "train": sorted(picked[:n_train]),
        "val": sorted(picked[n_train : n_train + n_val]),
        "test": sorted(picked[n_train + n_val :]),
    }


def _write_scene(root: Path, sid: str, s: Scene) -> None:
    Image.fromarray(s.image).save(root / "images" / f"{sid}.png")
    Image.fromarray(s.semseg).save(root / "semseg" / f"{sid}.png")
    np.save(root / "depth" / f"{sid}.npy", s.depth)
    enc = np.clip(np.round((s.normals + 1.0) * 127.5), 1, 255).astype(np.uint8)
    Image.fromarray(enc).save(root / "normals" / f"{sid}.png")
    Image.fromarray(s.edges.astype(np.uint8) * 255).save(root / "edges" / f"{sid}.png")


def write_dataset(
    out: str | Path,
    n: int,
    size: int = 128,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    overwrite: bool = False,
) -> Path:
    """Write ``n`` scenes in the polyhead dataset format to ``out``; returns ``out``.

    The dataset is written to a hidden sibling and renamed into place, so a crash never leaves
    half a dataset at ``out``.
    """
    out = Path(out)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        for folder in ("images", "semseg", "depth", "normals", "edges", "splits"):
            (tmp / folder).mkdir()
        cfg = SceneConfig(size=size)
        width = max(6, len(str(n - 1)))
        ids = [str(i).zfill(width) for i in range(n)]
        labels = {}
        for i, sid in enumerate(ids):
            scene = render_scene(np.random.default_rng([seed, i]), cfg)
            _write_scene(tmp, sid, scene)
            labels[sid] = {"shapes": scene.shapes, "background": scene.background}
        (tmp / "labels.json").write_text(json.dumps(labels, indent=0, sort_keys=True))
        for name, members in split_ids(ids, seed, splits).items():
            (tmp / "splits" / f"{name}.txt").write_text("".join(m + "\n" for m in members))
        meta = {
            "format": FORMAT,
            "name": "scenes",
            "image_size": [size, size],
            "seed": seed,
            "count": n,
            "tasks": dataset_tasks(),
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
