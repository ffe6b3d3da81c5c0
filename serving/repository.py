"""The model repository: discover models and versions, load and check them, hot-reload.

Layout (Triton's): ``ROOT/NAME/VERSION/{model.onnx, manifest.json}``. Each version is loaded
with its manifest, checked against the graph's real inputs and outputs, warmed up, and only then
made visible. A new version directory is loaded beside the serving ones and swapped in
atomically; requests already running keep the version object they started with. A version that
fails to load is logged, counted, and skipped (retried only when its directory changes); the
versions already serving are untouched.

Model control follows Triton's modes: ``poll`` (scan every ``reload_interval_s``), ``none``
(load what is on disk once, at start) and ``explicit`` (load and unload only when asked through
the model repository extension; the models named at start load first, ``*`` meaning all).
Directories whose names are not versions (ASCII digits, >= 1) are ignored, with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from serving.backends.base import Backend
from serving.backends.factory import BackendFactory
from serving.batching import MicroBatcher, Observers, PassThrough, Timing
from serving.errors import BackendUnavailable, BadRequest, ModelLoadError, NotFound
from serving.manifest import Manifest, ManifestError, version_number
from serving.metrics import Metrics
from serving.statistics import VersionStatistics

ControlMode = Literal["poll", "none", "explicit"]

#: The protocol's name of each NumPy dtype a graph output may have (as backends report them).
DATATYPES = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8"}

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class BatchingConfig:
    """The batcher's part of the settings."""

    max_batch_size: int = 8
    max_queue_delay_ms: float = 2.0
    max_queue_size: int = 64


@dataclass
class ModelVersion:
    """One loaded, checked, warmed-up version, ready to serve."""

    name: str
    version: int
    path: Path
    manifest: Manifest
    backend: Backend
    batcher: MicroBatcher | PassThrough
    stats: VersionStatistics
    loaded_at: float = field(default_factory=time.time)

    async def infer(
        self, images: np.ndarray, outputs: Sequence[str], timing: Timing | None = None
    ) -> dict[str, np.ndarray]:
        """One batched forward pass over N×3×H×W images; the graph ``outputs`` by ONNX name."""
        return await self.batcher.submit({self.manifest.input.name: images}, outputs, timing)


def check_against_graph(manifest: Manifest, backend: Backend) -> None:
    """Fail unless the graph's input and outputs are exactly what the manifest says."""
    inp = manifest.input
    graph_inputs = {i.name: i for i in backend.inputs}
    if list(graph_inputs) != [inp.name]:
        raise ModelLoadError(
            f"manifest input {inp.name!r} but the graph's inputs are {list(graph_inputs)}"
        )
    shape = graph_inputs[inp.name].shape
    expected = (inp.channels, inp.height, inp.width)
    if len(shape) != 4 or any(
        s is not None and s != e for s, e in zip(shape[1:], expected, strict=True)
    ):
        raise ModelLoadError(f"graph input shape {shape} does not fit the manifest's {expected}")
    graph_outputs = {o.name: o for o in backend.outputs}
    wanted = manifest.graph_outputs
    missing = [name for name, _, _ in wanted if name not in graph_outputs]
    if missing:
        raise ModelLoadError(
            f"manifest outputs {missing} are not in the graph (it has {sorted(graph_outputs)})"
        )
    for name, dtype, want in wanted:
        info = graph_outputs[name]
        got = info.shape[1:]
        if len(got) != len(want) or any(
            g is not None and g != w for g, w in zip(got, want, strict=True)
        ):
            raise ModelLoadError(f"output {name!r}: graph shape {got} but manifest says {want}")
        if info.dtype != DATATYPES[dtype]:
            raise ModelLoadError(
                f"output {name!r}: graph type {info.dtype} but manifest says {DATATYPES[dtype]}"
            )


