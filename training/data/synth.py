"""Procedural multi-task scenes: shapes over a slanted textured plane, with exact labels.

Geometry (orthographic camera): pixel (u, v) sits at x = (u + 0.5 - W/2) * p metres to the
right and y = (v + 0.5 - H/2) * p metres down, with p = ``pixel_size(W)`` (the view is
``VIEW_WIDTH_M`` wide at any resolution); depth z (metres) grows away from the camera.
Every surface is a height field z(x, y): the background is a slanted plane, squares, triangles and
stars are slanted planar patches, circles are hemispheres (z = z0 - sqrt(r² - d²)).

Normals are in that camera frame (x right, y down, z forward): the normal of z(x, y) is
``n = normalize(dz/dx, dz/dy, -1)``, so it faces the camera (n_z < 0). Finite differences of the
depth map with a step of p metres reproduce the stored normals inside every surface.

Surfaces are z-buffered (the nearest wins at each pixel, whatever the order they were drawn in)
and the image is shaded from the normals (Lambert, a point light beside the camera, with
inverse-square falloff) plus a depth fog, and the background texture is drawn in perspective, so
depth and normals can be inferred from the image. Shape colours are random, so colour never tells
the class.

Everything is deterministic in (seed, scene index): scene ``i`` of seed ``s`` is the same
whatever else is written, and ``write_dataset`` is byte-identical for a seed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from training.errors import OutputExistsError

SHAPE_CLASSES = ("circle", "square", "triangle", "star")
BACKGROUNDS = ("stripes", "checker", "noise", "gradient")
SEMSEG_LABELS = ("background", *SHAPE_CLASSES)
VIEW_WIDTH_M = 2.0  # the image spans 2 m horizontally at any size
MIN_VISIBLE_PIXELS = 8  # a class counts as present in the image-level label from this many pixels
LIGHT_POSITION = np.array([0.3, -0.5, 0.0])  # a point light beside the camera
LIGHT_REACH_M = 5.5  # inverse-square falloff is 1 at this distance
FORMAT = "polyhead-dataset/1"
DENSE_FOLDERS = ("images", "semseg", "depth", "normals", "edges")


@dataclass(frozen=True)
class SceneConfig:
    """Scene size and how many shapes it holds.

    Attributes:
        size: Side of the square image in pixels.
        min_shapes: Fewest shapes placed (some may end up hidden behind nearer ones).
        max_shapes: Most shapes placed.
    """

    size: int = 128
    min_shapes: int = 1
    max_shapes: int = 4

    def __post_init__(self) -> None:
        """Refuse sizes and counts the renderer cannot honour."""
        if self.size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {self.size}")
        if not 0 <= self.min_shapes <= self.max_shapes:
            raise ValueError(
                f"need 0 <= min_shapes <= max_shapes, got {self.min_shapes}, {self.max_shapes}"
            )


@dataclass
class Scene:
    """One rendered scene and every label of it.

    Attributes:
        image: H,W,3 uint8 RGB.
        semseg: H,W uint8 class index into ``SEMSEG_LABELS`` (0 background).
        depth: H,W float32 metres, > 0 everywhere.
        normals: H,W,3 float32 unit vectors (convention in the module docstring).
        edges: H,W bool, pixels with a 4-neighbour of another instance.
        instances: H,W int32 (0 background, 1.. the shapes in placement order).
        shapes: Classes with at least ``MIN_VISIBLE_PIXELS`` visible pixels, in
            ``SHAPE_CLASSES`` order.
        background: The background texture, one of ``BACKGROUNDS``.
    """

    image: np.ndarray
    semseg: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    edges: np.ndarray
    instances: np.ndarray
    shapes: list[str]
    background: str


@dataclass(frozen=True)
class Surface:
    """One surface of a scene before occlusion: where it is, how far, which way it faces.

    Attributes:
        label: Semantic class index into ``SEMSEG_LABELS``.
        mask: H,W bool, the pixels the surface covers.
        depth: H,W float64 metres (meaningful inside ``mask``).
        normals: H,W,3 float64 unit vectors (may be a broadcast view).
        albedo: H,W,3 float64 colour in [0, 1] (may be a broadcast view).
    """

    label: int
    mask: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    albedo: np.ndarray


@dataclass
class Composite:
    """The visible surface at every pixel, after z-buffering."""

    depth: np.ndarray
    normals: np.ndarray
    albedo: np.ndarray
    semseg: np.ndarray
    instances: np.ndarray


def pixel_size(size: int) -> float:
    """Metres per pixel for a ``size``-pixel-wide image."""
    return VIEW_WIDTH_M / size


def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame x (right) and y (down) in metres of every pixel centre, each H,W."""
    p = pixel_size(size)
    coords = (np.arange(size, dtype=np.float64) + 0.5 - size / 2) * p
    x, y = np.meshgrid(coords, coords)
    return x, y


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


