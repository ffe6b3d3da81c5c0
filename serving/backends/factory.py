"""Which backend opens a model version: ONNX Runtime in process, or a Triton server.

Shared by the gateway and batch scoring, so both choose the backend the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from serving.backends.base import Backend
from serving.manifest import Manifest
from serving.settings import Settings

#: Opens one model version: (path of model.onnx, its manifest) -> a backend.
BackendFactory = Callable[[Path, Manifest], Backend]


def onnxruntime_factory(settings: Settings) -> BackendFactory:
    """Open model files with ONNX Runtime as the settings say."""

    def make(path: Path, manifest: Manifest) -> Backend:
        from serving.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, settings.providers, settings.intra_op_threads)

    return make


def backend_factory_for(settings: Settings) -> BackendFactory:
    """ONNX Runtime in process, or a Triton server, per model as the settings say."""
    local = onnxruntime_factory(settings)

    def make(path: Path, manifest: Manifest) -> Backend:
        kind = settings.model_backends.get(manifest.name, settings.backend)
        if kind == "triton":
            from serving.backends.triton import TritonBackend

            return TritonBackend.connect(manifest, settings)
        return local(path, manifest)

    return make
