"""A run directory: the resolved config, the task list, and the trained weights.

``runs/NAME/`` holds ``config.yaml`` (exactly what was trained), ``run.json`` (each task's kind
and labels, the input size and the dataset's description, so evaluation and export can rebuild
the model without the dataset),
``model.safetensors`` (final weights), ``metrics.jsonl`` and ``checkpoints/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from training.config import TrainConfig, load_config
from training.errors import CheckpointError
from training.models import ARCHITECTURES, MultiTaskModel, build_backbone
from training.tasks import TaskKind, build_task

CONFIG_FILE = "config.yaml"
RUN_FILE = "run.json"
WEIGHTS_FILE = "model.safetensors"
METRICS_LOG = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints/last"


def build_model(
    cfg: TrainConfig, tasks: list[TaskKind], load_weights: bool = True
) -> MultiTaskModel:
    """Build the configured architecture over ``tasks``."""
    weights = cfg.model.weights if load_weights else None
    backbone = build_backbone(cfg.model.backbone, cfg.model.width, weights)
    arch = ARCHITECTURES.get(cfg.model.architecture)
    # the config allows branches with the branched architecture only
    options = {} if cfg.model.branches is None else {"branches": cfg.model.branches}
    return arch(backbone, tasks, neck_channels=cfg.model.neck_channels, **options)  # type: ignore[call-arg]


def tasks_to_json(tasks: list[TaskKind]) -> list[dict[str, Any]]:
    """Serialisable description of the tasks (name, kind, labels; auxiliary when it is)."""
    return [
        {"name": t.name, "kind": t.kind, "labels": list(t.labels) if t.labels else None}
        | ({"auxiliary": True} if t.auxiliary else {})
        for t in tasks
    ]


def tasks_from_json(items: list[dict[str, Any]]) -> list[TaskKind]:
    """Inverse of ``tasks_to_json``."""
    return [
        build_task(
            i["name"],
            i["kind"],
            tuple(i["labels"]) if i.get("labels") else None,
            bool(i.get("auxiliary", False)),
        )
        for i in items
    ]


@dataclass
class Run:
    """A finished (or in-progress) run loaded from disk."""

    path: Path
    config: TrainConfig
    tasks: list[TaskKind]
    input_size: tuple[int, int]
    dataset: dict[str, Any]

    def model(self) -> MultiTaskModel:
        """The trained model (final weights), in eval mode on the CPU."""
        from training.checkpoint import load_weights

        weights = self.path / WEIGHTS_FILE
        if not weights.is_file():
            raise CheckpointError(
                f"run {self.path} has no final weights ({WEIGHTS_FILE}); did training finish?"
            )
        model = build_model(self.config, self.tasks, load_weights=False)
        load_weights(model, weights)
        return model.eval()


def write_run_files(
    path: Path,
    raw_config: dict[str, Any],
    tasks: list[TaskKind],
    input_size: tuple[int, int],
    dataset: dict[str, Any],
) -> None:
    """Write config.yaml and run.json at the start of a run."""
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(yaml.safe_dump(raw_config, sort_keys=False))
    meta = {"tasks": tasks_to_json(tasks), "input_size": list(input_size), "dataset": dataset}
    (path / RUN_FILE).write_text(json.dumps(meta, indent=2))


def load_run(path: str | Path) -> Run:
    """Load a run directory written by the trainer."""
    path = Path(path)
    if not (path / CONFIG_FILE).is_file():
        raise CheckpointError(f"{path} is not a run directory (no {CONFIG_FILE})")
    if not (path / RUN_FILE).is_file():
        raise CheckpointError(f"{path} is not a run directory (no {RUN_FILE})")
    cfg = load_config(path / CONFIG_FILE)
    meta = json.loads((path / RUN_FILE).read_text())
    h, w = meta["input_size"]
    return Run(
        path=path,
        config=cfg,
        tasks=tasks_from_json(meta["tasks"]),
        input_size=(int(h), int(w)),
        dataset=meta.get("dataset", {}),
    )
