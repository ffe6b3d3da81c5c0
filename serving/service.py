"""The protocol-neutral core: validate, pre-process, batch, run once, decode.

Every API (``/v1``, v2 over HTTP and gRPC) goes through ``PredictionService.run``: prepare the
inputs, bound the response, one forward pass through the model's batcher, decode; each request
is counted once in the metrics and once in its version's statistics. Batch scoring shares the
pre- and post-processing functions. It knows nothing about HTTP or gRPC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from serving.batching import Timing
from serving.decoding import V1_SHRINK, check_budget, decode_predictions, needed_outputs
from serving.decoding import response_bytes as v1_response_bytes
from serving.errors import BadRequest, InvalidImage, NotFound, PayloadTooLarge, PolyheadError
from serving.geometry import Geometry
from serving.kinds import DecodeOptions
from serving.manifest import InputSpec, Manifest, TaskSpec
from serving.metrics import Metrics
from serving.preprocess import preprocess
from serving.repository import ModelRepository, ModelVersion

T = TypeVar("T")

#: Default output budget: a response may not exceed this (POLYHEAD_MAX_RESPONSE_BYTES).
DEFAULT_MAX_RESPONSE_BYTES = 64 * 1024 * 1024


#: Responses up to this size are decoded on the event loop: at the model's grid that takes a
#: fraction of a millisecond, less than the two thread switches of a hop to the codec threads
#: (whose cost, on two busy cores, is mostly waiting for the GIL: seen in py-spy profiles).
INLINE_DECODE_BYTES = 1 << 20


@dataclass(frozen=True)
class RequestLimits:
    """What an image may be, and how large a response may get."""

    max_pixels: int = 40_000_000
    min_side: int = 8
    max_images: int = 64
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


def select_tasks(manifest: Manifest, requested: Sequence[str] | None) -> list[TaskSpec]:
    """The manifest's tasks, or the requested subset in request order; unknown names fail."""
    if not requested:
        return list(manifest.tasks)
    known = {t.name: t for t in manifest.tasks}
    unknown = [t for t in requested if t not in known]
    if unknown:
        raise NotFound(f"unknown task(s) {unknown}; tasks: {', '.join(known)}")
    return [known[t] for t in dict.fromkeys(requested)]


def prepare_image(
    data: bytes, spec: InputSpec, limits: RequestLimits, fast: bool = True
) -> tuple[np.ndarray, Geometry]:
    """Encoded image -> (3×H×W model input, geometry), refusing images the limits forbid."""
    x, g = preprocess(data, spec, limits.max_pixels, fast=fast)
    h, w = g.original
    if min(h, w) < limits.min_side:
        raise InvalidImage(f"image is {w}x{h}; each side must be at least {limits.min_side} pixels")
    return x, g


@dataclass(frozen=True)
class Plan(Generic[T]):
    """What a request produces, known once its inputs are prepared."""

    outputs: list[str]  # the graph outputs to fetch
    size: int  # an upper bound on the response's bytes (held to the output budget)
    shrink: str  # how the client can make the response smaller, for the 413 message
    decode: Callable[[dict[str, np.ndarray]], T]  # the graph outputs -> the response


Prepared = tuple[np.ndarray, list[Geometry]]


class PredictionService:
    """Predict every (or the requested) task for a list of encoded images in one forward pass."""

    def __init__(
        self,
        repository: ModelRepository,
        limits: RequestLimits,
        metrics: Metrics,
        cpu_workers: int = 2,
    ) -> None:
        """Serve models from ``repository``.

        Image decoding and output encoding run on ``cpu_workers`` threads: more threads than
        cores only fight over the GIL and over the cores the model needs.
        """
        self.repository = repository
        self.limits = limits
        self.metrics = metrics
        self._cpu = ThreadPoolExecutor(max_workers=cpu_workers, thread_name_prefix="codec")

    async def _on_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._cpu, fn, *args)

    def close(self) -> None:
        """Stop the codec threads."""
        self._cpu.shutdown(wait=False)

    def _prepare(self, data: bytes, mv: ModelVersion) -> tuple[np.ndarray, Geometry]:
        return prepare_image(data, mv.manifest.input, self.limits)

    async def prepare(
        self, images: Sequence[bytes], mv: ModelVersion
    ) -> tuple[np.ndarray, list[Geometry]]:
        """Decode and pre-process encoded images into one N×3×H×W batch (on the codec threads).

        The first bad image fails the whole request, its index named when there are several.
        """
        if not images:
            raise BadRequest("no image in the request")
        if len(images) > self.limits.max_images:
            raise PayloadTooLarge(
                f"{len(images)} images in one request; the limit is {self.limits.max_images}"
            )
        prepared = await asyncio.gather(
            *(self._on_cpu(self._prepare, data, mv) for data in images),
            return_exceptions=True,
        )
        for i, p in enumerate(prepared):
            if isinstance(p, PolyheadError):
                prefix = f"image {i}: " if len(images) > 1 else ""
                raise type(p)(prefix + p.message) from p
            if isinstance(p, BaseException):
                raise p
        inputs = [p for p in prepared if not isinstance(p, BaseException)]
        return np.stack([x for x, _ in inputs]), [g for _, g in inputs]

    async def _forward(
        self, mv: ModelVersion, batch: np.ndarray, outputs: Sequence[str], timing: Timing
    ) -> dict[str, np.ndarray]:
        """The one forward pass of a request (through the model's batcher), counted once."""
        out = await mv.infer(batch, outputs, timing)
        self.metrics.images.labels(mv.name).inc(len(batch))
        return out

    async def run(
        self,
        mv: ModelVersion,
        inputs: Sequence[bytes] | Prepared,
        plan: Callable[[list[Geometry]], Plan[T]],
    ) -> T:
        """One request, counted once: prepare, plan, check the budget, forward once, decode.

        ``inputs`` are encoded images, or a checked N×3×H×W batch with its geometries.
        """
        started = time.perf_counter()
        input_s = output_s = 0.0
        timing = Timing()
        ok = False
        try:
            if isinstance(inputs, tuple):
                batch, geometries = inputs
            else:
                batch, geometries = await self.prepare(inputs, mv)
            input_s = time.perf_counter() - started
            p = plan(geometries)
            check_budget(p.size, self.limits.max_response_bytes, p.shrink)
            raw = await self._forward(mv, batch, p.outputs, timing)
            decoding = time.perf_counter()
            if p.size <= INLINE_DECODE_BYTES:
                result = p.decode(raw)
            else:
                result = await self._on_cpu(p.decode, raw)
            output_s = time.perf_counter() - decoding
            ok = True
            return result
        finally:
            total = time.perf_counter() - started
            mv.stats.request(ok, total, input_s, timing.queue_s, timing.infer_s, output_s)

    async def predict(
        self,
        model: str,
        images: Sequence[bytes],
        tasks: Sequence[str] | None = None,
        version: int | None = None,
        options: DecodeOptions | None = None,
    ) -> dict[str, Any]:
        """Decoded predictions of every selected task for every image, in request order."""
        mv = self.repository.get(model, version)
        selected = select_tasks(mv.manifest, tasks)
        opts = options or DecodeOptions()

        def plan(geometries: list[Geometry]) -> Plan[list[dict[str, Any]]]:
            return Plan(
                needed_outputs(selected),
                v1_response_bytes(selected, geometries, opts),
                V1_SHRINK,
                lambda raw: decode_predictions(raw, selected, geometries, opts),
            )

        predictions = await self.run(mv, images, plan)
        return {
            "model": mv.name,
            "version": mv.version,
            "tasks": [t.name for t in selected],
            "predictions": predictions,
        }