async def open_version(
    path: Path,
    backend_factory: BackendFactory,
    warm_up_batch: int = 1,
    name: str | None = None,
    version: int | None = None,
    max_batch_size: int | None = None,
) -> tuple[Manifest, Backend]:
    """Load one version directory: its manifest, a backend, checked against the graph, warm.

    ``name`` and ``version``, when given, must match the manifest (the directory's names).
    The warm-up runs batch 1 and ``warm_up_batch`` (at most the manifest's max batch size), or
    ``max_batch_size`` when given (a batch size that replaces the manifest's).
    Raises ModelLoadError for a broken version and BackendUnavailable for a backend that
    cannot be reached yet.
    """
    try:
        manifest = Manifest.load(path / MANIFEST_FILE)
    except ManifestError as e:
        raise ModelLoadError(str(e)) from e
    if (name is not None and manifest.name != name) or (
        version is not None and manifest.version != version
    ):
        raise ModelLoadError(
            f"{path}: manifest says {manifest.name}/{manifest.version}, "
            f"directory says {name}/{version}"
        )
    if not (path / MODEL_FILE).is_file():
        raise ModelLoadError(f"{path}: {MODEL_FILE} is missing")
    backend = await asyncio.to_thread(backend_factory, path / MODEL_FILE, manifest)
    try:
        check_against_graph(manifest, backend)
        batch = max_batch_size or min(warm_up_batch, manifest.max_batch_size)
        await warm_up(manifest, backend, batch)
    except (ModelLoadError, BackendUnavailable):
        await backend.close()
        raise
    except Exception as e:
        await backend.close()
        raise ModelLoadError(f"{path}: warm-up failed: {e}") from e
    return manifest, backend


async def warm_up(manifest: Manifest, backend: Backend, max_batch: int) -> None:
    """Run zero images at batch 1 and at ``max_batch``; check every output's shape."""
    inp = manifest.input
    names = [name for name, _, _ in manifest.graph_outputs]
    for n in sorted({1, max_batch}):
        x = np.zeros((n, inp.channels, inp.height, inp.width), np.float32)
        out = await backend.infer({inp.name: x}, names)
        for name, dtype, shape in manifest.graph_outputs:
            want = (n, *shape)
            if tuple(out[name].shape) != want or out[name].dtype != np.dtype(dtype):
                raise ModelLoadError(
                    f"warm-up: output {name!r} is {out[name].dtype} {out[name].shape}, "
                    f"expected {dtype} {want}"
                )


def _signature(path: Path) -> tuple[float, ...]:
    """Changes when a version directory's content changes (to retry a failed load)."""
    try:
        return (*sorted(p.stat().st_mtime for p in path.iterdir()), path.stat().st_mtime)
    except OSError:
        return ()


