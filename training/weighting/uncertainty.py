"""Uncertainty weighting (Kendall, Gal and Cipolla, CVPR 2018)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext, LossWeighting


@WEIGHTINGS.register("uncertainty")
class Uncertainty(LossWeighting):
    """Learned homoscedastic uncertainty, in Kendall et al.'s form for each task's likelihood.

    With s_t = log sigma_t^2, a regression task (Gaussian likelihood) adds
    exp(-s_t) L_t / 2 + s_t / 2 (the paper's 1 / (2 sigma^2) L + log sigma), a classification
    task (softmax likelihood) exp(-s_t) L_t + s_t / 2 (1 / sigma^2 L + log sigma). The trainer
    names the regression tasks from their kinds (depth, normals). ``form: simple`` gives every
    task exp(-s_t) L_t + s_t instead (an earlier default here); ``form: libmtl`` every task the
    regression form, as LibMTL does. The s_t are parameters trained with the model (without
    weight decay). Limits: weights drift toward tasks with small losses; a loss that can go
    negative breaks the derivation.

    Args:
        tasks: task names.
        init: initial log-variance for every task.
        regression: the tasks with a regression loss (set by the trainer).
        form: "kendall" (default), "libmtl" or "simple".
    """

    def __init__(
        self,
        tasks: Sequence[str],
        init: float = 0.0,
        regression: Sequence[str] = (),
        form: str = "kendall",
    ) -> None:
        super().__init__(tasks)
        if form not in _FORMS:
            raise ValueError(f"form must be one of {', '.join(_FORMS)}, got {form!r}")
        unknown = sorted(set(regression) - set(self.tasks))
        if unknown:
            raise ValueError(f"regression names unknown tasks {unknown}; tasks: {self.tasks}")
        self.form = form
        self.log_vars = nn.Parameter(torch.full((len(self.tasks),), float(init)))
        # (factor on exp(-s) L, factor on s) per task
        coefficients = [_FORMS[form](t in set(regression)) for t in self.tasks]
        # derived from the config, not state: not in checkpoints
        factors = torch.tensor(coefficients)
        self.register_buffer("loss_factor", factors[:, 0].contiguous(), persistent=False)
        self.register_buffer("log_var_factor", factors[:, 1].contiguous(), persistent=False)

    @override
    def combine(
        self, losses: dict[str, torch.Tensor], ctx: BackwardContext
    ) -> dict[str, torch.Tensor]:
        s, a, b = self.log_vars, self.loss_factor, self.log_var_factor
        return {
            t: a[i] * torch.exp(-s[i]) * losses[t] + b[i] * s[i] for i, t in enumerate(self.tasks)
        }

    @override
    def backward(self, losses: dict[str, torch.Tensor], ctx: BackwardContext) -> dict[str, float]:
        super().backward(losses, ctx)
        # Report the factor on each loss, not the ratio that includes the regulariser.
        factors = self.loss_factor * torch.exp(-self.log_vars)
        return {t: float(factors[i].detach()) for i, t in enumerate(self.tasks)}


_FORMS = {
    "kendall": lambda regression: (0.5, 0.5) if regression else (1.0, 0.5),
    "libmtl": lambda regression: (0.5, 0.5),
    "simple": lambda regression: (1.0, 1.0),
}
