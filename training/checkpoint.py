"""Checkpoints: tensors in safetensors, everything else in JSON, written atomically.

A checkpoint is a directory::

    model.safetensors      the model's state dict
    training.safetensors   optimizer tensors, weighting state, torch RNG state
    state.json             progress (epoch, step), optimizer hyperparameters and scalars,
                           scheduler state, the epoch's running loss sums

It is written to a temporary sibling directory, fsynced, then renamed into place, so a run killed
at any moment leaves either the previous checkpoint or the new one, never a mix.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from training.errors import CheckpointError

MODEL_FILE = "model.safetensors"
TRAINING_FILE = "training.safetensors"
STATE_FILE = "state.json"


@dataclass
class Progress:
    """Where training stands: the epoch in progress and the batches of it already done."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    epoch_loss_sums: dict[str, float] = field(default_factory=dict)
    epoch_loss_count: int = 0


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after creating or renaming files in it)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def save_weights(model: nn.Module, path: Path) -> None:
    """Write a model's state dict to ``path`` (safetensors) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, tmp)
    _fsync_file(Path(tmp))
    os.replace(tmp, path)
    fsync_dir(path.parent)


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a safetensors state dict into ``model`` (strict)."""
    if not path.is_file():
        raise CheckpointError(f"weights file not found: {path}")
    model.load_state_dict(load_file(str(path)), strict=True)


def _split_optimizer(opt_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in opt_state["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{idx}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": opt_state["param_groups"], "scalars": scalars}


def _join_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, scalars in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(scalars)
    return {"state": state, "param_groups": meta["param_groups"]}


def weighting_tensors(weighting: nn.Module) -> dict[str, torch.Tensor]:
    """The weighting's state as safetensors takes it: one copy per key.

    A stateful aggregator may reach one buffer under two names (torchjd's GradVac does), and
    safetensors refuses tensors that share memory; loading gives each name its value back.
    """
    return {k: v.detach().cpu().clone() for k, v in weighting.state_dict().items()}


def save_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    weighting: nn.Module,
    progress: Progress,
) -> None:
    """Atomically replace the checkpoint at ``directory`` with the current training state."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.tmp-"))
    try:
        model_state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(model_state, str(tmp / MODEL_FILE))
        opt_tensors, opt_meta = _split_optimizer(optimizer.state_dict())
        tensors = dict(opt_tensors)
        tensors.update({f"weighting.{k}": v for k, v in weighting_tensors(weighting).items()})
        tensors["rng.torch"] = torch.get_rng_state()
        save_file(tensors, str(tmp / TRAINING_FILE))
        state = {
            "progress": asdict(progress),
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
        for f in tmp.iterdir():
            _fsync_file(f)
        fsync_dir(tmp)
        previous = directory.with_name(directory.name + ".prev")
        if previous.exists():
            shutil.rmtree(previous)
        if directory.exists():
            os.replace(directory, previous)
        os.replace(tmp, directory)
        fsync_dir(directory.parent)
        if previous.exists():
            shutil.rmtree(previous)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def find_checkpoint(directory: Path) -> Path | None:
    """The complete checkpoint at ``directory`` (or its ``.prev`` after a crash mid-swap)."""
    for candidate in (directory, directory.with_name(directory.name + ".prev")):
        if (candidate / STATE_FILE).is_file():
            return candidate
    return None


def load_checkpoint(
    directory: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    weighting: nn.Module,
) -> Progress:
    """Restore everything ``save_checkpoint`` wrote; returns where to continue."""
    found = find_checkpoint(directory)
    if found is None:
        raise CheckpointError(f"no checkpoint to resume from at {directory}")
    try:
        state = json.loads((found / STATE_FILE).read_text())
        model.load_state_dict(load_file(str(found / MODEL_FILE)), strict=True)
        tensors = load_file(str(found / TRAINING_FILE))
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint at {found} is unreadable: {e}") from e
    optimizer.load_state_dict(_join_optimizer(tensors, state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    weighting.load_state_dict(
        {k.removeprefix("weighting."): v for k, v in tensors.items() if k.startswith("weighting.")}
    )
    torch.set_rng_state(tensors["rng.torch"])
    return Progress(**state["progress"])