class ModelRepository:
    """Models and versions under a root directory, loaded and kept current."""

    def __init__(
        self,
        root: Path,
        backend_factory: BackendFactory,
        batching: BatchingConfig,
        metrics: Metrics,
        max_versions: int = 2,
        control: ControlMode = "poll",
        startup_models: Sequence[str] = (),
    ) -> None:
        """Serve ``root``; ``backend_factory`` opens a model file (ONNX Runtime by default).

        ``control`` is the model control mode; ``startup_models`` (explicit mode) the models
        loaded at start, ``*`` for every model on disk (none by default, as Triton).
        """
        self.root = Path(root)
        self.backend_factory = backend_factory
        self.batching = batching
        self.metrics = metrics
        self.max_versions = max_versions
        self.control = control
        # the models this repository serves: every one on disk (None), or those asked for
        self._wanted: set[str] | None = None
        if control == "explicit" and "*" not in startup_models:
            self._wanted = set(startup_models)
        self._ignored: set[Path] = set()
        self._unloaded: set[str] = set()  # unloaded on request (and not loaded since)
        self._max_batch: dict[str, int] = {}  # per-model max_batch_size set by a load's config
        self._models: dict[str, dict[int, ModelVersion]] = {}
        self._failed: dict[tuple[str, int], tuple[tuple[float, ...], str]] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()
        # A request holding a version object (decoding its images, say) gets this long to
        # submit and finish before a retired version is closed.
        self.retire_grace_s = 10.0

    # ---- queries ------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Models with at least one loaded version."""
        return sorted(n for n, v in self._models.items() if v)

    def versions(self, name: str) -> list[int]:
        """Loaded versions of ``name``, oldest first."""
        return sorted(self._models.get(name, {}))

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        """The newest loaded version of ``name``, or the pinned ``version``."""
        versions = self._models.get(name)
        if not versions:
            raise NotFound(
                f"Request for unknown model: {name!r} is not found; "
                f"models: {', '.join(self.names()) or 'none'}"
            )
        if version is None:
            return versions[max(versions)]
        if version not in versions:
            raise NotFound(
                f"model {name!r} has no loaded version {version}; "
                f"versions: {', '.join(map(str, sorted(versions)))}"
            )
        return versions[version]

    def failures(self) -> dict[str, str]:
        """Versions that failed to load, with the reason."""
        return {f"{n}/{v}": why for (n, v), (_, why) in self._failed.items()}

    def ready(self) -> bool:
        """True when every model served has a version loaded (in explicit mode, none may be)."""
        if self.control == "explicit" and self._wanted is not None and not self._wanted:
            return True
        return bool(self._models) and all(self._models.values())

    def on_disk(self) -> list[str]:
        """Every model directory in the repository, loaded or not."""
        return sorted(self._on_disk())

    def not_serving(self) -> dict[str, bool]:
        """Models on disk not served, each with whether it was unloaded on request."""
        return {n: n in self._unloaded for n in self.on_disk() if n not in self._models}

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self, reload_interval_s: float = 0.0) -> None:
        """Load what is on disk; then, if asked, poll for changes every ``reload_interval_s``."""
        if not self.root.is_dir():
            raise ModelLoadError(f"model repository not found: {self.root}")
        await self.refresh()
        if reload_interval_s > 0 and self.control == "poll":
            self._task = asyncio.get_running_loop().create_task(self._poll(reload_interval_s))

    async def stop(self) -> None:
        """Stop polling, drain and close every version."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._retiring):
            task.cancel()
        for versions in self._models.values():
            for mv in versions.values():
                await self._close(mv)
        self._models.clear()

    async def _poll(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
            except Exception:  # the poller must survive anything one scan throws
                log.exception("model repository scan failed")

    def _on_disk(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for model_dir in sorted(self.root.iterdir()):
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            versions = []
            for p in model_dir.iterdir():
                if not p.is_dir():
                    continue
                number = version_number(p.name)
                if number is not None:
                    versions.append(number)
                elif p not in self._ignored:
                    self._ignored.add(p)  # said once, not at every scan
                    log.warning(
                        "ignoring %s: a version directory is named with ASCII digits (>= 1)", p
                    )
            found[model_dir.name] = sorted(versions)
        return found

    async def load(self, name: str, max_batch_size: int | None = None) -> None:
        """Load, or reload, ``name``'s newest versions from disk: explicit mode only.

        ``max_batch_size`` (from a load request's config) replaces the configured one for this
        model; the graph must then run at that batch size (the warm-up checks it).
        """
        self._explicit_only("load")
        if name not in self._on_disk():
            raise BadRequest(
                f"failed to load {name!r}: no such model in the repository; "
                f"models: {', '.join(self.on_disk()) or 'none'}"
            )
        if self._wanted is not None:
            self._wanted.add(name)
        self._unloaded.discard(name)
        if max_batch_size is not None:
            self._max_batch[name] = max_batch_size
        await self.refresh(only=name, reload=True)
        if not self._models.get(name):
            why = "; ".join(
                f"version {v}: {reason}"
                for (n, v), (_, reason) in self._failed.items()
                if n == name
            )
            raise BadRequest(f"failed to load {name!r}: {why or 'no version could be loaded'}")

    async def unload(self, name: str) -> None:
        """Stop serving ``name`` (its versions close once their requests finish)."""
        self._explicit_only("unload")
        async with self._lock:
            if self._wanted is None:
                self._wanted = set(self._models)
            self._wanted.discard(name)
            if name in self._models:
                self._unloaded.add(name)
            for mv in self._models.pop(name, {}).values():
                log.info("unloading %s version %d", name, mv.version)
                self._retire(mv)
            self.metrics.loaded.labels(name).set(0)

    def _explicit_only(self, what: str) -> None:
        if self.control != "explicit":
            raise BadRequest(
                f"explicit model {what} is not allowed: the model control mode is "
                f"{self.control!r} (start the server with POLYHEAD_MODEL_CONTROL_MODE=explicit)"
            )

    async def refresh(self, only: str | None = None, reload: bool = False) -> None:
        """Bring the loaded set in line with the disk: load new versions, drop removed ones.

        Per model, the newest ``max_versions`` versions that load successfully serve; a version
        that fails leaves the older ones in place. ``only`` limits the scan to one model;
        ``reload`` loads its versions again even when loaded (each swapped in when ready).
        """
        async with self._lock:
            on_disk = {
                n: v
                for n, v in self._on_disk().items()
                if (self._wanted is None or n in self._wanted) and only in (None, n)
            }
            for name, versions in on_disk.items():
                current = self._models.setdefault(name, {})
                keep: list[int] = []
                for v in reversed(versions):
                    if len(keep) >= self.max_versions:
                        break
                    if v not in current or reload:
                        await self._try_load(name, v, reload)
                    if v in current:
                        keep.append(v)
                for v in [v for v in current if v not in keep]:
                    log.info("retiring %s version %d", name, v)
                    self._retire(current.pop(v))
                self.metrics.loaded.labels(name).set(len(current))
            for name in [n for n in self._models if n not in on_disk and only in (None, n)]:
                for mv in self._models.pop(name).values():
                    self._retire(mv)

    async def _try_load(self, name: str, version: int, reload: bool = False) -> None:
        path = self.root / name / str(version)
        sig = _signature(path)
        failed = self._failed.get((name, version))
        if failed is not None and failed[0] == sig and not reload:
            return
        try:
            mv = await self._load(name, version, path)
        except BackendUnavailable as e:
            # transient (a Triton server not up yet): retried at every scan, nothing recorded
            self.metrics.loads.labels(name, "unavailable").inc()
            log.warning("cannot load %s version %d yet: %s", name, version, e.message)
            return
        except ModelLoadError as e:
            self._failed[(name, version)] = (sig, e.message)
            self.metrics.loads.labels(name, "failure").inc()
            log.error("rejected %s version %d: %s", name, version, e.message)
            return
        self._failed.pop((name, version), None)
        old = self._models.setdefault(name, {}).get(version)
        self._models[name][version] = mv  # visible only now, fully warmed
        if old is not None:
            self._retire(old)
        self.metrics.loads.labels(name, "success").inc()
        log.info("serving %s version %d on %s", name, version, mv.backend.device)

    async def _load(self, name: str, version: int, path: Path) -> ModelVersion:
        b = self.batching
        wanted_batch = self._max_batch.get(name)
        manifest, backend = await open_version(
            path,
            self.backend_factory,
            warm_up_batch=b.max_batch_size,
            name=name,
            version=version,
            max_batch_size=wanted_batch,
        )
        max_batch = wanted_batch or min(b.max_batch_size, manifest.max_batch_size)
        stats = VersionStatistics(name, version)
        observer = Observers(self.metrics.observer(name), stats)
        batcher: MicroBatcher | PassThrough
        if getattr(backend, "batches_itself", False):
            # the backend (Triton's dynamic batcher) merges requests: one call per request
            batcher = PassThrough(
                backend.infer,
                max_batch_size=wanted_batch or manifest.max_batch_size,
                max_in_flight=b.max_queue_size,
                observer=observer,
            )
        else:
            batcher = MicroBatcher(
                backend.infer,
                max_batch_size=max_batch,
                max_queue_delay_ms=b.max_queue_delay_ms,
                max_queue_size=b.max_queue_size,
                observer=observer,
            )
        return ModelVersion(name, version, path, manifest, backend, batcher, stats)

    def _retire(self, mv: ModelVersion) -> None:
        """Close a version that no longer serves, after requests that hold it have finished."""

        async def later() -> None:
            await asyncio.sleep(self.retire_grace_s)
            await self._close(mv)

        task = asyncio.get_running_loop().create_task(later())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _close(self, mv: ModelVersion) -> None:
        await mv.batcher.stop()
        await mv.backend.close()
