"""An affinity matrix with its task order, and the reader of the TAG file a run writes.

Both sources of affinity end up here: TAG's ``Z[i][j]`` (how much task ``i``'s update lowers
task ``j``'s loss, measured during training, ``training.analysis.tag``) and the representation
similarity of single-task models per stage (``training.analysis.rsa``, symmetric). Row ``i`` is
the source, column ``j`` the target, everywhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.errors import ConfigError

#: Where a run that measured TAG keeps its mean matrix (``training.analysis.tag.SUMMARY_FILE``).
TAG_FILE = "affinity_tag.json"


@dataclass(frozen=True)
class AffinityMatrix:
    """``matrix[i, j]``: how much ``tasks[i]`` helps ``tasks[j]`` (float64, finite)."""

    tasks: tuple[str, ...]
    matrix: np.ndarray
    auxiliary: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        n = len(self.tasks)
        if self.matrix.shape != (n, n):
            raise ValueError(f"a matrix over {n} tasks must be {n}x{n}, got {self.matrix.shape}")
        if len(set(self.tasks)) != n:
            raise ValueError(f"duplicate task names: {list(self.tasks)}")
        if not self.auxiliary <= set(self.tasks):
            raise ValueError(f"auxiliary tasks {sorted(self.auxiliary - set(self.tasks))} unknown")

    @property
    def served(self) -> tuple[str, ...]:
        """The tasks that are not auxiliary, in order."""
        return tuple(t for t in self.tasks if t not in self.auxiliary)

    def value(self, source: str, target: str) -> float:
        """``matrix[source, target]``."""
        return float(self.matrix[self.tasks.index(source), self.tasks.index(target)])

    def restrict(self, tasks: Sequence[str]) -> AffinityMatrix:
        """The sub-matrix over ``tasks`` (in that order)."""
        idx = [self.tasks.index(t) for t in tasks]
        return AffinityMatrix(
            tuple(tasks), self.matrix[np.ix_(idx, idx)], self.auxiliary & set(tasks)
        )

    def to_json(self) -> dict[str, Any]:
        """``{"tasks", "auxiliary", "matrix"}`` (rows = source, columns = target)."""
        return {
            "tasks": list(self.tasks),
            "auxiliary": [t for t in self.tasks if t in self.auxiliary],
            "matrix": [[float(v) for v in row] for row in self.matrix],
        }


@dataclass(frozen=True)
class TagAffinity:
    """The TAG matrix of a run, with how it was measured."""

    affinity: AffinityMatrix
    measurements: int | None
    every_steps: int | None
    undefined: tuple[tuple[str, str], ...]  # entries no measurement defined (read as 0)
    path: Path


def read_tag(path: Path) -> TagAffinity:
    """Read ``RUN/affinity_tag.json``: the run's mean TAG matrix.

    Reads the trainer's layout (``"mean": {i: {j: Z_ij}}``, null where undefined) and a plain
    one (``"matrix": [[...]]``, row ``i`` = source ``i``); both with ``"tasks"`` and optional
    ``"auxiliary"``, ``"measurements"`` and ``"every_steps"``. Undefined entries read as 0 (no
    evidence either way) and are listed.

    Raises:
        ConfigError: The file is missing, not JSON, or its matrix does not fit its task list.
    """
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path} not found") from e
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not readable JSON: {e}") from e
    try:
        tasks = tuple(str(t) for t in raw["tasks"])
        if "mean" in raw:
            rows = [[raw["mean"][a][b] for b in tasks] for a in tasks]
        else:
            rows = [list(r) for r in raw["matrix"]]
        if len(rows) != len(tasks) or any(len(r) != len(tasks) for r in rows):
            raise ValueError(f"the matrix is not {len(tasks)}x{len(tasks)}")
        undefined = tuple(
            (a, b)
            for a, r in zip(tasks, rows, strict=True)
            for b, v in zip(tasks, r, strict=True)
            if v is None or not math.isfinite(float(v))
        )
        matrix = np.array(
            [[0.0 if v is None else float(v) for v in r] for r in rows], dtype=np.float64
        )
        matrix[~np.isfinite(matrix)] = 0.0
        affinity = AffinityMatrix(tasks, matrix, frozenset(raw.get("auxiliary") or ()))
        measurements, every = raw.get("measurements"), raw.get("every_steps")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"{path}: malformed TAG affinity ({type(e).__name__}: {e})") from e
    return TagAffinity(
        affinity,
        None if measurements is None else int(measurements),
        None if every is None else int(every),
        undefined,
        path,
    )
