"""Convert a real multi-task dataset from its original layout to the polyhead dataset format.

A reader (``training.data.nyud``, ``training.data.pascal_context``, ``training.data.cityscapes``)
opens a source folder, checks its layout and yields each sample already in the generic encoding,
at the source's resolution:

- ``image``: H,W,3 uint8 RGB;
- ``segmentation`` tasks: H,W uint8 class indices, 255 = ignore;
- ``depth`` tasks: H,W float32, 0 = invalid (metres, or pixels of disparity when ``units`` is
  ``"px"``);
- ``normals`` tasks: H,W,3 float32 unit vectors, the zero vector = invalid;
- ``edges`` tasks: H,W bool.

``convert`` resizes (optionally) and writes them as ``training.data.folder`` reads them, to a
hidden sibling folder that is renamed into place, so a failure never leaves half a dataset.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from training.data.folder import DatasetError
from training.data.synth import FORMAT, _replace_dir

log = logging.getLogger(__name__)

FORMATS = {
    "nyud": ("training.data.nyud", "NYUDv2"),
    "pascal_context": ("training.data.pascal_context", "PascalContext"),
    "cityscapes": ("training.data.cityscapes", "Cityscapes"),
    "nyuv2_mtan": ("training.data.mtan", "NYUv2Mtan"),
    "cityscapes_mtan": ("training.data.mtan", "CityscapesMtan"),
}
VAL_FRACTION = 0.1  # share of the train list made the val split when a source has none
IGNORE = 255
TEST_NOTE = (
    "same images as val: the source has no separate labelled test set (the multi-task "
    "literature reports on this split)"
)


class Source(Protocol):
    """A dataset in its original layout, as a reader presents it.

    Attributes:
        name: Short dataset name written to dataset.json.
        tasks: The dataset.json task block (name -> kind, labels, ignore_index, units).
        splits: Source split name (``train``, ``val``) -> sample ids, in the source's order.
        notes: Free-text remarks written to dataset.json (conventions, assumptions).
        boundary_tasks: Tasks of thin structures: downsampled by "any pixel set", not nearest.
    """

    name: str
    tasks: dict[str, dict[str, Any]]
    splits: dict[str, list[str]]
    notes: dict[str, str]
    boundary_tasks: frozenset[str]

    def files(self, sid: str) -> list[Path]:
        """Every source file sample ``sid`` needs, its image first (checked before writing)."""
        ...

    def load(self, sid: str) -> dict[str, np.ndarray]:
        """Sample ``sid``: ``image`` and one array per task, in the generic encoding."""
        ...


# ---------------------------------------------------------------- helpers for the readers


def require_dir(path: Path, what: str) -> Path:
    """``path`` if it is a folder, else a DatasetError naming it and what it should hold."""
    if not path.is_dir():
        raise DatasetError(f"{what}: folder not found: {path}")
    return path


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a file, else a DatasetError naming it and what it should hold."""
    if not path.is_file():
        raise DatasetError(f"{what}: file not found: {path}")
    return path


def read_id_list(path: Path, what: str) -> list[str]:
    """The non-empty, stripped lines of a split list, checked to be usable as file names."""
    ids = [line.strip() for line in require_file(path, what).read_text().splitlines()]
    ids = [i for i in ids if i]
    for sid in ids:
        if "/" in sid or "\\" in sid or sid.startswith("."):
            raise DatasetError(f"{path}: {sid!r} is not a usable sample id")
    return ids


def read_rgb(path: Path) -> np.ndarray:
    """An image file as H,W,3 uint8 RGB (grayscale and palette images are converted)."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except FileNotFoundError as e:
        raise DatasetError(f"missing file: {path}") from e
    except OSError as e:
        raise DatasetError(f"unreadable image {path}: {e}") from e


def read_raw(path: Path) -> np.ndarray:
    """An image file's stored values (palette indices, 8- or 16-bit levels), no conversion."""
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except FileNotFoundError as e:
        raise DatasetError(f"missing file: {path}") from e
    except OSError as e:
        raise DatasetError(f"unreadable image {path}: {e}") from e


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array (no pickles)."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError as e:
        raise DatasetError(f"missing file: {path}") from e
    except (OSError, ValueError) as e:
        raise DatasetError(f"unreadable array {path}: {e}") from e


def as_2d(a: np.ndarray, path: Path) -> np.ndarray:
    """``a`` as H,W: a trailing or leading axis of size 1 is dropped."""
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    elif a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise DatasetError(f"{path}: expected a single-channel map, got shape {a.shape}")
    return a


def unit_normals(n: np.ndarray, path: Path) -> np.ndarray:
    """H,W,3 float32 unit normals; non-finite or zero vectors become the invalid zero vector."""
    if n.ndim == 3 and n.shape[0] == 3 and n.shape[-1] != 3:
        n = n.transpose(1, 2, 0)
    if n.ndim != 3 or n.shape[-1] != 3:
        raise DatasetError(f"{path}: expected normals of shape H,W,3, got {n.shape}")
    n = np.asarray(n, np.float64)
    n = np.where(np.isfinite(n), n, 0.0)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    valid = norm > 1e-6
    return np.where(valid, n / np.maximum(norm, 1e-6), 0.0).astype(np.float32)


