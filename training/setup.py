"""Checks a config against the data on disk and builds its tasks, before anything heavy runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.data.folder import DatasetError, read_dataset_info
from training.errors import ConfigError
from training.tasks import TaskKind, build_task


def check_and_build_tasks(cfg: TrainConfig) -> tuple[list[TaskKind], tuple[int, int]]:
    """Build the configured tasks with labels from the dataset; fail on any mismatch.

    Returns the tasks (in config order) and the dataset's image size (H, W).
    """
    root = cfg.data.root
    if not root.exists():
        raise ConfigError(
            f"data.root: folder not found: {root} (make one with `polyhead data synth`)"
        )
    try:
        info, size = read_dataset_info(root)
    except DatasetError as e:
        raise ConfigError(f"data.root: {e}") from e
    tasks = []
    for t in cfg.tasks:
        if t.name not in info:
            raise ConfigError(
                f"tasks: {t.name!r} is not in the dataset at {root}; it has {sorted(info)}"
            )
        if info[t.name].kind != t.kind:
            raise ConfigError(
                f"tasks: {t.name!r} is declared kind {t.kind!r} "
                f"but the dataset says {info[t.name].kind!r}"
            )
        try:
            tasks.append(build_task(t.name, t.kind, info[t.name].labels, t.auxiliary))
        except ValueError as e:
            raise ConfigError(f"tasks: {e}") from e
    return tasks, size


def dataset_description(root: Path) -> dict[str, Any]:
    """What a manifest's provenance records about the data: the dataset.json header and path."""
    meta_file = root / "dataset.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    described = {k: meta[k] for k in ("format", "name", "seed", "count", "image_size") if k in meta}
    return {"root": str(root), **described}
