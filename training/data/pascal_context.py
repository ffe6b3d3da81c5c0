"""PASCAL-Context in the layout of Multi-Task-Learning-PyTorch (``PASCAL_MT``), read generically.

Layout (as ``data/pascal_context.py`` of SimonVandenhende/Multi-Task-Learning-PyTorch reads it)::

    PASCAL_MT/JPEGImages/ID.jpg
    PASCAL_MT/ImageSets/Context/{train,val}.txt   one ID a line (4998 train, 5105 val)
    PASCAL_MT/semseg/pascal-context/ID.png        21 VOC classes (0 = background), 255 = ignore
    PASCAL_MT/semseg/VOC12/ID.png                 optional; preferred when present, as there
    PASCAL_MT/human_parts/ID.mat                  PASCAL-Part ``anno`` struct
    PASCAL_MT/normals_distill/ID.png              n = 2 * rgb / 255 - 1 (distilled)
    PASCAL_MT/sal_distill/ID.png                  saliency level 0..255 (distilled)
    PASCAL_MT/pascal-context/trainval/ID.mat      ``LabelMap``: the 459 PASCAL-Context classes

Tasks, as that loader builds them:

- ``semseg``: the PNG as is (21 classes, 255 ignore).
- ``human_parts``: person objects (class 15) with parts; each part painted with its group of the
  6-part grouping (head, torso, upper arms, lower arms, upper legs, lower legs; 0 background).
  An image whose map stays all background (no annotated person) is all 255, as its
  ``AddIgnoreRegions`` does.
- ``normals``: the distilled normals, kept only on pixels whose ``LabelMap`` class is one of the
  NYUD classes (the classes the distilling network was trained on) plus tvmonitor; elsewhere the
  invalid zero vector.
- ``saliency``: the distilled map thresholded at 0.5, a binary dense task of kind ``saliency``
  (balanced BCE, max-F as its papers report).
- ``edges``: boundaries of ``LabelMap``: pixels with a non-zero 4-neighbour Laplacian (borders
  reflected), thinned to one pixel (Guo-Hall thinning, as ``skimage.morphology.thin``).

The ``.mat`` files need ``scipy``; without it only ``semseg`` and ``saliency`` are converted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from training.data.convert import (
    IGNORE,
    as_2d,
    check_labels,
    read_id_list,
    read_raw,
    read_rgb,
    require_dir,
    unit_normals,
)
from training.data.folder import DatasetError

log = logging.getLogger(__name__)

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
HUMAN_PART_LABELS = (
    "background", "head", "torso", "upper_arms", "lower_arms", "upper_legs", "lower_legs",
)  # fmt: skip
PERSON_CLASS = 15  # PASCAL VOC class index of "person" in the PASCAL-Part objects
HUMAN_PART_GROUPS = {
    "hair": 1, "head": 1, "lear": 1, "lebrow": 1, "leye": 1, "mouth": 1, "nose": 1, "rear": 1,
    "rebrow": 1, "reye": 1,
    "neck": 2, "torso": 2,
    "luarm": 3, "ruarm": 3,
    "llarm": 4, "lhand": 4, "rlarm": 4, "rhand": 4,
    "luleg": 5, "ruleg": 5,
    "llleg": 6, "lfoot": 6, "rlleg": 6, "rfoot": 6,
}  # fmt: skip
# PASCAL-Context classes (LabelMap values) whose name is also a NYUD class, plus tvmonitor: where
# the distilled normals are kept (``normals_valid_classes`` of the source loader, from its
# db_info/nyu_classes.json and db_info/context_classes.json).
NORMALS_VALID_CLASSES = {
    "air conditioner": 3, "antenna": 4, "ashtray": 6, "bag": 9, "ball": 10, "balloon": 11,
    "barrel": 13, "basket": 15, "bathtub": 17, "bed": 18, "bench": 22, "bicycle": 23,
    "blackboard": 29, "board": 30, "book": 33, "bottle": 34, "bowl": 36, "box": 37,
    "bracelet": 38, "brick": 39, "broom": 41, "bucket": 43, "cabinet": 46, "cake": 49,
    "calculator": 50, "calendar": 51, "camera": 53, "can": 55, "candle": 56, "car": 59,
    "cart": 61, "case": 62, "cat": 65, "cd": 66, "ceiling": 68, "cell phone": 69, "chair": 72,
    "chessboard": 73, "clock": 78, "coffee machine": 83, "comb": 84, "computer": 85, "cone": 87,
    "container": 88, "corkscrew": 95, "counter": 96, "crate": 101, "cup": 104, "curtain": 105,
    "cutting board": 107, "dishwasher": 111, "dog": 113, "door": 115, "drum": 122, "duck": 124,
    "envelope": 135, "fan": 141, "faucet": 142, "fax machine": 143, "fire extinguisher": 146,
    "fish tank": 150, "flag": 154, "flashlight": 157, "floor": 158, "flower": 159, "fork": 165,
    "fruit": 172, "furnace": 174, "glass": 181, "globe": 183, "glove": 184, "guitar": 191,
    "hammer": 193, "handle": 195, "hanger": 197, "hat": 199, "heater": 202, "ipod": 213,
    "ironing board": 215, "jar": 216, "key": 219, "keyboard": 220, "knife": 223, "ladder": 225,
    "laptop": 228, "lid": 230, "light": 232, "light bulb": 233, "lock": 238, "machine": 239,
    "map": 242, "mask": 243, "mattress": 246, "microphone": 250, "microwave": 251, "mirror": 252,
    "money": 255, "mouse": 260, "mouse pad": 261, "napkin": 263, "oven": 269, "pan": 272,
    "paper": 273, "paper cutter": 275, "pen": 281, "pencil": 283, "person": 284, "photo": 285,
    "piano": 286, "picture": 287, "pig": 288, "pillow": 290, "pipe": 291, "pitcher": 292,
    "plant": 293, "plate": 295, "pool table": 304, "pot": 307, "printer": 309, "projector": 310,
    "radiator": 314, "radio": 315, "range hood": 319, "remote control": 323, "rope": 329,
    "rug": 330, "ruler": 331, "scale": 336, "sculpture": 342, "sewing machine": 345,
    "shelves": 349, "shoe": 350, "shopping cart": 351, "shovel": 352, "sign": 355, "sink": 357,
    "sofa": 368, "spatula": 370, "speaker": 371, "spoon": 374, "stapler": 379, "stick": 380,
    "stool": 383, "stove": 384, "table": 397, "tape": 401, "telephone": 403, "tent": 405,
    "toaster": 407, "toilet": 408, "toothbrush": 411, "towel": 412, "toy": 413, "toy car": 414,
    "trampoline": 417, "tray": 419, "tricycle": 421, "trophy": 423, "tvmonitor": 427,
    "typewriter": 429, "umbrella": 430, "vacuum cleaner": 432, "wall": 440, "wallet": 441,
    "wardrobe": 442, "washing machine": 443, "watch": 444, "water dispenser": 446,
    "window": 454, "wire": 457,
}  # fmt: skip
MAT_TASKS = ("human_parts", "normals", "edges")


def _scipy_loadmat() -> Callable[..., dict[str, Any]] | None:
    """``scipy.io.loadmat``, or None without scipy."""
    try:
        from scipy.io import loadmat
    except ImportError:
        return None
    return loadmat


def _guo_hall_luts() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two sub-iterations of Guo-Hall thinning, by neighbour code.

    Bit ``i`` of a code is the neighbour ``i`` steps counter-clockwise from east (E, NE, N, NW,
    W, SW, S, SE).
    """
    code = np.arange(256)
    b = [((code >> i) & 1).astype(bool) for i in range(8)]
    crossings = sum((~b[i] & (b[i + 1] | b[(i + 2) % 8])).astype(int) for i in (0, 2, 4, 6))
    n1 = sum((b[k] | b[k - 1]).astype(int) for k in (1, 3, 5, 7))
    n2 = sum((b[k] | b[(k + 1) % 8]).astype(int) for k in (1, 3, 5, 7))
    g12 = (crossings == 1) & np.isin(np.minimum(n1, n2), (2, 3))
    g3 = ~((b[1] | b[2] | ~b[7]) & b[0])
    g3p = ~((b[5] | b[6] | ~b[3]) & b[4])
    return g12 & g3, g12 & g3p