def check_labels(seg: np.ndarray, n_classes: int, path: Path) -> np.ndarray:
    """``seg`` as uint8 after checking every value is a class index below ``n_classes`` or 255."""
    bad = (seg >= n_classes) & (seg != IGNORE)
    if bad.any():
        values = sorted({int(v) for v in np.unique(seg[bad])})[:10]
        raise DatasetError(
            f"{path}: label values {values} are outside 0..{n_classes - 1} and not {IGNORE}"
        )
    return seg.astype(np.uint8)


# ---------------------------------------------------------------- conversion


def open_source(fmt: str, src: str | Path) -> Source:
    """The reader of format ``fmt`` opened on ``src`` (its layout is checked on opening).

    Args:
        fmt: One of ``FORMATS``.
        src: The dataset folder in its original layout.

    Returns:
        The opened reader.

    Raises:
        DatasetError: Unknown format, or the layout is wrong; the message names what is missing.
    """
    if fmt not in FORMATS:
        raise DatasetError(f"unknown dataset format {fmt!r}; known: {', '.join(sorted(FORMATS))}")
    src = Path(src)
    if not src.is_dir():
        raise DatasetError(f"source folder not found: {src}")
    module, cls = FORMATS[fmt]
    return getattr(importlib.import_module(module), cls)(src)


def _id_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def output_splits(source: Source) -> tuple[dict[str, list[str]], dict[str, str]]:
    """train/val/test id lists for the output and a note on how each was made.

    ``train`` and ``val`` are the source's lists. A source without a val list gets one carved
    from its train list: the ``VAL_FRACTION`` of ids (at least one, from 2 ids on) whose SHA-256
    sorts first, which depends on the ids alone, not on their order or the run. ``test`` is
    always the val list (none of the sources has a separate labelled test set).
    """
    train = list(source.splits.get("train", []))
    notes = {"train": "the source's train list"}
    if "val" in source.splits:
        val = list(source.splits["val"])
        notes["val"] = "the source's val list"
    else:
        n_val = max(1, round(len(train) * VAL_FRACTION)) if len(train) >= 2 else 0
        chosen = set(sorted(train, key=_id_hash)[:n_val])
        val = [i for i in train if i in chosen]
        train = [i for i in train if i not in chosen]
        notes["val"] = (
            f"carved from the source's train list (no val list): the {VAL_FRACTION:.0%} of ids "
            "whose SHA-256 sorts first"
        )
    notes["test"] = TEST_NOTE
    return {"train": train, "val": val, "test": list(val)}, notes


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _check_files(source: Source, ids: list[str]) -> None:
    missing = [p for sid in ids for p in source.files(sid) if not p.is_file()]
    if missing:
        shown = "\n  ".join(str(p) for p in missing[:10])
        more = f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise DatasetError(f"{len(missing)} source file(s) missing:\n  {shown}{more}")


def _common_size(source: Source, ids: list[str]) -> tuple[int, int]:
    """The (height, width) every image shares, read from the image headers.

    A source whose images are not image files (arrays) says their sizes (``image_size``).
    """
    first: tuple[str, tuple[int, int]] | None = None
    sized = getattr(source, "image_size", None)
    for sid in ids:
        if sized is not None:
            h, w = sized(sid)
        else:
            path = source.files(sid)[0]
            try:
                with Image.open(path) as im:
                    w, h = im.size
            except OSError as e:
                raise DatasetError(f"unreadable image {path}: {e}") from e
        if first is None:
            first = (sid, (h, w))
        elif (h, w) != first[1]:
            raise DatasetError(
                f"images differ in size ({first[0]}: {first[1][1]}x{first[1][0]}, {sid}: {w}x{h}); "
                "pass a size (--size N) to resize every image to N x N"
            )
    if first is None:
        raise DatasetError("the source lists no images")
    return first[1]


