"""Single-task baselines: one model per task, the same backbone and training budget.

``polyhead train --baselines`` trains them beside the multi-task run, in ``RUN/baselines/TASK``;
``polyhead evaluate --run RUN`` and ``polyhead compare`` find them there and report the
multi-task delta against them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.config import TrainConfig, parse_config
from training.runs import CONFIG_FILE, WEIGHTS_FILE

log = logging.getLogger(__name__)

BASELINES_DIR = "baselines"


def baseline_config(cfg: TrainConfig, task: str) -> TrainConfig:
    """``cfg`` for ``task`` alone: the single-task architecture, everything else unchanged."""
    raw = cfg.model_dump(mode="json")
    raw["name"] = f"{cfg.name}-{task}"
    # alone, a task is what the model serves (an auxiliary one too: its own baseline)
    raw["tasks"] = [t | {"auxiliary": False} for t in raw["tasks"] if t["name"] == task]
    raw["model"]["architecture"] = "single_task"
    raw["model"].pop("branches", None)  # the tree of a branched run has no meaning alone
    raw["weighting"] = {"name": "equal", "params": {}}
    raw.pop("analysis", None)  # inter-task affinity needs tasks to measure between
    return parse_config(raw, f"baseline of {task}")


def train_baselines(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> dict[str, Path]:
    """Train each task's baseline under ``run_dir/baselines`` (finished ones are kept)."""
    from training.trainer import Trainer

    done: dict[str, Path] = {}
    for task in cfg.task_names:
        out = Path(run_dir) / BASELINES_DIR / task
        if not (out / WEIGHTS_FILE).is_file():
            started = (out / CONFIG_FILE).is_file()
            log.info("training the single-task baseline of %s in %s", task, out)
            Trainer(baseline_config(cfg, task), out, resume=resume and started).fit()
        done[task] = out
    return done


def find_baselines(run_dir: Path, tasks: list[str], also: Path | None = None) -> dict[str, Path]:
    """Finished baselines of ``tasks``: ``run_dir/baselines/TASK``, else ``also/TASK``."""
    found: dict[str, Path] = {}
    for task in tasks:
        for root in (Path(run_dir) / BASELINES_DIR, also):
            if root is not None and (root / task / WEIGHTS_FILE).is_file():
                found[task] = root / task
                break
    return found