_THIN_LUTS = _guo_hall_luts()


def _neighbour_code(skel: np.ndarray) -> np.ndarray:
    """Each pixel's 8 neighbours as a code (bit order of ``_guo_hall_luts``), zero outside."""
    h, w = skel.shape
    p = np.pad(skel, 1).astype(np.int64)
    return (
        p[1 : h + 1, 2:]  # E
        | p[:h, 2:] << 1  # NE
        | p[:h, 1 : w + 1] << 2  # N
        | p[:h, :w] << 3  # NW
        | p[1 : h + 1, :w] << 4  # W
        | p[2:, :w] << 5  # SW
        | p[2:, 1 : w + 1] << 6  # S
        | p[2:, 2:] << 7  # SE
    )


def thin(mask: np.ndarray) -> np.ndarray:
    """Guo-Hall thinning of a boolean map to one-pixel-wide, 8-connected lines."""
    skel = np.asarray(mask, bool).copy()
    count = int(skel.sum())
    while True:
        for lut in _THIN_LUTS:
            skel &= ~lut[_neighbour_code(skel)]
        new = int(skel.sum())
        if new == count:
            return skel
        count = new


def label_edges(label_map: np.ndarray) -> np.ndarray:
    """Thinned boundaries of a class map: where its 4-neighbour Laplacian is non-zero."""
    lm = label_map.astype(np.int64)
    p = np.pad(lm, 1, mode="reflect") if min(lm.shape) > 1 else np.pad(lm, 1, mode="edge")
    lap = p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * lm
    return thin(lap != 0)


