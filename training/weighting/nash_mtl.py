"""Nash-MTL (Navon et al., ICML 2022, "Multi-Task Learning as a Bargaining Game")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchjd.aggregation import Aggregator, GramianWeightedAggregator
from torchjd.aggregation import Weighting as GramianWeighting
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients

#: Backtracking halvings of one Newton step at most (each halves the step).
_MAX_HALVINGS = 60


def bargaining_weights(
    gramian: torch.Tensor, start: torch.Tensor | None = None, iterations: int = 100
) -> torch.Tensor:
    """The Nash bargaining weights: ``alpha > 0`` with ``(K alpha)_t = 1 / alpha_t``, ``K = G G^T``.

    They minimise ``1/2 a^T K a - sum_t log a_t``, strictly convex on ``a > 0``: solved by damped
    Newton steps (backtracking on that objective while the Newton decrement is large, full steps
    once it is small) on ``K / |K|_F`` plus ``1e-14`` on the diagonal (a singular ``K`` would let
    the objective fall without bound; the relative residual this leaves is about
    ``1e-14 |K|_F / lambda_min(K)``), warm-started from
    ``start`` (the previous solution), then scaled back, so ``alpha`` scales as ``1 / s`` when the
    gradients scale by ``s`` and the direction ``alpha @ G`` does not change. The paper's code
    approximates the same point by a sequence of convex programs (cvxpy), which torchjd's
    implementation stops early on ("unbounded" reports fall back to alpha = 1).
    """
    k = gramian.detach().to(torch.float64).cpu().numpy()
    n = k.shape[0]
    scale = float(np.linalg.norm(k))
    if not np.isfinite(scale) or scale <= 0:
        return torch.ones(n, dtype=torch.float64)
    k = k / scale + 1e-14 * np.eye(n)
    if start is None or not torch.all(start > 0):
        a = 1 / np.sqrt(np.diag(k))
    else:
        a = start.detach().to(torch.float64).cpu().numpy() * np.sqrt(scale)

    def objective(x: np.ndarray) -> float:
        return float(0.5 * x @ k @ x - np.log(x).sum())

    for _ in range(iterations):
        grad = k @ a - 1 / a
        if np.linalg.norm(grad) <= 1e-12 * np.linalg.norm(1 / a):
            break
        step = np.linalg.solve(k + np.diag(1 / a**2), grad)
        if float(grad @ step) < 1e-6 and np.all(a - step > 0):
            # Newton decrement below 1e-3: the objective is self-concordant, so the full step
            # is in the quadratic region (Boyd & Vandenberghe 9.6.4); an Armijo test here would
            # compare changes of ~1e-16 with float rounding and stop at a residual of ~1e-8
            a = a - step
            continue
        t, now = 1.0, objective(a)
        for _ in range(_MAX_HALVINGS):
            trial = a - t * step
            if np.all(trial > 0) and objective(trial) <= now - 1e-4 * t * float(grad @ step):
                break
            t /= 2
        else:
            break  # no descent left at float precision
        a = a - t * step
    return torch.from_numpy(a / np.sqrt(scale))


class BargainingWeighting(GramianWeighting):
    """The Nash bargaining weights of a Gramian, as a torchjd weighting (no state, no clipping)."""

    @override
    def forward(self, stat: torch.Tensor, /) -> torch.Tensor:
        return bargaining_weights(stat).to(stat)


@WEIGHTINGS.register("nash_mtl")
class NashMtl(GradientAggregation):
    """The Nash bargaining solution: weights alpha with (G alpha)_t = 1 / alpha_t.

    Scale-invariant (the direction does not change when every gradient is scaled), and every
    task's share of the improvement is balanced by the product of utilities. Solved exactly
    (:func:`bargaining_weights`, Newton's method, residual < 1e-9 relative) and warm-started
    from the last solve; ``update_weights_every`` > 1 reuses the weights between solves, as the
    paper's code does. The direction is clipped to ``max_norm`` as there.

    Args:
        tasks: task names.
        max_norm: clip the aggregated gradient to this norm (0 = off).
        update_weights_every: solve for new weights every this many steps.
        optim_niter: Newton iterations at most per solve.
        gradients: "parameters" or "representation".
    """

    def __init__(
        self,
        tasks: Sequence[str],
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        optim_niter: int = 100,
        gradients: Gradients = "parameters",
    ) -> None:
        if max_norm < 0 or update_weights_every < 1 or optim_niter < 1:
            raise ValueError("max_norm >= 0, update_weights_every >= 1 and optim_niter >= 1")
        self.max_norm, self.update_every, self.niter = (
            float(max_norm),
            update_weights_every,
            optim_niter,
        )
        super().__init__(tasks, gradients)
        # the last solution (the warm start, reused between solves) and the steps taken
        self.register_buffer("solver_alpha", torch.ones(len(self.tasks), dtype=torch.float64))
        self.register_buffer("solver_steps", torch.zeros((), dtype=torch.int64))

    @override
    def gramian_weights(self, gramian: torch.Tensor) -> torch.Tensor:
        steps = int(self.solver_steps)
        if steps % self.update_every == 0:
            start = self.solver_alpha if steps else None
            self.solver_alpha.copy_(bargaining_weights(gramian, start, self.niter))
        self.solver_steps += 1
        alpha = self.solver_alpha.to(gramian.dtype)
        if self.max_norm > 0:  # |alpha @ G| from the Gramian: also right for representations
            norm = float(torch.sqrt((alpha @ gramian @ alpha).clamp_min(0)))
            if norm > self.max_norm:
                alpha = alpha * (self.max_norm / norm)
        return alpha

    @override
    def make_aggregator(self) -> Aggregator:
        return GramianWeightedAggregator(BargainingWeighting())
