"""Constant predictors: the floor every trained model must clear on every task.

Each task kind says which constant is best for it (``TaskKind.constant_output``: the most
frequent class, the mean depth, the normalised mean normal, the edge rate, each label's
frequency, the class prior), fit here on a training split. The predictor returns that constant
as raw head outputs for every image, and every pixel of a dense task, so it is measured by
exactly the metric code that measures a model (``evaluate_predictor``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from training.data.folder import FolderDataset
from training.evaluate import Metrics, Predictor, primary_metric
from training.tasks import TaskKind


def _targets(dataset: Dataset, task: str, batch_size: int) -> Iterator[torch.Tensor]:
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=lambda samples: torch.stack([s["targets"][task] for s in samples]),
        generator=torch.Generator(),  # never draw from the global RNG
    )
    yield from loader


def fit_constant(task: TaskKind, dataset: Dataset, batch_size: int = 64) -> torch.Tensor:
    """``task``'s best constant raw output (one value per channel), fit on ``dataset``."""
    return task.constant_output(_targets(dataset, task.name, batch_size))


def fit_constants(
    tasks: Sequence[TaskKind], root: str | Path, split: str = "train"
) -> dict[str, torch.Tensor]:
    """Every task's constant, fit on ``split`` of the dataset folder at ``root``.

    One pass per task, each reading only that task's targets (and the images).
    """
    return {t.name: fit_constant(t, FolderDataset(root, split, [t.name])) for t in tasks}


def constant_predictor(tasks: Sequence[TaskKind], outputs: Mapping[str, torch.Tensor]) -> Predictor:
    """A predictor (for ``evaluate_predictor``) that outputs ``outputs[task]`` for any image.

    Dense tasks get the constant at every pixel of the input's size, [N, C, H, W]; image-level
    tasks get it once per image, [N, C].
    """
    missing = [t.name for t in tasks if t.name not in outputs]
    if missing:
        raise ValueError(f"no constant for task(s) {missing}; have {sorted(outputs)}")

    def predict(images: torch.Tensor) -> dict[str, torch.Tensor]:
        n, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        out = {}
        for t in tasks:
            value = outputs[t.name].float()
            if t.dense:
                out[t.name] = value.view(1, -1, 1, 1).expand(n, -1, h, w)
            else:
                out[t.name] = value.view(1, -1).expand(n, -1)
        return out

    return predict


@dataclass(frozen=True)
class Shortfall:
    """A task whose primary metric does not beat the constant predictor's."""

    task: str
    metric: str
    value: float
    constant: float

    def __str__(self) -> str:
        return f"{self.task} {self.metric} {self.value:.4f} (constant {self.constant:.4f})"


def shortfalls(metrics: Metrics, constant: Metrics, tasks: Sequence[TaskKind]) -> list[Shortfall]:
    """The tasks of ``metrics`` whose primary metric is not strictly better than the constant's.

    Tasks the constant was not measured on are skipped; an empty list means ``metrics`` beats
    the constant predictor on every task.
    """
    found = []
    for t in tasks:
        if t.name not in metrics or t.name not in constant:
            continue
        p = primary_metric(t)
        value, floor = metrics[t.name][p.name], constant[t.name][p.name]
        if not (value > floor if p.higher_is_better else value < floor):
            found.append(Shortfall(t.name, p.name, value, floor))
    return found
