"""Cityscapes in its standard layout, read into generic arrays: semantic segmentation and depth.

Layout (the archives leftImg8bit_trainvaltest, gtFine_trainvaltest, disparity_trainvaltest and
camera_trainvaltest unpacked into one folder)::

    leftImg8bit/{train,val}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    gtFine/{train,val}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png
    disparity/{train,val}/CITY/CITY_SEQ_FRAME_disparity.png      16-bit
    camera/{train,val}/CITY/CITY_SEQ_FRAME_camera.json           optional, see below

Sample ids are ``CITY_SEQ_FRAME``. ``test`` is not converted: its public annotations are
placeholders. Without ``leftImg8bit/val`` a val split is carved from train (see
``training.data.convert.output_splits``).

``semseg``: labelIds mapped to the 19 train ids of the official label table, every other id 255.

Disparity pixels p > 0 hold d = (p - 1) / 256 pixels; p = 0 is invalid (and so is d = 0).
With ``camera/`` present the task is ``depth`` in metres, z = baseline * fx / d, from each
image's camera file (``extrinsic.baseline`` in metres, ``intrinsic.fx`` in pixels). Without it
the task is ``disparity`` (kind ``depth``, units ``px``): d itself, which the converter scales
with the image width when it resizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from training.data.convert import (
    IGNORE,
    as_2d,
    read_raw,
    read_rgb,
    require_dir,
)
from training.data.folder import DatasetError

TRAIN_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)  # fmt: skip
# labelId -> trainId of the official table (cityscapesscripts/helpers/labels.py); the rest -> 255
LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip
SPLITS = ("train", "val")
IMAGE_SUFFIX = "_leftImg8bit.png"

_LUT = np.full(256, IGNORE, np.uint8)
for _label, _train in LABEL_TO_TRAIN.items():
    _LUT[_label] = _train


def label_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes labelIds (0..33, -1) as the 19 train ids, everything else 255."""
    a = np.asarray(label_ids).astype(np.int64)
    return np.where((a >= 0) & (a < 256), _LUT[np.clip(a, 0, 255)], IGNORE).astype(np.uint8)


def disparity_pixels(raw: np.ndarray) -> np.ndarray:
    """Disparity in pixels from the stored 16-bit levels; 0 where invalid."""
    p = raw.astype(np.float32)
    return np.where(p > 0, (p - 1.0) / 256.0, 0.0).astype(np.float32)


def read_camera(path: Path) -> tuple[float, float]:
    """``(baseline in metres, fx in pixels)`` of a Cityscapes camera file."""
    try:
        cam = json.loads(path.read_text())
        baseline, fx = float(cam["extrinsic"]["baseline"]), float(cam["intrinsic"]["fx"])
    except FileNotFoundError as e:
        raise DatasetError(f"missing file: {path}") from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: no extrinsic.baseline / intrinsic.fx ({e})") from e
    if not (baseline > 0 and fx > 0):
        raise DatasetError(f"{path}: baseline and fx must be > 0, got {baseline}, {fx}")
    return baseline, fx


class Cityscapes:
    """Cityscapes: semseg (19 train ids) and depth (m) or disparity (px)."""

    name = "cityscapes"
    boundary_tasks: frozenset[str] = frozenset()

    def __init__(self, root: Path) -> None:
        """Open ``root`` and list the images of its train and val splits.

        Raises:
            DatasetError: A folder is missing or a split holds no images; the message names it.
        """
        self.root = Path(root)
        for name in ("leftImg8bit/train", "gtFine", "disparity"):
            require_dir(self.root / name, f"Cityscapes ({name})")
        self.metric = (self.root / "camera").is_dir()
        self._where: dict[str, tuple[str, str]] = {}
        self.splits: dict[str, list[str]] = {}
        for split in SPLITS:
            folder = self.root / "leftImg8bit" / split
            if not folder.is_dir():
                continue
            ids = []
            for city in sorted(p for p in folder.iterdir() if p.is_dir()):
                for img in sorted(city.glob(f"*{IMAGE_SUFFIX}")):
                    sid = img.name[: -len(IMAGE_SUFFIX)]
                    self._where[sid] = (split, city.name)
                    ids.append(sid)
            if not ids:
                raise DatasetError(f"Cityscapes ({split}): no *{IMAGE_SUFFIX} under {folder}/CITY/")
            self.splits[split] = ids
        depth_task = "depth" if self.metric else "disparity"
        self.depth_task = depth_task
        self.tasks: dict[str, dict[str, Any]] = {
            "semseg": {
                "kind": "segmentation",
                "labels": list(TRAIN_CLASSES),
                "ignore_index": IGNORE,
            },
            depth_task: {"kind": "depth", "units": "m" if self.metric else "px"},
        }
        self.notes = {
            "semseg": "labelIds -> the 19 official train ids, others 255",
            depth_task: (
                "baseline * fx / d from camera/*.json, d = (p - 1) / 256 of disparity/*.png"
                if self.metric
                else "disparity d = (p - 1) / 256 in pixels of the stored image width (no camera/)"
            ),
        }

    def _paths(self, sid: str) -> dict[str, Path]:
        split, city = self._where[sid]
        r = self.root
        paths = {
            "image": r / "leftImg8bit" / split / city / f"{sid}{IMAGE_SUFFIX}",
            "semseg": r / "gtFine" / split / city / f"{sid}_gtFine_labelIds.png",
            "disparity": r / "disparity" / split / city / f"{sid}_disparity.png",
        }
        if self.metric:
            paths["camera"] = r / "camera" / split / city / f"{sid}_camera.json"
        return paths

    def files(self, sid: str) -> list[Path]:
        """Every source file of ``sid`` (image first)."""
        return list(self._paths(sid).values())

    def load(self, sid: str) -> dict[str, np.ndarray]:
        """Sample ``sid`` in the generic encoding (see ``training.data.convert``)."""
        p = self._paths(sid)
        d = disparity_pixels(as_2d(read_raw(p["disparity"]), p["disparity"]))
        if self.metric:
            baseline, fx = read_camera(p["camera"])
            d = np.where(d > 0, baseline * fx / np.maximum(d, 1e-6), 0.0).astype(np.float32)
        return {
            "image": read_rgb(p["image"]),
            "semseg": label_to_train_ids(as_2d(read_raw(p["semseg"]), p["semseg"])),
            self.depth_task: d,
        }
