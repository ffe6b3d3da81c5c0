"""Reader of the polyhead dataset format (see README: Data), any subset of its tasks.

``dataset.json`` names the tasks and their kinds; dense tasks have one file per image in a
folder named after the task; image-level tasks are read from ``labels.json`` by label name.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from training.errors import PolyheadTrainingError

FORMAT_FAMILY = "polyhead-dataset/"
FORMAT_VERSION = 1
DENSE_KINDS = {"segmentation", "depth", "normals", "edges", "saliency"}
IMAGE_KINDS = {"classification", "multilabel"}


class DatasetError(PolyheadTrainingError, ValueError):
    """A dataset folder is missing, malformed, or lacks what was asked for."""


@dataclass(frozen=True)
class TaskInfo:
    """A task as the dataset declares it."""

    name: str
    kind: str
    labels: tuple[str, ...] | None = None
    ignore_index: int | None = None
    units: str | None = None


def _read_meta(root: Path) -> dict[str, Any]:
    """The parsed ``root/dataset.json``, checked to be a JSON object of a known format."""
    if not root.is_dir():
        raise DatasetError(f"dataset folder not found: {root}")
    meta_path = root / "dataset.json"
    try:
        meta = json.loads(meta_path.read_text())
    except FileNotFoundError as e:
        raise DatasetError(f"not a polyhead dataset (no dataset.json): {root}") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DatasetError(f"{meta_path}: not readable JSON: {e}") from e
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_path}: expected a JSON object")
    fmt = meta.get("format", f"{FORMAT_FAMILY}{FORMAT_VERSION}")
    if fmt != f"{FORMAT_FAMILY}{FORMAT_VERSION}":
        raise DatasetError(
            f"{meta_path}: format {fmt!r} not supported (expected {FORMAT_FAMILY}{FORMAT_VERSION})"
        )
    return meta


def read_dataset_info(root: Path) -> tuple[dict[str, TaskInfo], tuple[int, int]]:
    """Tasks declared in ``root/dataset.json`` and the image size.

    Args:
        root: The dataset folder.

    Returns:
        Task name -> ``TaskInfo`` in the file's order, and (height, width).

    Raises:
        DatasetError: The folder or its dataset.json is missing or malformed; the message
            names the path and the field.
    """
    root = Path(root)
    meta = _read_meta(root)
    meta_path = root / "dataset.json"
    try:
        tasks = {
            name: TaskInfo(
                name=name,
                kind=spec["kind"],
                labels=tuple(spec["labels"]) if spec.get("labels") else None,
                ignore_index=spec.get("ignore_index"),
                units=spec.get("units"),
            )
            for name, spec in meta["tasks"].items()
        }
        h, w = (int(v) for v in meta["image_size"])
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise DatasetError(f"{meta_path}: malformed ({type(e).__name__}: {e})") from e
    if h < 1 or w < 1:
        raise DatasetError(f"{meta_path}: image_size must be positive, got {[h, w]}")
    for t in tasks.values():
        if t.kind not in DENSE_KINDS | IMAGE_KINDS:
            raise DatasetError(
                f"{meta_path}: task {t.name!r} has unsupported kind {t.kind!r}; "
                f"supported: {sorted(DENSE_KINDS | IMAGE_KINDS)}"
            )
        if t.kind in IMAGE_KINDS and not t.labels:
            raise DatasetError(f"{meta_path}: task {t.name!r} needs labels")
        if t.ignore_index is not None and not isinstance(t.ignore_index, int):
            raise DatasetError(f"{meta_path}: task {t.name!r}: ignore_index must be an integer")
    return tasks, (h, w)


def _depth_scale(root: Path) -> float:
    """Stored 16-bit depth PNG units per metre (``depth_scale`` in dataset.json, default 1000)."""
    value = _read_meta(root).get("depth_scale", 1000.0)
    try:
        scale = float(value)
    except (TypeError, ValueError):
        scale = 0.0
    if not scale > 0:
        raise DatasetError(f"{root / 'dataset.json'}: depth_scale must be > 0, got {value!r}")
    return scale


def _check_ndim(a: np.ndarray, ndim: int, path: Path) -> None:
    if a.ndim != ndim:
        raise DatasetError(f"{path}: expected {ndim} dimensions, got shape {a.shape}")


def _read_png(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            return np.asarray(im)
    except FileNotFoundError as e:
        raise DatasetError(f"missing file: {path}") from e
    except OSError as e:
        raise DatasetError(f"unreadable image {path}: {e}") from e


class FolderDataset(Dataset):
    """One split of a dataset folder, yielding ``{"id", "image", "targets": {task: tensor}}``.

    Targets by kind: segmentation int64 [H,W] (ignore index kept); depth float32 [1,H,W]
    (0 = invalid); normals float32 [3,H,W] (zero vector = invalid); edges float32 [1,H,W] in
    {0,1}; multilabel float32 [C] multi-hot; classification int64 scalar.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        tasks: Sequence[str] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        mean: Sequence[float] = (0.485, 0.456, 0.406),
        std: Sequence[float] = (0.229, 0.224, 0.225),
    ) -> None:
        """Read ``split`` of the dataset at ``root``, keeping only ``tasks`` (default: all)."""
        self.root = Path(root)
        info, self.image_size = read_dataset_info(self.root)
        self.depth_scale = _depth_scale(self.root)
        names = list(tasks) if tasks is not None else list(info)
        unknown = [t for t in names if t not in info]
        if unknown:
            raise DatasetError(f"{self.root}: no task(s) {unknown}; available: {sorted(info)}")
        self.tasks = {t: info[t] for t in names}
        split_file = self.root / "splits" / f"{split}.txt"
        if not split_file.is_file():
            raise DatasetError(f"split {split!r} not found: {split_file}")
        self.ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        for t in self.tasks.values():
            if t.kind in DENSE_KINDS and not (self.root / t.name).is_dir():
                raise DatasetError(f"task {t.name!r}: folder not found: {self.root / t.name}")
        self.labels: dict[str, dict[str, Any]] = {}
        if any(t.kind in IMAGE_KINDS for t in self.tasks.values()):
            labels_file = self.root / "labels.json"
            try:
                self.labels = json.loads(labels_file.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise DatasetError(f"image-level labels not readable: {labels_file}: {e}") from e
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise DatasetError(f"mean and std need 3 values (std > 0), got {mean}, {std}")
        self.transform = transform
        self.mean = np.asarray(mean, np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(3, 1, 1)

    def __len__(self) -> int:
        return len(self.ids)

    def require_image_size(self, size: tuple[int, int]) -> None:
        """Refuse a dataset whose images are not ``size`` (H, W), the size a model takes."""
        if tuple(self.image_size) != tuple(size):
            (h, w), (dh, dw) = size, self.image_size
            raise DatasetError(
                f"the model takes {w}x{h} images, the dataset {self.root} is {dw}x{dh} "
                f"(pass --data with a {w}x{h} dataset)"
            )

    def _read_dense(self, task: TaskInfo, sid: str) -> np.ndarray:
        folder = self.root / task.name
        if task.kind == "depth":
            npy = folder / f"{sid}.npy"
            if npy.is_file():
                try:
                    d = np.load(npy)
                except (OSError, ValueError) as e:
                    raise DatasetError(f"unreadable depth map {npy}: {e}") from e
            elif (folder / f"{sid}.png").is_file():
                d = _read_png(folder / f"{sid}.png").astype(np.float32) / self.depth_scale
            else:
                raise DatasetError(f"missing file: {npy} (or {sid}.png)")
            if d.ndim == 3 and d.shape[-1] == 1:
                d = d[..., 0]
            _check_ndim(d, 2, npy if npy.is_file() else folder / f"{sid}.png")
            return d.astype(np.float32)
        path = folder / f"{sid}.png"
        raw = _read_png(path)
        if task.kind == "normals":
            _check_ndim(raw, 3, path)
            raw = raw[..., :3]
            valid = raw.any(axis=-1, keepdims=True)
            n = raw.astype(np.float32) / 127.5 - 1.0
            n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6)
            return np.where(valid, n, 0.0).astype(np.float32)
        _check_ndim(raw, 2, path)
        if task.kind in ("edges", "saliency"):
            return raw if raw.dtype == bool else raw > 127  # mode "1" PNGs decode to bool
        return raw

    def _image_target(self, task: TaskInfo, sid: str) -> torch.Tensor:
        assert task.labels is not None
        where = self.root / "labels.json"
        try:
            value = self.labels[sid][task.name]
        except (KeyError, TypeError) as e:
            raise DatasetError(f"{where}: no {task.name!r} label for {sid}") from e
        try:
            if task.kind == "multilabel":
                if isinstance(value, str):
                    raise TypeError("expected a list of label names")
                hot = torch.zeros(len(task.labels))
                for name in value:
                    hot[task.labels.index(name)] = 1.0
                return hot
            return torch.tensor(task.labels.index(value), dtype=torch.int64)
        except (TypeError, ValueError) as e:
            raise DatasetError(
                f"{where}: {sid}.{task.name}: {value!r} is not in {list(task.labels)}"
            ) from e

    def __getitem__(self, i: int) -> dict[str, Any]:
        sid = self.ids[i]
        image = _read_png(self.root / "images" / f"{sid}.png")
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        sample: dict[str, Any] = {"id": sid, "image": image[..., :3]}
        dense = {t: info for t, info in self.tasks.items() if info.kind in DENSE_KINDS}
        for t, info in dense.items():
            sample[t] = self._read_dense(info, sid)
            if sample[t].shape[:2] != image.shape[:2]:
                raise DatasetError(
                    f"{self.root / t}/{sid}: size {sample[t].shape[:2]} differs from its image's "
                    f"{image.shape[:2]}"
                )
        sample["_kinds"] = {t: info.kind for t, info in dense.items()}
        if self.transform is not None:
            sample = self.transform(sample)
        img = sample["image"].astype(np.float32).transpose(2, 0, 1) / 255.0
        targets: dict[str, torch.Tensor] = {}
        for t, info in self.tasks.items():
            if info.kind in IMAGE_KINDS:
                targets[t] = self._image_target(info, sid)
                continue
            a = sample[t]
            if info.kind == "segmentation":
                targets[t] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))
            elif info.kind == "normals":
                targets[t] = torch.from_numpy(
                    np.ascontiguousarray(a.transpose(2, 0, 1), np.float32)
                )
            else:
                targets[t] = torch.from_numpy(np.ascontiguousarray(a, np.float32))[None]
        return {
            "id": sid,
            "image": torch.from_numpy((img - self.mean) / self.std),
            "targets": targets,
        }
