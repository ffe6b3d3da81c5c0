"""Dynamic weight averaging (Liu, Johns and Davison, CVPR 2019, the MTAN paper)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from typing_extensions import override

from training.weighting.base import WEIGHTINGS, BackwardContext, LossWeighting


@WEIGHTINGS.register("dwa")
class DynamicWeightAverage(LossWeighting):
    """w_t = T * softmax_t(r_t / temperature), r_t = L_t(e-1) / L_t(e-2) of epoch mean losses.

    Tasks whose loss falls slowly get more weight. For the first two epochs, when the ratio is
    not defined yet, every weight is 1. Limits: reacts one epoch late; sensitive to loss noise on
    tiny epochs.

    Args:
        tasks: task names.
        temperature: softness of the softmax (the paper uses 2).
    """

    def __init__(self, tasks: Sequence[str], temperature: float = 2.0) -> None:
        super().__init__(tasks)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        # Epoch mean losses of the two previous epochs, and how many epochs were recorded.
        self.register_buffer("history", torch.zeros(2, len(self.tasks), dtype=torch.float64))
        self.register_buffer("epochs_seen", torch.zeros((), dtype=torch.int64))

    def current_weights(self) -> torch.Tensor:
        """The weights for this epoch (ones until two epochs have been recorded)."""
        n = len(self.tasks)
        if int(self.epochs_seen) < 2:
            return torch.ones(n, dtype=torch.float64)
        ratio = self.history[1] / self.history[0].clamp_min(1e-12)
        return n * torch.softmax(ratio / self.temperature, dim=0)

    @override
    def combine(
        self, losses: dict[str, torch.Tensor], ctx: BackwardContext
    ) -> dict[str, torch.Tensor]:
        w = self.current_weights()
        return {t: float(w[i]) * losses[t] for i, t in enumerate(self.tasks)}

    @override
    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        latest = torch.tensor([mean_losses[t] for t in self.tasks], dtype=torch.float64)
        self.history[0] = self.history[1]
        self.history[1] = latest
        self.epochs_seen += 1