def resize_nearest(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``a`` (H,W or H,W,C) resampled to ``size`` (h, w) by the nearest pixel centre."""
    h, w = size
    rows = np.minimum(((np.arange(h) + 0.5) * a.shape[0] / h).astype(np.int64), a.shape[0] - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * a.shape[1] / w).astype(np.int64), a.shape[1] - 1)
    return a[rows[:, None], cols[None, :]]


def resize_any(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean map resampled so an output pixel is set if any source pixel it covers is."""
    h, w = size
    if (h, w) == mask.shape:
        return mask.astype(bool)
    im = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(im.resize((w, h), Image.Resampling.BOX)) > 0


def encode_normals(n: np.ndarray) -> np.ndarray:
    """H,W,3 unit normals as uint8 RGB ``(n + 1) * 127.5``; zero vectors as the (0,0,0) code."""
    valid = np.linalg.norm(n, axis=-1, keepdims=True) > 1e-6
    enc = np.clip(np.round((n + 1.0) * 127.5), 1, 255).astype(np.uint8)
    return np.where(valid, enc, 0).astype(np.uint8)


def _fit(
    source: Source, sid: str, sample: dict[str, np.ndarray], size: tuple[int, int]
) -> dict[str, np.ndarray]:
    """Every map of ``sample`` at ``size``: image bilinear, labels/depth/normals nearest."""
    out: dict[str, np.ndarray] = {}
    image = sample["image"]
    h0, w0 = image.shape[:2]
    if image.shape[:2] != size:
        im = Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR)
        image = np.asarray(im)
    out["image"] = image
    for task, spec in source.tasks.items():
        a = sample[task]
        if a.shape[:2] != (h0, w0):
            # a map stored at another size than its image: the source's loaders resize it
            # nearest to the image; so do we, then fit it like the others
            log.debug("%s/%s: %s resized from %s to %s", source.name, sid, task, a.shape, (h0, w0))
            a = resize_nearest(a, (h0, w0))
        if a.shape[:2] == size:
            out[task] = a
        elif spec["kind"] == "edges" and task in source.boundary_tasks:
            out[task] = resize_any(a, size)
        else:
            out[task] = resize_nearest(a, size)
            if spec["kind"] == "depth" and spec.get("units") == "px":
                out[task] = out[task] * np.float32(size[1] / w0)  # disparity scales with width
    return out


def _write_sample(root: Path, source: Source, sid: str, sample: dict[str, np.ndarray]) -> None:
    Image.fromarray(sample["image"]).save(root / "images" / f"{sid}.png")
    for task, spec in source.tasks.items():
        a = sample[task]
        kind = spec["kind"]
        if kind == "segmentation":
            Image.fromarray(a.astype(np.uint8)).save(root / task / f"{sid}.png")
        elif kind == "depth":
            d = np.where(np.isfinite(a) & (a > 0), a, 0.0).astype(np.float32)
            np.save(root / task / f"{sid}.npy", d)
        elif kind == "normals":
            Image.fromarray(encode_normals(a)).save(root / task / f"{sid}.png")
        elif kind in ("edges", "saliency"):
            Image.fromarray(a.astype(np.uint8) * 255).save(root / task / f"{sid}.png")
        else:  # a reader bug, not a user error
            raise ValueError(f"{source.name}: task {task!r} has unsupported kind {kind!r}")


def convert(
    fmt: str,
    src: str | Path,
    out: str | Path,
    size: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Convert the dataset at ``src`` (layout ``fmt``) to the polyhead format at ``out``.

    Every source file is checked to exist before anything is written. Images are resized
    bilinearly to ``size`` x ``size`` if given (labels, depth and normals nearest-neighbour; thin
    edge maps keep a pixel set if any pixel it covers is set; disparity in pixels is scaled with
    the width); without ``size`` every image must already share one size. The dataset is written
    to a hidden sibling and renamed into place.

    Args:
        fmt: ``nyud``, ``pascal_context`` or ``cityscapes``.
        src: The dataset folder in its original layout.
        out: The polyhead dataset folder to create.
        size: Side of the square output images; ``None`` keeps the source size.
        overwrite: Replace ``out`` if it exists and is not empty.

    Returns:
        ``out`` as a ``Path``.

    Raises:
        DatasetError: The format is unknown, the source layout is wrong or incomplete (the
            message names the missing folder or files), images differ in size and no ``size``
            was given, ``size`` is below 8, or ``out`` exists and ``overwrite`` is false.
    """
    out = Path(out)
    if size is not None and size < 8:
        raise DatasetError(f"size must be >= 8 pixels, got {size}")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise DatasetError(f"{out} exists and is not empty (pass overwrite=True / --overwrite)")
    source = open_source(fmt, src)
    splits, split_notes = output_splits(source)
    ids = _unique(i for name in ("train", "val", "test") for i in splits[name])
    if not ids:
        raise DatasetError(f"{src}: the split lists name no images")
    _check_files(source, ids)
    target = (size, size) if size is not None else _common_size(source, ids)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    os.mkdir(tmp)
    try:
        for folder in ("images", *source.tasks, "splits"):
            (tmp / folder).mkdir()
        for k, sid in enumerate(ids, start=1):
            _write_sample(tmp, source, sid, _fit(source, sid, source.load(sid), target))
            if k % 200 == 0 or k == len(ids):
                log.info("%s: converted %d/%d images", source.name, k, len(ids))
        for name, members in splits.items():
            (tmp / "splits" / f"{name}.txt").write_text("".join(m + "\n" for m in members))
        (tmp / "labels.json").write_text("{}")
        meta = {
            "format": FORMAT,
            "name": source.name,
            "image_size": list(target),
            "count": len(ids),
            "tasks": source.tasks,
            "source": {"format": fmt, "path": str(Path(src).resolve())},
            "splits": split_notes,
            "notes": source.notes,
        }
        (tmp / "dataset.json").write_text(json.dumps(meta, indent=2))
        _replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