def _shape_surface(rng: np.random.Generator, size: int, x: np.ndarray, y: np.ndarray) -> Surface:
    """One random shape: a hemisphere for circles, a slanted planar patch otherwise.

    Shapes sit 2-3.6 m away, always nearer than the background plane (>= 4.2 m) even at their
    most slanted, and nearer shapes are drawn a little larger.
    """
    p = pixel_size(size)
    cls = int(rng.integers(len(SHAPE_CLASSES)))
    kind = SHAPE_CLASSES[cls]
    z0 = rng.uniform(2.0, 3.6)
    radius_m = rng.uniform(0.17, 0.34) * 2.8 / z0
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
        n = _normals_of_plane(sgx, sgy, z.shape)
    color = rng.uniform(0.25, 1.0, 3)
    texture = 1.0 + rng.normal(0, 0.04, (size, size, 1))
    return Surface(label=cls + 1, mask=mask, depth=z, normals=n, albedo=color * texture)


def scene_surfaces(rng: np.random.Generator, cfg: SceneConfig) -> tuple[str, list[Surface]]:
    """Draw a scene's background kind and its surfaces: the background plane first, then shapes.

    Args:
        rng: The only source of randomness.
        cfg: Image size and shape counts.

    Returns:
        The background texture name and the unoccluded surfaces, ready for ``composite``.
    """
    size = cfg.size
    x, y = pixel_grid(size)
    bg_kind = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    gx, gy = rng.uniform(-0.9, 0.9, 2)
    depth = rng.uniform(6.0, 7.5) + gx * x + gy * y
    background = Surface(
        label=0,
        mask=np.ones((size, size), bool),
        depth=depth,
        normals=_normals_of_plane(gx, gy, depth.shape),
        albedo=_background_albedo(bg_kind, rng, x, y, depth),
    )
    count = int(rng.integers(cfg.min_shapes, cfg.max_shapes + 1))
    return bg_kind, [background] + [_shape_surface(rng, size, x, y) for _ in range(count)]


def composite(surfaces: list[Surface]) -> Composite:
    """Z-buffer ``surfaces``: each pixel shows the nearest surface covering it.

    The first surface must cover the whole image (the background). Instance ``k`` is
    ``surfaces[k]``; on an exact depth tie the earlier surface wins.
    """
    first = surfaces[0]
    if not first.mask.all():
        raise ValueError("the first surface must cover every pixel")
    depth = first.depth
    normals = np.array(first.normals)
    albedo = first.albedo
    semseg = np.full(depth.shape, first.label, np.uint8)
    instances = np.zeros(depth.shape, np.int32)
    for inst, s in enumerate(surfaces[1:], start=1):
        visible = s.mask & (s.depth < depth)
        depth = np.where(visible, s.depth, depth)
        normals = np.where(visible[..., None], s.normals, normals)
        albedo = np.where(visible[..., None], s.albedo, albedo)
        semseg[visible] = s.label
        instances[visible] = inst
    return Composite(depth, normals, albedo, semseg, instances)


def shade(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, c: Composite) -> np.ndarray:
    """Light the visible surfaces, add fog with depth and a little sensor noise; H,W,3 uint8."""
    to_light = LIGHT_POSITION - np.stack([x, y, c.depth], axis=-1)
    distance = np.linalg.norm(to_light, axis=-1, keepdims=True)
    lambert = np.clip((c.normals * to_light / distance).sum(-1), 0.0, 1.0)
    falloff = np.minimum((LIGHT_REACH_M / distance[..., 0]) ** 2, 1.6)
    light = 0.08 + 0.75 * lambert * falloff
    fog = np.clip((c.depth - 1.5) / 16.0, 0.0, 0.6)[..., None]
    rgb = c.albedo * light[..., None] * (1 - fog) + 0.75 * fog
    rgb += rng.normal(0, 0.015, rgb.shape)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


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


def visible_classes(semseg: np.ndarray) -> list[str]:
    """Shape classes with at least ``MIN_VISIBLE_PIXELS`` pixels, in ``SHAPE_CLASSES`` order."""
    counts = np.bincount(semseg.ravel(), minlength=len(SEMSEG_LABELS))
    return [
        SHAPE_CLASSES[c - 1]
        for c in range(1, len(SEMSEG_LABELS))
        if counts[c] >= MIN_VISIBLE_PIXELS
    ]


