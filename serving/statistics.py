"""Per model version statistics, in the shape of Triton's statistics extension.

Every request of every API (``/v1``, v2 HTTP and gRPC) reports here once, from the one path to
the forward pass in ``serving.service``; the batcher reports each forward pass. The figures are
the ones Triton's ``ModelStatistics`` names:

- ``inference_count``: images (batch rows) run; ``execution_count``: forward passes.
- per request: ``success`` / ``fail`` (count, total duration), ``queue`` (waiting for a batch),
  ``compute_input`` (decoding the images, or checking the tensor), ``compute_infer`` (the
  forward pass the request was part of), ``compute_output`` (decoding the outputs).
- per batch size: ``compute_input`` (assembling the batch), ``compute_infer``,
  ``compute_output`` (splitting it back per request).

Durations are kept in nanoseconds, as Triton reports them. Everything runs on the event loop,
so plain integers suffice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    """A count and a total duration in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        """Record ``count`` events that took ``seconds`` together."""
        self.count += count
        self.ns += max(int(seconds * 1e9), 0)

    def as_dict(self) -> dict[str, int]:
        """``{"count": ..., "ns": ...}``."""
        return {"count": self.count, "ns": self.ns}


@dataclass
class BatchDurations:
    """Triton's ``InferBatchStatistics`` of one batch size."""

    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


PHASES = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class VersionStatistics:
    """What one model version has done since it was loaded."""

    name: str
    version: int
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    phases: dict[str, Duration] = field(default_factory=lambda: {p: Duration() for p in PHASES})
    batches: dict[int, BatchDurations] = field(default_factory=dict)

    # ---- from the batcher ----------------------------------------------------------------

    def batch(self, rows: int, assemble_s: float, infer_s: float, split_s: float) -> None:
        """One forward pass of ``rows`` rows: assembling, running and splitting it."""
        self.inference_count += rows
        self.execution_count += 1
        b = self.batches.setdefault(rows, BatchDurations())
        b.compute_input.add(assemble_s)
        b.compute_infer.add(infer_s)
        b.compute_output.add(split_s)

    def job(self, queue_s: float, infer_s: float) -> None:
        """Nothing: a request's phases are recorded with the request (``request``)."""

    # ---- from the service ----------------------------------------------------------------

    def request(
        self,
        ok: bool,
        total_s: float,
        input_s: float = 0.0,
        queue_s: float = 0.0,
        infer_s: float = 0.0,
        output_s: float = 0.0,
    ) -> None:
        """One request finished (``ok``) or failed after its model version was resolved.

        A success adds to every phase at once, so their counts always agree (perf_analyzer
        requires it of a snapshot taken at any moment); a failure adds to ``fail`` only.
        """
        if ok:
            for phase, seconds in (
                ("success", total_s),
                ("compute_input", input_s),
                ("queue", queue_s),
                ("compute_infer", infer_s),
                ("compute_output", output_s),
            ):
                self.phases[phase].add(seconds)
        else:
            self.phases["fail"].add(total_s)
        self.last_inference_ms = int(time.time() * 1000)

    def as_dict(self) -> dict[str, Any]:
        """Triton's JSON form of ``ModelStatistics`` (counts as numbers, as its HTTP API)."""
        stats = {p: d.as_dict() for p, d in self.phases.items()}
        stats["cache_hit"] = Duration().as_dict()
        stats["cache_miss"] = Duration().as_dict()
        return {
            "name": self.name,
            "version": str(self.version),
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": stats,
            "response_stats": {},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.as_dict(),
                    "compute_infer": b.compute_infer.as_dict(),
                    "compute_output": b.compute_output.as_dict(),
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
