"""FAMO (Liu et al., NeurIPS 2023, "FAMO: Fast Adaptive Multitask Optimization")."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext, Weighting


@WEIGHTINGS.register("famo")
class Famo(Weighting):
    """Balance the rate at which each loss falls, in O(1) space and time per step.

    The model descends sum_t z_t log L_t / c (z = softmax(xi), c = sum_t z_t / L_t, i.e. task t
    weighted by z_t / (c L_t)). The logits xi are then moved by their own Adam (learning rate
    ``lr``, L2 ``weight_decay``) against each task's log-loss improvement, so tasks that improve
    slowly gain weight. As in the paper's code (and LibMTL), the improvement is that of the
    same batch, before and after the optimizer step: the trainer evaluates the batch again
    without gradients and calls :meth:`after_step` (one forward pass more per step, about a
    third of a step's time; measuring against the next batch instead, as an earlier version of
    this did, compares two batches' noise). Limits: assumes positive losses; the logits' state
    rides in checkpoints.

    Args:
        tasks: task names.
        lr: step size of the logits' Adam.
        weight_decay: L2 pull of the logits toward 0 (equal weights).
    """

    wants_losses_after_step = True

    def __init__(self, tasks: Sequence[str], lr: float = 0.025, weight_decay: float = 1e-3) -> None:
        super().__init__(tasks)
        if lr <= 0 or weight_decay < 0:
            raise ValueError("lr must be > 0 and weight_decay >= 0")
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        n = len(self.tasks)
        self.register_buffer("logits", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("previous", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("adam_m", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("adam_v", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("adam_steps", torch.zeros((), dtype=torch.int64))
        self.register_buffer("has_previous", torch.zeros((), dtype=torch.bool))

    def _update_logits(self, current: torch.Tensor) -> None:
        improvement = self.previous.log() - current.log()
        z = torch.softmax(self.logits, dim=0)
        grad = z * (improvement - (z * improvement).sum())  # softmax Jacobian^T improvement
        grad = grad + self.weight_decay * self.logits
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.adam_steps += 1
        k = int(self.adam_steps)
        self.adam_m.mul_(b1).add_((1 - b1) * grad)
        self.adam_v.mul_(b2).add_((1 - b2) * grad * grad)
        m_hat = self.adam_m / (1 - b1**k)
        v_hat = self.adam_v / (1 - b2**k)
        self.logits.sub_(self.lr * m_hat / (v_hat.sqrt() + eps))

    @override
    def backward(self, losses: dict[str, torch.Tensor], ctx: BackwardContext) -> dict[str, float]:
        self._check(losses)
        stacked = torch.stack([losses[t] for t in self.tasks]).clamp_min(1e-8)
        current = stacked.detach().to(torch.float64)
        self.previous.copy_(current)  # this batch's losses before the step
        self.has_previous.fill_(True)
        z = torch.softmax(self.logits, dim=0)
        c = (z / current).sum()
        factors = (z / c).to(stacked.dtype)
        ctx.scale((factors * stacked.log()).sum()).backward()
        weights = factors / stacked.detach()  # the weight each loss gets in the gradient
        return {t: float(weights[i]) for i, t in enumerate(self.tasks)}

    @override
    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        """Move the logits by the improvement of this batch's log-losses over the step."""
        self._check(losses)
        if not bool(self.has_previous):
            return
        after = torch.stack([losses[t].detach() for t in self.tasks]).clamp_min(1e-8)
        self._update_logits(after.to(torch.float64))
        self.has_previous.fill_(False)
