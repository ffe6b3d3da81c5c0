"""The protocol-neutral core: validate, pre-process, batch, run once, decode.

Routes (``serving.api``) and batch scoring call this; it knows nothing about HTTP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from serving.codecs import ENCODINGS
from serving.errors import BadRequest, InvalidImage, NotFound, PayloadTooLarge, PolyheadError
from serving.manifest import InputSpec, Manifest, TaskSpec
from serving.metrics import Metrics
from serving.postprocess import DecodeOptions, decode
from serving.preprocess import Geometry, preprocess
from serving.repository import ModelRepository, ModelVersion

T = TypeVar("T")


@dataclass(frozen=True)
class ImageLimits:
    """What an image may be."""

    max_pixels: int = 40_000_000
    min_side: int = 8
    max_images: int = 64


def select_tasks(manifest: Manifest, requested: Sequence[str] | None) -> list[TaskSpec]:
    """The manifest's tasks, or the requested subset in request order; unknown names fail."""
    if not requested:
        return list(manifest.tasks)
    known = {t.name: t for t in manifest.tasks}
    unknown = [t for t in requested if t not in known]
    if unknown:
        raise NotFound(f"unknown task(s) {unknown}; tasks: {', '.join(known)}")
    return [known[t] for t in dict.fromkeys(requested)]


def parse_options(encoding: str | None, resolution: str | None, top_k: int | None) -> DecodeOptions:
    """Validated decode options (bad values are a 400 naming the choices)."""
    enc = encoding or "float16"
    if enc not in ENCODINGS:
        raise BadRequest(f"encoding must be one of {', '.join(ENCODINGS)}, got {enc!r}")
    res = resolution or "original"
    if res not in ("original", "model"):
        raise BadRequest(f"resolution must be 'original' or 'model', got {res!r}")
    k = 5 if top_k is None else top_k
    if not 1 <= k <= 1000:
        raise BadRequest(f"top_k must be between 1 and 1000, got {k}")
    return DecodeOptions(encoding=enc, resolution=res, top_k=k)


def prepare_image(data: bytes, spec: InputSpec, limits: ImageLimits) -> tuple[np.ndarray, Geometry]:
    """Encoded image -> (3×H×W model input, geometry), refusing images the limits forbid."""
    x, g = preprocess(data, spec, limits.max_pixels)
    h, w = g.original
    if min(h, w) < limits.min_side:
        raise InvalidImage(f"image is {w}x{h}; each side must be at least {limits.min_side} pixels")
    return x, g


def decode_predictions(
    outputs: dict[str, np.ndarray],
    tasks: Sequence[TaskSpec],
    geometries: Sequence[Geometry],
    options: DecodeOptions,
) -> list[dict[str, Any]]:
    """Each image's decoded predictions, as ``/v1`` returns them: width, height and tasks.

    ``outputs`` holds every task's raw output for the batch, by task name, row i for image i.
    """
    return [
        {
            "width": g.original[1],
            "height": g.original[0],
            "tasks": {t.name: decode(outputs[t.name][i], t, g, options) for t in tasks},
        }
        for i, g in enumerate(geometries)
    ]


class PredictionService:
    """Predict every (or the requested) task for a list of encoded images in one forward pass."""

    def __init__(
        self,
        repository: ModelRepository,
        limits: ImageLimits,
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

    async def on_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run CPU-bound work (decoding, encoding) on the codec threads."""
        return await self._on_cpu(fn, *args)

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
        options = options or DecodeOptions()
        batch, geometries = await self.prepare(images, mv)
        outputs = await mv.infer(batch)  # the one forward pass
        self.metrics.images.labels(model).inc(len(images))

        predictions = await self._on_cpu(decode_predictions, outputs, selected, geometries, options)
        return {
            "model": mv.name,
            "version": mv.version,
            "tasks": [t.name for t in selected],
            "predictions": predictions,
        }