def _records(a: Any) -> list[Any]:
    """The records of a MATLAB struct array as loadmat returns it (empty -> [])."""
    a = np.asarray(a)
    return [] if a.size == 0 else list(a.ravel())


def human_parts_map(anno: Any, shape: tuple[int, int], path: Path) -> np.ndarray:
    """The 6-part map of a PASCAL-Part ``anno`` struct; all 255 without any annotated person.

    Objects and parts are read by position (``anno``: imname, objects; object: class,
    class_ind, mask, parts; part: part_name, mask), as the source loader reads them.
    """
    target = np.zeros(shape, np.uint8)
    try:
        objects = _records(np.asarray(anno).ravel()[0][1])
        for obj in objects:
            if int(np.asarray(obj[1]).ravel()[0]) != PERSON_CLASS:
                continue
            for part in _records(obj[3]):
                name = str(np.asarray(part[0]).ravel()[0])
                mask = np.asarray(part[1]).astype(bool)
                if mask.shape != shape:
                    raise DatasetError(
                        f"{path}: part {name!r} mask is {mask.shape}, the image {shape}"
                    )
                if name not in HUMAN_PART_GROUPS:
                    raise DatasetError(f"{path}: unknown human part {name!r}")
                target[mask] = HUMAN_PART_GROUPS[name]
    except (IndexError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: not a PASCAL-Part annotation ({e})") from e
    if not target.any():
        target[:] = IGNORE
    return target


class PascalContext:
    """PASCAL-Context (``PASCAL_MT``): semseg, human parts, normals, saliency, edges."""

    name = "pascal_context"
    boundary_tasks = frozenset({"edges"})

    def __init__(self, root: Path) -> None:
        """Open ``root`` (the ``PASCAL_MT`` folder) and read its split lists.

        Raises:
            DatasetError: A folder or split list is missing; the message names it.
        """
        self.root = Path(root)
        self.loadmat = _scipy_loadmat()
        folders = ["JPEGImages", "ImageSets/Context", "semseg/pascal-context", "sal_distill"]
        if self.loadmat is not None:
            folders += ["human_parts", "normals_distill", "pascal-context/trainval"]
        for folder in folders:
            require_dir(self.root / folder, f"PASCAL-Context ({folder})")
        self.splits = {
            s: read_id_list(
                self.root / "ImageSets" / "Context" / f"{s}.txt", f"PASCAL-Context {s} list"
            )
            for s in ("train", "val")
        }
        tasks: dict[str, dict[str, Any]] = {
            "semseg": {"kind": "segmentation", "labels": list(VOC_CLASSES), "ignore_index": IGNORE},
            "human_parts": {
                "kind": "segmentation",
                "labels": list(HUMAN_PART_LABELS),
                "ignore_index": IGNORE,
            },
            "normals": {"kind": "normals"},
            "saliency": {"kind": "saliency"},
            "edges": {"kind": "edges"},
        }
        self.notes = {
            "semseg": "21 VOC classes (0 background), 255 ignore; semseg/VOC12 preferred",
            "human_parts": "6 part groups + background; images without annotated people: 255",
            "normals": "distilled; valid only on NYUD classes of LabelMap (+ tvmonitor)",
            "saliency": "distilled map > 0.5; a binary dense task (kind saliency: max-F)",
            "edges": "thinned 4-neighbour Laplacian of pascal-context/trainval LabelMap",
        }
        if self.loadmat is None:
            log.warning("scipy is not installed: PASCAL-Context %s skipped", ", ".join(MAT_TASKS))
            tasks = {k: v for k, v in tasks.items() if k not in MAT_TASKS}
            self.notes = {k: v for k, v in self.notes.items() if k not in MAT_TASKS}
            self.notes["skipped"] = f"{', '.join(MAT_TASKS)}: reading .mat files needs scipy"
        self.tasks = tasks

    def _semseg_path(self, sid: str) -> Path:
        voc = self.root / "semseg" / "VOC12" / f"{sid}.png"
        return voc if voc.is_file() else self.root / "semseg" / "pascal-context" / f"{sid}.png"

    def _paths(self, sid: str) -> dict[str, Path]:
        r = self.root
        paths = {
            "image": r / "JPEGImages" / f"{sid}.jpg",
            "semseg": self._semseg_path(sid),
            "saliency": r / "sal_distill" / f"{sid}.png",
        }
        if self.loadmat is not None:
            paths["human_parts"] = r / "human_parts" / f"{sid}.mat"
            paths["normals"] = r / "normals_distill" / f"{sid}.png"
            paths["label_map"] = r / "pascal-context" / "trainval" / f"{sid}.mat"
        return paths

    def files(self, sid: str) -> list[Path]:
        """Every source file of ``sid`` (image first)."""
        return list(self._paths(sid).values())

    def _mat(self, path: Path) -> dict[str, Any]:
        assert self.loadmat is not None
        try:
            return self.loadmat(str(path))
        except FileNotFoundError as e:
            raise DatasetError(f"missing file: {path}") from e
        except Exception as e:  # scipy raises several types for a corrupt file
            raise DatasetError(f"unreadable .mat file {path}: {e}") from e

    def load(self, sid: str) -> dict[str, np.ndarray]:
        """Sample ``sid`` in the generic encoding (see ``training.data.convert``)."""
        p = self._paths(sid)
        image = read_rgb(p["image"])
        shape = image.shape[:2]
        semseg = as_2d(read_raw(p["semseg"]), p["semseg"])
        sal = read_raw(p["saliency"])
        sal = as_2d(sal[..., 0] if sal.ndim == 3 else sal, p["saliency"])  # grey or RGB(A)
        sample = {
            "image": image,
            "semseg": check_labels(semseg, len(VOC_CLASSES), p["semseg"]),
            "saliency": sal.astype(np.float32) / 255.0 > 0.5,
        }
        if self.loadmat is None:
            return sample
        try:
            label_map = as_2d(np.asarray(self._mat(p["label_map"])["LabelMap"]), p["label_map"])
        except KeyError as e:
            raise DatasetError(f"{p['label_map']}: no LabelMap variable") from e
        try:
            anno = self._mat(p["human_parts"])["anno"]
        except KeyError as e:
            raise DatasetError(f"{p['human_parts']}: no anno variable") from e
        raw_n = read_raw(p["normals"])
        if raw_n.ndim != 3 or raw_n.shape[-1] < 3:
            raise DatasetError(f"{p['normals']}: expected an RGB image, got shape {raw_n.shape}")
        normals = unit_normals(2.0 * raw_n[..., :3].astype(np.float32) / 255.0 - 1.0, p["normals"])
        if label_map.shape != normals.shape[:2]:
            raise DatasetError(
                f"{p['label_map']}: LabelMap is {label_map.shape}, the normals {normals.shape[:2]}"
            )
        valid = np.isin(label_map, list(NORMALS_VALID_CLASSES.values()))
        sample["normals"] = np.where(valid[..., None], normals, 0.0).astype(np.float32)
        sample["edges"] = label_edges(label_map)
        sample["human_parts"] = human_parts_map(anno, shape, p["human_parts"])
        return sample