def render_scene(rng: np.random.Generator, cfg: SceneConfig = SceneConfig()) -> Scene:
    """Render one scene, every label included, from ``rng`` alone."""
    bg_kind, surfaces = scene_surfaces(rng, cfg)
    c = composite(surfaces)
    x, y = pixel_grid(cfg.size)
    return Scene(
        image=shade(rng, x, y, c),
        semseg=c.semseg,
        depth=c.depth.astype(np.float32),
        normals=c.normals.astype(np.float32),
        edges=instance_edges(c.instances),
        instances=c.instances,
        shapes=visible_classes(c.semseg),
        background=bg_kind,
    )


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
    """Shuffle ``ids`` deterministically and cut train/val/test.

    From 3 ids on, val and test each get at least one id unless their fraction is 0; train gets
    the rest.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"splits must be 3 non-negative fractions summing to 1, got {fractions}")
    order = np.random.default_rng([seed, 0x5EED]).permutation(len(ids))
    n = len(ids)

    def share(f: float) -> int:
        return max(1, round(n * f)) if n >= 3 and f > 0 else 0

    n_val, n_test = share(fractions[1]), share(fractions[2])
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
    # never 0 in a channel, so no valid normal reads back as the all-zero "invalid" code
    enc = np.clip(np.round((s.normals + 1.0) * 127.5), 1, 255).astype(np.uint8)
    Image.fromarray(enc).save(root / "normals" / f"{sid}.png")
    Image.fromarray(s.edges.astype(np.uint8) * 255).save(root / "edges" / f"{sid}.png")


def _render_and_write(
    root: Path, seed: int, size: int, indices: list[int], width: int
) -> dict[str, dict]:
    """Render and write scenes ``indices``; their image-level labels by id (worker entry)."""
    labels = {}
    cfg = SceneConfig(size=size)
    for i in indices:
        sid = str(i).zfill(width)
        scene = render_scene(np.random.default_rng([seed, i]), cfg)
        _write_scene(root, sid, scene)
        labels[sid] = {"shapes": scene.shapes, "background": scene.background}
    return labels


def _default_workers(n: int) -> int:
    if n < 256:  # starting processes costs more than it saves
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cpus or 1, 8))


def _render_all(root: Path, n: int, size: int, seed: int, workers: int) -> dict[str, dict]:
    width = max(6, len(str(n - 1)))
    if workers <= 1:
        return _render_and_write(root, seed, size, list(range(n)), width)
    step = max(1, min(64, -(-n // (workers * 4))))  # a few chunks per worker, for balance
    chunks = [list(range(i, min(i + step, n))) for i in range(0, n, step)]
    labels: dict[str, dict] = {}
    # spawn, not fork: the caller may hold torch thread pools that a forked child inherits broken
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = [pool.submit(_render_and_write, root, seed, size, c, width) for c in chunks]
        for f in futures:
            labels.update(f.result())
    return labels


def write_dataset(
    out: str | Path,
    n: int,
    size: int = 128,
    seed: int = 0,
    splits: tuple[float, float, float] = (0.8, 0.1, 0.1),
    overwrite: bool = False,
    workers: int | None = None,
) -> Path:
    """Write ``n`` scenes in the polyhead dataset format to ``out``.

    The dataset is written to a hidden sibling and renamed into place, so a crash never leaves
    half a dataset at ``out``. Scene ``i`` is rendered from ``(seed, i)`` alone, so the files are
    byte-identical for a seed whatever ``workers`` is.

    Args:
        out: The dataset folder to create.
        n: Number of scenes (ids ``000000`` ..).
        size: Image side in pixels.
        seed: Seed of every scene and of the split.
        splits: Train, val and test fractions.
        overwrite: Replace ``out`` if it exists and is not empty.
        workers: Processes rendering in parallel; ``None`` picks from the CPU count and ``n``.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        OutputExistsError: (a FileExistsError) ``out`` is a file, or a non-empty folder and
            ``overwrite`` is false.
        ValueError: ``n``, ``size`` or ``splits`` are out of range.
    """
    out = Path(out)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    SceneConfig(size=size)  # validates size before anything touches the disk
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{out} exists and is not empty (pass overwrite=True / --overwrite to replace it)"
        )
    split_lists = split_ids([str(i).zfill(max(6, len(str(n - 1)))) for i in range(n)], seed, splits)
    out.parent.mkdir(parents=True, exist_ok=True)
    # os.mkdir honours the umask (tempfile.mkdtemp would leave the dataset readable by us alone)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    os.mkdir(tmp)
    try:
        for folder in (*DENSE_FOLDERS, "splits"):
            (tmp / folder).mkdir()
        labels = _render_all(tmp, n, size, seed, workers or _default_workers(n))
        (tmp / "labels.json").write_text(json.dumps(labels, indent=0, sort_keys=True))
        for name, members in split_lists.items():
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
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _replace_dir(new: Path, out: Path) -> None:
    """Move ``new`` to ``out``; an old ``out`` is moved aside first and deleted last."""
    if not out.exists():
        os.replace(new, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:12]}"
    os.replace(out, old)
    try:
        os.replace(new, out)
    except OSError:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
