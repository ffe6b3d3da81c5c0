"""GradNorm (Chen et al., ICML 2018).

"GradNorm: Gradient Normalization for Adaptive Loss Balancing in Deep Multitask Networks".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext, Weighting


@WEIGHTINGS.register("gradnorm")
class GradNorm(Weighting):
    """Learn weights so every task's weighted gradient norm tracks its relative training rate.

    Weights w_t (parameters, trained with the model) get the gradient of
    sum_t |G_t - mean(G) * r_t^alpha|, G_t = |grad w_t L_t| at the shared representation (or the
    last shared parameter tensor when the model exposes none), r_t = (L_t / L_t(0)) normalised to
    mean 1: tasks that train slowly get larger gradients. The model gets sum_t w_t L_t; weights
    are renormalised to sum to T before each step. Limits: one extra gradient per task at the
    representation; alpha needs tuning (the paper uses 0.12-3, 1.5 for NYUv2).

    Args:
        tasks: task names.
        alpha: strength of the pull toward equal training rates.
    """

    def __init__(self, tasks: Sequence[str], alpha: float = 1.5) -> None:
        super().__init__(tasks)
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = float(alpha)
        self.weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial_losses", torch.zeros(len(self.tasks)))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    @override
    def backward(self, losses: dict[str, torch.Tensor], ctx: BackwardContext) -> dict[str, float]:
        self._check(losses)
        n = len(self.tasks)
        with torch.no_grad():  # renormalise after the optimizer's last step
            self.weights.clamp_(min=1e-4)
            self.weights.mul_(n / self.weights.sum())
        stacked = torch.stack([losses[t] for t in self.tasks])
        if not bool(self.started):
            self.initial_losses.copy_(stacked.detach().clamp_min(1e-12))
            self.started.fill_(True)
        target = [f for f in ctx.shared_features if f.requires_grad] or [
            p for p in ctx.shared_parameters if p.requires_grad
        ][-1:]
        norms = []
        for t in self.tasks:
            grads = torch.autograd.grad(losses[t], target, retain_graph=True, allow_unused=True)
            norms.append(torch.sqrt(sum((g * g).sum() for g in grads if g is not None)))
        g_norm = self.weights * torch.stack(norms).detach()
        with torch.no_grad():
            ratio = stacked.detach() / self.initial_losses
            rate = ratio / ratio.mean()
            goal = g_norm.mean() * rate**self.alpha
        balance = (g_norm - goal).abs().sum()
        (w_grad,) = torch.autograd.grad(ctx.scale(balance), [self.weights])
        ctx.scale((self.weights.detach() * stacked).sum()).backward()
        self.weights.grad = w_grad if self.weights.grad is None else self.weights.grad + w_grad
        return {t: float(self.weights[i].detach()) for i, t in enumerate(self.tasks)}
