"""Each task's training loss: its final output's, plus its deep-supervision terms.

PAD-Net and MTI-Net supervise their intermediate predictions with the task's own loss, upsampled
bilinearly to the target's size, and the task's weight multiplies the whole (Vandenhende et al.'s
``PADNetLoss`` and ``MTINetLoss`` do the same): so the weighting methods see one loss per task,
``L_t = L_t(final) + w * sum_s L_t(intermediate_s)`` with ``w`` the config's
``model.deep_supervision_weight``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F

from training.models import MultiTaskOutput
from training.tasks import TaskKind


def upsampled(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``pred`` resized bilinearly to the target's height and width (a no-op when they match)."""
    if pred.shape[-2:] == target.shape[-2:]:
        return pred
    return F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)


def task_losses(
    tasks: Mapping[str, TaskKind],
    names: Sequence[str],
    out: MultiTaskOutput,
    targets: Mapping[str, torch.Tensor],
    deep_supervision_weight: float = 1.0,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(each task's loss, the deep-supervision terms in it by ``task/where``, unweighted)."""
    losses: dict[str, torch.Tensor] = {}
    terms: dict[str, torch.Tensor] = {}
    for t in names:
        task, target = tasks[t], targets[t]
        loss = task.loss(out[t], target)
        for where, pred in out.deep_supervision.get(t, {}).items():
            term = task.loss(upsampled(pred, target), target)
            terms[f"{t}/{where}"] = term
            if deep_supervision_weight:
                loss = loss + deep_supervision_weight * term
        losses[t] = loss
    return losses, terms
