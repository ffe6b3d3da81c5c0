"""NYUv2-13 and Cityscapes-7 in the ``.npy`` layout of lorenmt/mtan, read into generic arrays.

This is the preprocessed data the multi-task optimisation papers train on (MTAN, PCGrad, CAGrad,
Nash-MTL, FAMO, ...). The layout is what their loaders read (``NYUv2`` in mtan's
``im2im_pred/create_dataset.py``; ``CityScapes`` in CAGrad's ``cityscapes/create_dataset.py``
and FAMO's ``experiments/cityscapes/data.py``)::

    {train,val}/image/{i}.npy    H,W,3 float in [0, 1] (bytes / 255), RGB
    {train,val}/label/{i}.npy    H,W float class index, -1 = ignore          (NYUv2: 0..12)
    {train,val}/label_7/{i}.npy  the same, 7 classes (0..6)                 (Cityscapes)
    {train,val}/depth/{i}.npy    H,W,1 float, 0 = invalid (NYUv2: metres; Cityscapes: see below)
    {train,val}/normal/{i}.npy   H,W,3 float unit normals, 0 = invalid      (NYUv2 only)

``i`` runs from 0 to N - 1 (the loaders count ``image/*.npy`` and index by number). NYUv2 is
288x384 (795 train, 654 val), Cityscapes 128x256 (2975 train, 500 val; a 256x512 release has
the same layout). The papers evaluate on ``val``; it becomes our ``val`` and ``test``.

Sample ids are ``{split}_{i}`` (both splits number from 0). Labels -1 -> 255. NYUv2 depth is
in metres. Cityscapes' ``depth/`` holds inverse depth (see ``CITYSCAPES_DISPARITY``); it is
written unchanged as the task ``disparity`` so errors compare with the papers' numbers.
Normals keep the source's axes (channel 0 = image x: the papers' flip augmentation negates it).

Image sizes come from the ``.npy`` headers (``image_size``), so the converter checks them all
before writing anything without loading a single array.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import IO, Any

import numpy as np

from training.data.convert import IGNORE, read_npy, require_dir, unit_normals
from training.data.folder import DatasetError

SPLITS = ("train", "val")
# The 13-class NYUv2 mapping (Eigen & Fergus 2015), named in this order, 1..13, in
# ankurhanda/SceneNetv1.0's README, which mtan's README cites for the labels; mtan's 0..12 are
# those numbers minus 1 (0, "unknown", is -1).
NYUV2_CLASSES = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa",
    "table", "tv", "wall", "window",
)  # fmt: skip
# Neither mtan's code nor its README names the 7 classes; these are the 7 non-void Cityscapes
# categories in the order of their official category ids 1..7 (an assumption: label_7 =
# category id - 1, void -> -1).
CITYSCAPES_CLASSES = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
CITYSCAPES_DISPARITY = (
    "inverse depth as shipped in mtan's preprocessed Cityscapes, unchanged (neither metres nor "
    "pixels): the maintainer calls it Cityscapes' own disparity, unprocessed (lorenmt/mtan "
    "issues 15 and 25); its range, 0..0.4922 where the 16-bit disparity PNGs hold levels up to "
    "32257, fits level / 65535, i.e. about (full-resolution disparity in px) / 256 "
    "(depth in m ~ 0.2 * 2262 / (256 * v)); 0 = invalid; not rescaled when resized"
)
_INDEX = re.compile(r"(0|[1-9][0-9]*)\.npy")
_TOL = 1e-3  # slack on value ranges: images and normals pass through float32 somewhere


def _npy_header(fp: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the header of an open ``.npy`` file (no data read)."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
    else:
        raise ValueError(f"unsupported .npy version {version}")
    return tuple(shape), dtype


def npy_shape(path: Path) -> tuple[int, ...]:
    """The shape stored in a ``.npy`` file's header."""
    try:
        with open(path, "rb") as fp:
            return _npy_header(fp)[0]
    except FileNotFoundError as e:
        raise DatasetError(f"missing file: {path}") from e
    except (OSError, ValueError) as e:
        raise DatasetError(f"unreadable array {path}: {e}") from e


# ---------------------------------------------------------------- array checks


def _shape_error(path: Path, what: str, expected: str, shape: tuple[int, ...]) -> DatasetError:
    return DatasetError(f"{path}: expected {what} of shape {expected}, got {shape}")


