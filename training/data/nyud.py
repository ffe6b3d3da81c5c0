"""NYUD-v2 in the layout of Multi-Task-Learning-PyTorch (``NYUD_MT``), read into generic arrays.

Layout (as ``data/nyud.py`` of SimonVandenhende/Multi-Task-Learning-PyTorch reads it)::

    NYUD_MT/images/ID.jpg          RGB
    NYUD_MT/segmentation/ID.png    0 = void, 1..40 = the 40 NYUD classes
    NYUD_MT/depth/ID.npy           float, metres; 0 = invalid
    NYUD_MT/normals/ID.npy         H,W,3 float; the zero vector = invalid
    NYUD_MT/edge/ID.npy            H,W float, 1 = edge
    NYUD_MT/gt_sets/{train,val}.txt   one ID a line (795 train, 654 val)

Semantic labels become 0..39 with void -> 255, as that loader does (``0 -> 256, then - 1``).
Normals keep the source's axes: channel 0 is the image-horizontal axis (the source's own flip
augmentation negates it, as ours does); the signs of the other two axes are the source's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from training.data.convert import (
    IGNORE,
    as_2d,
    check_labels,
    read_id_list,
    read_npy,
    read_raw,
    read_rgb,
    require_dir,
    unit_normals,
)

NYUD_CLASSES = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf",
    "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser", "pillow", "mirror",
    "floor mat", "clothes", "ceiling", "books", "refridgerator", "television", "paper", "towel",
    "shower curtain", "box", "whiteboard", "person", "night stand", "toilet", "sink", "lamp",
    "bathtub", "bag", "otherstructure", "otherfurniture", "otherprop",
)  # fmt: skip
FOLDERS = ("images", "segmentation", "depth", "normals", "edge", "gt_sets")


def remap_segmentation(raw: np.ndarray, path: Path) -> np.ndarray:
    """NYUD labels 1..40 -> 0..39 and void 0 -> 255 (values above 40 are an error)."""
    raw = as_2d(raw, path).astype(np.int64)
    return check_labels(np.where(raw == 0, IGNORE, raw - 1), len(NYUD_CLASSES), path)


class NYUDv2:
    """NYUD-v2 (``NYUD_MT``): semseg (40 classes), depth (m), normals, edges."""

    name = "nyud"
    boundary_tasks = frozenset({"edges"})

    def __init__(self, root: Path) -> None:
        """Open ``root`` (the ``NYUD_MT`` folder) and read its split lists.

        Raises:
            DatasetError: A folder or split list is missing; the message names it.
        """
        self.root = Path(root)
        for folder in FOLDERS:
            require_dir(self.root / folder, f"NYUD-v2 ({folder})")
        self.splits = {
            s: read_id_list(self.root / "gt_sets" / f"{s}.txt", f"NYUD-v2 {s} list")
            for s in ("train", "val")
        }
        self.tasks: dict[str, dict[str, Any]] = {
            "semseg": {
                "kind": "segmentation",
                "labels": list(NYUD_CLASSES),
                "ignore_index": IGNORE,
            },
            "depth": {"kind": "depth", "units": "m"},
            "normals": {"kind": "normals"},
            "edges": {"kind": "edges"},
        }
        self.notes = {
            "semseg": "NYUD 40 classes: source 1..40 -> 0..39, void 0 -> 255",
            "normals": "source axes kept: channel 0 = image x; y/z signs as in the source",
        }

    def _paths(self, sid: str) -> dict[str, Path]:
        r = self.root
        return {
            "image": r / "images" / f"{sid}.jpg",
            "semseg": r / "segmentation" / f"{sid}.png",
            "depth": r / "depth" / f"{sid}.npy",
            "normals": r / "normals" / f"{sid}.npy",
            "edges": r / "edge" / f"{sid}.npy",
        }

    def files(self, sid: str) -> list[Path]:
        """The image, segmentation, depth, normals and edge files of ``sid`` (image first)."""
        return list(self._paths(sid).values())

    def load(self, sid: str) -> dict[str, np.ndarray]:
        """Sample ``sid`` in the generic encoding (see ``training.data.convert``)."""
        p = self._paths(sid)
        depth = as_2d(read_npy(p["depth"]), p["depth"]).astype(np.float32)
        return {
            "image": read_rgb(p["image"]),
            "semseg": remap_segmentation(read_raw(p["semseg"]), p["semseg"]),
            "depth": np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32),
            "normals": unit_normals(read_npy(p["normals"]), p["normals"]),
            "edges": as_2d(read_npy(p["edges"]), p["edges"]) > 0.5,
        }
