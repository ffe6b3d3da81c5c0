"""Nash-MTL (Navon et al., ICML 2022, "Multi-Task Learning as a Bargaining Game")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchjd.aggregation import Aggregator, NashMTL
from typing_extensions import override

from training.weighting.base import WEIGHTINGS
from training.weighting.gradient import GradientAggregation, Gradients


@WEIGHTINGS.register("nash_mtl")
class NashMtl(GradientAggregation):
    """The Nash bargaining solution: weights alpha with (G alpha)_t = 1 / alpha_t.

    Scale-invariant, and every task's share of the improvement is balanced by the product of
    utilities. Solved with a sequence of convex problems (cvxpy + ECOS). Limits: the slowest
    method here; ``update_weights_every`` > 1 reuses the weights between solves.

    Args:
        tasks: task names.
        max_norm: clip the aggregated gradient to this norm (0 = off).
        update_weights_every: solve for new weights every this many steps.
        optim_niter: iterations of the sequential convex solver.
        gradients: "parameters" or "representation".
    """

    def __init__(
        self,
        tasks: Sequence[str],
        max_norm: float = 1.0,
        update_weights_every: int = 1,
        optim_niter: int = 20,
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
        # torchjd keeps this state in plain attributes: mirrored here for checkpoints
        self.register_buffer("solver_alpha", torch.ones(len(self.tasks), dtype=torch.float64))
        self.register_buffer("solver_steps", torch.zeros((), dtype=torch.int64))

    @override
    def _combine(self, jacobian: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        solver = self.aggregator.weighting
        if int(self.solver_steps) > 0 and solver.step == 0:  # resumed: restore the solver's state
            solver.prvs_alpha = self.solver_alpha.numpy().copy()
            solver._init_optim_problem()
            solver.step = float(self.solver_steps)
        out = super()._combine(jacobian)
        self.solver_alpha.copy_(torch.from_numpy(np.asarray(solver.prvs_alpha, dtype=np.float64)))
        self.solver_steps.fill_(int(solver.step))
        return out

    @override
    def make_aggregator(self) -> Aggregator:
        return NashMTL(
            n_tasks=len(self.tasks),
            max_norm=self.max_norm,
            update_weights_every=self.update_every,
            optim_niter=self.niter,
        )
