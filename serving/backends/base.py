"""The backend protocol: one forward pass of a batch, plus readiness and metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """Name, element type and shape (None for a dynamic axis) of a model input or output."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


class Backend(Protocol):
    """Runs a model. Implementations: ONNX Runtime in process, Triton over the network."""

    @property
    def inputs(self) -> list[TensorInfo]:
        """The model's inputs as the runtime reports them."""
        ...

    @property
    def outputs(self) -> list[TensorInfo]:
        """The model's outputs as the runtime reports them."""
        ...

    @property
    def device(self) -> str:
        """Where it runs, as the runtime reports it (e.g. the ONNX Runtime provider in use)."""
        ...

    def ready(self) -> bool:
        """True when it can serve now."""
        ...

    async def infer(
        self, batch: dict[str, np.ndarray], outputs: list[str]
    ) -> dict[str, np.ndarray]:
        """One forward pass over ``batch``; returns the requested ``outputs`` by name."""
        ...

    async def close(self) -> None:
        """Release resources."""
        ...
