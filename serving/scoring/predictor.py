"""One scoring worker: read and pre-process files, run a batch, decode it into rows.

The same class runs in the local pipeline and as a Ray Data actor. Pre- and post-processing are
the API's own functions (``serving.service.prepare_image`` and
``serving.decoding.decode_predictions``), so a scored row holds exactly what ``/v1`` returns for
the same image and options. A row whose prediction would exceed the output budget gets an
error instead (it names the option that shrinks it).
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from serving.backends.factory import backend_factory_for
from serving.decoding import (
    V1_SHRINK,
    check_budget,
    decode_predictions,
    needed_outputs,
    response_bytes,
)
from serving.errors import NotFound, PolyheadError
from serving.geometry import Geometry
from serving.kinds import DecodeOptions
from serving.manifest import Manifest, version_number
from serving.repository import open_version
from serving.scoring.columns import RowLayout
from serving.service import DEFAULT_MAX_RESPONSE_BYTES, RequestLimits, prepare_image, select_tasks
from serving.settings import Settings

log = logging.getLogger("polyhead.score")


@dataclass(frozen=True)
class ModelRef:
    """Which model version to score with, and how to reach it (picklable, for Ray actors)."""

    repo: str
    model: str
    version: int
    settings: dict[str, Any] = field(default_factory=dict)  # Settings fields (backend, ...)


@dataclass(frozen=True)
class ScoreOptions:
    """What to decode and how: the /v1 query parameters, plus the image limits."""

    tasks: tuple[str, ...] | None = None
    encoding: str = "float16"
    resolution: str = "model"
    max_side: int | None = None
    top_k: int = 5
    max_image_pixels: int = 40_000_000
    min_image_side: int = 8
    max_file_bytes: int = 256 * 1024 * 1024
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES  # per row

    @property
    def decode(self) -> DecodeOptions:
        """The decode options of the API."""
        return DecodeOptions(
            encoding=self.encoding,
            resolution=self.resolution,
            max_side=self.max_side,
            top_k=self.top_k,
            binary=True,
        )


@dataclass
class Prepared:
    """One input after reading and pre-processing: the model input, or why there is none."""

    index: int
    id: str
    path: str
    x: np.ndarray | None = None
    geometry: Geometry | None = None
    error: str | None = None


def resolve_version(repo: Path, model: str, version: int | None) -> int:
    """The version to score with: the given one, or the newest on disk."""
    if not repo.is_dir():
        raise NotFound(f"model repository not found: {repo} (pass --repo PATH)")
    model_dir = repo / model
    if not model_dir.is_dir():
        known = sorted(p.name for p in repo.iterdir() if p.is_dir())
        raise NotFound(f"unknown model {model!r} in {repo}; models: {', '.join(known) or 'none'}")
    versions = sorted(
        v for p in model_dir.iterdir() if p.is_dir() and (v := version_number(p.name)) is not None
    )
    if version is None:
        if not versions:
            raise NotFound(f"model {model!r} has no version in {model_dir}")
        return versions[-1]
    if version not in versions:
        raise NotFound(
            f"model {model!r} has no version {version}; versions: "
            f"{', '.join(map(str, versions)) or 'none'}"
        )
    return version


class Predictor:
    """Pre-process, infer and decode batches of image files with one model version."""

    def __init__(self, ref: ModelRef, options: ScoreOptions, io_threads: int = 0) -> None:
        """Load the model version (checked against its graph and warmed up, as the gateway does).

        ``io_threads`` (0: the number of cores) read and decode images in :meth:`__call__`.
        """
        self.ref = ref
        self.options = options
        self.settings = Settings(**ref.settings)
        self.limits = RequestLimits(
            options.max_image_pixels,
            options.min_image_side,
            max_response_bytes=options.max_response_bytes,
        )
        # One private event loop drives the backend (the Triton client is bound to the loop it
        # was made on); every call to the backend goes through it, from one thread at a time.
        self._loop = asyncio.new_event_loop()
        path = Path(ref.repo) / ref.model / str(ref.version)
        self.manifest, self.backend = self._run(
            open_version(
                path, backend_factory_for(self.settings), name=ref.model, version=ref.version
            )
        )
        self.tasks = select_tasks(self.manifest, options.tasks)
        self.outputs = needed_outputs(self.tasks)
        self.layout = RowLayout(self.manifest, self.tasks, options.decode)
        self._io_threads = io_threads or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None

    def _run(self, coro: Any) -> Any:
        return self._loop.run_until_complete(coro)

    @property
    def device(self) -> str:
        """Where the model runs."""
        return self.backend.device

    # ---- the three steps ---------------------------------------------------------------

    def prepare(self, index: int, id_: str, path: str) -> Prepared:
        """Read and pre-process one file; a file that cannot be scored gets its error instead."""
        item = Prepared(index, id_, path)
        try:
            size = os.path.getsize(path)
            if size > self.options.max_file_bytes:
                raise OSError(f"file is {size} bytes; the limit is {self.options.max_file_bytes}")
            with open(path, "rb") as f:
                data = f.read()
            x, g = prepare_image(data, self.manifest.input, self.limits)
            size = response_bytes(self.tasks, [g], self.options.decode)
            check_budget(size, self.limits.max_response_bytes, V1_SHRINK)
            item.x, item.geometry = x, g
        except PolyheadError as e:
            item.error = e.message
        except OSError as e:
            item.error = f"cannot read {path}: {e.strerror or e}"
        except Exception as e:  # a decoder tripping over a malformed file ends one row, not the run
            log.warning("unexpected error decoding %s", path, exc_info=True)
            item.error = f"cannot decode: {type(e).__name__}: {e}"
        return item

    def infer(self, items: list[Prepared]) -> dict[str, np.ndarray] | None:
        """One forward pass over the items that were prepared (None when none was)."""
        good = [i for i in items if i.x is not None]
        if not good:
            return None
        batch = np.stack([i.x for i in good if i.x is not None])
        return self._run(self._infer(batch))

    async def _infer(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return await self.backend.infer({self.manifest.input.name: batch}, self.outputs)

    def rows(
        self, items: list[Prepared], outputs: dict[str, np.ndarray] | None
    ) -> list[dict[str, Any]]:
        """Decode a batch into rows, in item order; items with an error get their error row."""
        good = [i for i in items if i.x is not None]
        decoded: list[dict[str, Any]] = []
        if good and outputs is not None:
            geometries = [i.geometry for i in good if i.geometry is not None]
            decoded = decode_predictions(outputs, self.tasks, geometries, self.options.decode)
        by_index = {i.index: d for i, d in zip(good, decoded, strict=True)}
        rows = []
        for item in items:
            row: dict[str, Any] = {
                "index": item.index,
                "id": item.id,
                "path": item.path,
                "model": self.manifest.name,
                "version": self.manifest.version,
                "error": item.error,
                "width": None,
                "height": None,
                **self.layout.empty_row(),
            }
            prediction = by_index.get(item.index)
            if prediction is not None:
                row["width"], row["height"] = prediction["width"], prediction["height"]
                for t in self.tasks:
                    cells = self.layout.task_cells(t, prediction["tasks"][t.name])
                    for column, cell in zip(self.layout.columns[t.name], cells, strict=True):
                        row[column.name] = cell
            rows.append(row)
        return rows

    # ---- Ray Data: one call per batch ----------------------------------------------------

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Score a batch of ``index``, ``id``, ``path`` columns; returns rows with ``index``."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._io_threads, thread_name_prefix="read")
        args = zip(
            (int(i) for i in batch["index"]),
            (str(i) for i in batch["id"]),
            (str(p) for p in batch["path"]),
            strict=True,
        )
        items = list(self._pool.map(lambda a: self.prepare(*a), args))
        rows = self.rows(items, self.infer(items))
        return pa.Table.from_pylist(rows, schema=self.schema_with_index())

    def schema_with_index(self) -> pa.Schema:
        """The row schema plus the input's position (how rows find their shard)."""
        return self.layout.schema.insert(0, pa.field("index", pa.int64(), nullable=False))

    def close(self) -> None:
        """Release the backend and threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)
        self._run(self.backend.close())
        self._loop.close()


def load_manifest(ref: ModelRef) -> Manifest:
    """The manifest of the version ``ref`` names (without loading the model)."""
    return Manifest.load(Path(ref.repo) / ref.model / str(ref.version) / "manifest.json")