def to_uint8_image(a: np.ndarray, path: Path) -> np.ndarray:
    """An mtan image (H,W,3 float in [0, 1]) as H,W,3 uint8."""
    if a.ndim != 3 or a.shape[2] != 3:
        raise _shape_error(path, "an image", "H,W,3 (channels last)", a.shape)
    if not np.issubdtype(a.dtype, np.floating):
        raise DatasetError(f"{path}: expected a float image in [0, 1], got dtype {a.dtype}")
    lo, hi = float(np.min(a)), float(np.max(a))
    if not (np.isfinite(lo) and np.isfinite(hi) and lo >= -_TOL and hi <= 1 + _TOL):
        raise DatasetError(f"{path}: image values must be in [0, 1], got {lo:g}..{hi:g}")
    return np.clip(np.rint(a.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def remap_labels(a: np.ndarray, n_classes: int, hw: tuple[int, int], path: Path) -> np.ndarray:
    """Labels in mtan's encoding (H,W, 0..n-1, -1 = ignore) as H,W uint8 with -1 -> 255."""
    if a.shape != hw:
        raise _shape_error(path, "labels", f"{hw[0]},{hw[1]} (as the image)", a.shape)
    v = a.astype(np.float64)
    valid = (v == -1) | ((v >= 0) & (v < n_classes) & (v == np.round(v)))  # NaN: invalid
    if not valid.all():
        shown = sorted({float(x) for x in np.unique(v[~valid])})[:10]
        raise DatasetError(
            f"{path}: label values {shown} are not class indices 0..{n_classes - 1} or -1"
        )
    return np.where(v == -1, IGNORE, v).astype(np.uint8)


def read_depth(a: np.ndarray, hw: tuple[int, int], path: Path) -> np.ndarray:
    """Depth in mtan's encoding (H,W,1, >= 0, 0 = invalid) as H,W float32."""
    if a.shape != (*hw, 1):
        raise _shape_error(path, "depth", f"{hw[0]},{hw[1]},1", a.shape)
    d = a[..., 0].astype(np.float32)
    bad = ~np.isfinite(d) | (d < 0)
    if bad.any():
        shown = sorted({float(x) for x in np.unique(d[bad])})[:5]
        raise DatasetError(f"{path}: depth must be finite and >= 0 (0 = invalid), found {shown}")
    return d


def read_normals(a: np.ndarray, hw: tuple[int, int], path: Path) -> np.ndarray:
    """Normals as mtan stores them (H,W,3 in [-1, 1], zero = invalid) as H,W,3 unit vectors."""
    if a.shape != (*hw, 3):
        raise _shape_error(path, "normals", f"{hw[0]},{hw[1]},3", a.shape)
    v = a.astype(np.float64)
    if not np.isfinite(v).all() or np.abs(v).max(initial=0.0) > 1 + _TOL:
        raise DatasetError(f"{path}: normal components must be finite and in [-1, 1]")
    return unit_normals(v, path)


# ---------------------------------------------------------------- readers


class _MtanSource:
    """The shared part of the two readers: folders, ids, and the per-sample checks."""

    name: str
    title: str
    label_folder: str
    classes: tuple[str, ...]
    boundary_tasks: frozenset[str] = frozenset()
    tasks: dict[str, dict[str, Any]]
    notes: dict[str, str]

    def _folders(self) -> tuple[str, ...]:
        return ("image", self.label_folder, "depth")

    def __init__(self, root: Path) -> None:
        """Open ``root`` (holding ``train/`` and ``val/``), list and check its images.

        Raises:
            DatasetError: A folder is missing, an image folder is empty or not numbered
                0..N-1, or an image is not an H,W,3 array; the message names the path.
        """
        self.root = Path(root)
        for split in SPLITS:
            for folder in self._folders():
                require_dir(self.root / split / folder, f"{self.title} ({split}/{folder})")
        self.splits: dict[str, list[str]] = {}
        for split in SPLITS:
            folder = self.root / split / "image"
            numbers = []
            for p in folder.glob("*.npy"):
                m = _INDEX.fullmatch(p.name)
                if m is None:
                    raise DatasetError(f"{p}: not named {{i}}.npy (the loaders index by number)")
                numbers.append(int(m.group(1)))
            if not numbers:
                raise DatasetError(f"{self.title} ({split}): no {{i}}.npy images in {folder}")
            missing = sorted(set(range(len(numbers))) - set(numbers))
            if missing:
                shown = ", ".join(f"{i}.npy" for i in missing[:5])
                raise DatasetError(
                    f"{folder}: {len(numbers)} images must be 0.npy..{len(numbers) - 1}.npy "
                    f"(the loaders read those); missing {shown}"
                )
            for i in range(len(numbers)):
                shape = npy_shape(folder / f"{i}.npy")
                if len(shape) != 3 or shape[2] != 3:
                    raise _shape_error(folder / f"{i}.npy", "an image", "H,W,3", shape)
            self.splits[split] = [f"{split}_{i}" for i in range(len(numbers))]

    def _paths(self, sid: str) -> dict[str, Path]:
        split, i = sid.rsplit("_", 1)
        base = self.root / split
        return {f: base / f / f"{i}.npy" for f in self._folders()}

    def files(self, sid: str) -> list[Path]:
        """Every source file of ``sid`` (image first)."""
        return list(self._paths(sid).values())

    def image_size(self, sid: str) -> tuple[int, int]:
        """(height, width) of ``sid``'s image, from its ``.npy`` header."""
        shape = npy_shape(self._paths(sid)["image"])
        return int(shape[0]), int(shape[1])

    def _load_common(self, sid: str) -> tuple[dict[str, np.ndarray], dict[str, Path]]:
        p = self._paths(sid)
        image = to_uint8_image(read_npy(p["image"]), p["image"])
        hw = (image.shape[0], image.shape[1])
        label = read_npy(p[self.label_folder])
        sample = {
            "image": image,
            "semseg": remap_labels(label, len(self.classes), hw, p[self.label_folder]),
        }
        return sample, p


class NYUv2Mtan(_MtanSource):
    """NYUv2 as mtan preprocessed it: semseg (13 classes), depth (m), normals; 288x384."""

    name = "nyuv2_mtan"
    title = "NYUv2 (mtan layout)"
    label_folder = "label"
    classes = NYUV2_CLASSES

    def _folders(self) -> tuple[str, ...]:
        return ("image", "label", "depth", "normal")

    def __init__(self, root: Path) -> None:
        """Open ``root`` (mtan's ``nyuv2`` folder with ``train/`` and ``val/``)."""
        super().__init__(root)
        self.tasks = {
            "semseg": {
                "kind": "segmentation",
                "labels": list(NYUV2_CLASSES),
                "ignore_index": IGNORE,
            },
            "depth": {"kind": "depth", "units": "m"},
            "normals": {"kind": "normals"},
        }
        self.notes = {
            "source": "lorenmt/mtan preprocessed NYUv2 (.npy, 288x384); val = the papers' test set",
            "semseg": (
                "13-class NYUv2 (Eigen & Fergus; names and order from ankurhanda/SceneNetv1.0): "
                "0..12, -1 -> 255"
            ),
            "depth": "metres as in the source; 0 = invalid",
            "normals": (
                "renormalised to unit length; zero = invalid; source axes kept "
                "(channel 0 = image x)"
            ),
        }

    def load(self, sid: str) -> dict[str, np.ndarray]:
        """Sample ``sid`` in the generic encoding (see ``training.data.convert``)."""
        sample, p = self._load_common(sid)
        hw = sample["semseg"].shape
        sample["depth"] = read_depth(read_npy(p["depth"]), hw, p["depth"])
        sample["normals"] = read_normals(read_npy(p["normal"]), hw, p["normal"])
        return sample


class CityscapesMtan(_MtanSource):
    """Cityscapes as mtan preprocessed it: semseg (7 classes), disparity (mtan's inverse depth)."""

    name = "cityscapes_mtan"
    title = "Cityscapes (mtan layout)"
    label_folder = "label_7"
    classes = CITYSCAPES_CLASSES

    def __init__(self, root: Path) -> None:
        """Open ``root`` (mtan's Cityscapes folder with ``train/`` and ``val/``)."""
        super().__init__(root)
        self.tasks = {
            "semseg": {
                "kind": "segmentation",
                "labels": list(CITYSCAPES_CLASSES),
                "ignore_index": IGNORE,
            },
            "disparity": {"kind": "depth", "units": "mtan inverse depth"},
        }
        self.notes = {
            "source": (
                "lorenmt/mtan preprocessed Cityscapes (.npy, 128x256 or 256x512); val = the "
                "papers' test set"
            ),
            "semseg": (
                "label_7: 0..6, -1 -> 255; class names assumed: the 7 non-void Cityscapes "
                "categories in category-id order (the source names none)"
            ),
            "disparity": CITYSCAPES_DISPARITY,
        }

    def load(self, sid: str) -> dict[str, np.ndarray]:
        """Sample ``sid`` in the generic encoding (see ``training.data.convert``)."""
        sample, p = self._load_common(sid)
        sample["disparity"] = read_depth(read_npy(p["depth"]), sample["semseg"].shape, p["depth"])
        return sample
