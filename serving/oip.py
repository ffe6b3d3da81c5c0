"""The Open Inference Protocol (KServe v2) core, shared by the HTTP and gRPC front ends.

A model is described by its manifest. Its v2 inputs are the graph's own tensor input
(``image``, FP32 N×3×H×W, already normalised) or, instead, ``image_bytes``: BYTES, one encoded
image per row, pre-processed on the server exactly as ``/v1`` does. Its v2 outputs are the raw
task outputs (logits, as the graph computes them) and, on request only, decoded outputs named
``TASK.WHAT`` (``semseg.classes`` UINT8 H×W, ``depth.depth``, ``normals.normals`` H×W×3,
``edges.probability``, ``shapes.probabilities``, ``background.label`` ..., and for every task
``TASK.json``: the very JSON ``/v1`` returns for that task). Every request is one forward pass
through the model's dynamic batcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from serving.errors import BadRequest, NotFound, PayloadTooLarge
from serving.manifest import Manifest, TaskSpec
from serving.postprocess import (
    DecodeOptions,
    class_map,
    decode,
    depth_map,
    normal_map,
    probability_map,
    sigmoid,
    softmax,
)
from serving.preprocess import Geometry
from serving.repository import ModelVersion
from serving.service import PredictionService, parse_options
from serving.tensors import Tensor

ENCODED_INPUT = "image_bytes"
SERVER_NAME = "polyhead"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository"]

# (suffix, datatype, per-row shape given the task (None: H, W of the image), function)
ArrayFn = Callable[[np.ndarray, TaskSpec, Geometry, DecodeOptions], np.ndarray]


@dataclass(frozen=True)
class DecodedOutput:
    """One decoded output of a task kind."""

    suffix: str
    datatype: str
    shape: Callable[[TaskSpec], list[int]]  # per row; -1 for a dimension that varies
    fn: ArrayFn


def _label(labels: list[str] | None, i: int) -> bytes:
    return (labels[i] if labels else str(i)).encode()


_HW = lambda t: [-1, -1]  # noqa: E731 - dense maps follow the image size
_C = lambda t: [t.channels]  # noqa: E731
_ONE = lambda t: [1]  # noqa: E731

DECODED: dict[str, list[DecodedOutput]] = {
    "segmentation": [
        DecodedOutput("classes", "UINT8", _HW, lambda y, t, g, o: class_map(y, g, o)),
    ],
    "depth": [DecodedOutput("depth", "FP32", _HW, lambda y, t, g, o: depth_map(y, g, o))],
    "normals": [
        DecodedOutput(
            "normals", "FP32", lambda t: [-1, -1, 3], lambda y, t, g, o: normal_map(y, g, o)
        )
    ],
    "edges": [
        DecodedOutput("probability", "FP32", _HW, lambda y, t, g, o: probability_map(y, g, o))
    ],
    "saliency": [
        DecodedOutput("probability", "FP32", _HW, lambda y, t, g, o: probability_map(y, g, o))
    ],
    "classification": [
        DecodedOutput(
            "probabilities", "FP32", _C, lambda y, t, g, o: softmax(y).astype(np.float32)
        ),
        DecodedOutput(
            "label",
            "BYTES",
            _ONE,
            lambda y, t, g, o: np.array([_label(t.labels, int(np.argmax(y)))], dtype=object),
        ),
    ],
    "multilabel": [
        DecodedOutput(
            "probabilities", "FP32", _C, lambda y, t, g, o: sigmoid(y).astype(np.float32)
        ),
    ],
    "regression": [DecodedOutput("values", "FP32", _C, lambda y, t, g, o: y.astype(np.float32))],
}


def _json_output(y: np.ndarray, t: TaskSpec, g: Geometry, o: DecodeOptions) -> np.ndarray:
    return np.array([orjson.dumps(decode(y, t, g, o))], dtype=object)


@dataclass(frozen=True)
class OutputPlan:
    """How to produce one v2 output: a raw task output, or a decoded one."""

    name: str
    datatype: str
    shape: list[int]  # per row
    task: TaskSpec
    fn: ArrayFn | None = None  # None: the raw output as is

    @property
    def dense(self) -> bool:
        """True when the output is a map that follows the image size."""
        return -1 in self.shape


def output_plans(manifest: Manifest) -> dict[str, OutputPlan]:
    """Every output a v2 client may ask for, by name, raw outputs first."""
    plans: dict[str, OutputPlan] = {}
    for t in manifest.tasks:
        plans[t.output] = OutputPlan(t.output, "FP32", list(manifest.output_shape(t.name)), t)
    for t in manifest.tasks:
        for d in DECODED.get(t.kind, []):
            name = f"{t.name}.{d.suffix}"
            plans[name] = OutputPlan(name, d.datatype, d.shape(t), t, d.fn)
        plans[f"{t.name}.json"] = OutputPlan(f"{t.name}.json", "BYTES", [1], t, _json_output)
    return plans


@dataclass
class RequestedOutput:
    """An output the client asked for; ``binary`` None means the request's default."""

    name: str
    binary: bool | None = None


@dataclass
class InferRequest:
    """A v2 inference request, transport-neutral."""

    model: str
    version: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class InferResponse:
    """A v2 inference response, transport-neutral."""

    model: str
    version: str
    outputs: list[Tensor]
    id: str | None = None


def parse_version(version: str | None) -> int | None:
    """A URL/proto version string as an int (None or empty: the newest)."""
    if version is None or version == "":
        return None
    if not version.isdigit() or int(version) < 1:
        raise BadRequest(f"model version must be a positive integer, got {version!r}")
    return int(version)


def _dims(shape: tuple[int, ...] | list[int]) -> list[int]:
    return [int(d) for d in shape]


class InferenceProtocol:
    """Server and model metadata, readiness and inference, as the v2 protocol defines them."""

    def __init__(self, service: PredictionService) -> None:
        """Answer v2 calls from ``service``'s repository, batching and codecs."""
        self.service = service
        self.repository = service.repository

    # ---- metadata and readiness --------------------------------------------------------

    def server_metadata(self) -> dict[str, Any]:
        """``GET /v2``."""
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}

    def server_ready(self) -> bool:
        """Every model has a version serving, and its backend can serve."""
        return self.repository.ready() and all(
            self.repository.get(n).backend.ready() for n in self.repository.names()
        )

    def model(self, name: str, version: str | None) -> ModelVersion:
        """The loaded version (404 when unknown)."""
        return self.repository.get(name, parse_version(version))

    def model_ready(self, name: str, version: str | None) -> bool:
        """The version is loaded and its backend can serve now."""
        try:
            return self.model(name, version).backend.ready()
        except (NotFound, BadRequest):
            return False

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """``GET /v2/models/{name}[/versions/{v}]``."""
        mv = self.model(name, version)
        m = mv.manifest
        inp = m.input
        return {
            "name": mv.name,
            "versions": [str(v) for v in self.repository.versions(name)],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {
                    "name": inp.name,
                    "datatype": "FP32",
                    "shape": [-1, inp.channels, inp.height, inp.width],
                },
                {"name": ENCODED_INPUT, "datatype": "BYTES", "shape": [-1]},
            ],
            "outputs": [
                {"name": p.name, "datatype": p.datatype, "shape": [-1, *p.shape]}
                for p in output_plans(m).values()
            ],
        }

    def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        """Triton's model configuration (JSON form) of the raw model."""
        mv = self.model(name, version)
        m = mv.manifest
        inp = m.input
        return {
            "name": mv.name,
            "platform": "onnxruntime_onnx",
            "max_batch_size": mv.batcher.max_batch_size,
            "input": [
                {"name": inp.name, "data_type": "TYPE_FP32", "dims": [3, inp.height, inp.width]}
            ],
            "output": [
                {"name": t.output, "data_type": "TYPE_FP32", "dims": list(m.output_shape(t.name))}
                for t in m.tasks
            ],
            "dynamic_batching": {
                "max_queue_delay_microseconds": int(mv.batcher.max_delay * 1e6),
            },
        }

    def repository_index(self) -> list[dict[str, Any]]:
        """``POST /v2/repository/index``: every loaded version, ready."""
        index = [
            {"name": n, "version": str(v), "state": "READY", "reason": ""}
            for n in self.repository.names()
            for v in self.repository.versions(n)
        ]
        for key, why in self.repository.failures().items():
            n, v = key.rsplit("/", 1)
            index.append({"name": n, "version": v, "state": "UNAVAILABLE", "reason": why})
        return index

    # ---- inference ---------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        """Run one request: one forward pass, then the requested outputs."""
        mv = self.model(request.model, request.version)
        manifest = mv.manifest
        plans = output_plans(manifest)
        wanted = self._requested(request, plans)
        options = self._options(request.parameters)
        batch, geometries = await self._inputs(request.inputs, mv)
        raw = await mv.batcher.submit({manifest.input.name: batch})  # the one forward pass
        self.service.metrics.images.labels(mv.name).inc(len(geometries))
        if any(plans[n].fn is not None for n in wanted):
            outputs = await self.service.on_cpu(
                self._decode, [plans[n] for n in wanted], raw, geometries, options
            )
        else:
            outputs = [Tensor(n, "FP32", raw[n]) for n in wanted]
        return InferResponse(mv.name, str(mv.version), outputs, request.id)

    @staticmethod
    def _requested(request: InferRequest, plans: dict[str, OutputPlan]) -> list[str]:
        if not request.outputs:
            return [p.name for p in plans.values() if p.fn is None]
        names = [o.name for o in request.outputs]
        unknown = [n for n in names if n not in plans]
        if unknown:
            raise BadRequest(f"unknown output(s) {unknown}; outputs: {', '.join(plans)}")
        if len(set(names)) != len(names):
            raise BadRequest(f"an output is requested twice: {names}")
        return names

    @staticmethod
    def _options(parameters: dict[str, Any]) -> DecodeOptions:
        """Decoding options from request parameters (``resolution``, ``encoding``, ``top_k``)."""
        res, enc, k = (parameters.get(p) for p in ("resolution", "encoding", "top_k"))
        if res is not None and not isinstance(res, str):
            raise BadRequest("parameter 'resolution' must be a string")
        if enc is not None and not isinstance(enc, str):
            raise BadRequest("parameter 'encoding' must be a string")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool)):
            raise BadRequest("parameter 'top_k' must be an integer")
        return parse_options(enc, res, k)

    async def _inputs(
        self, inputs: list[Tensor], mv: ModelVersion
    ) -> tuple[np.ndarray, list[Geometry]]:
        spec = mv.manifest.input
        names = [t.name for t in inputs]
        expected = f"send either {spec.name!r} (FP32 [N,3,{spec.height},{spec.width}]) or "
        expected += f"{ENCODED_INPUT!r} (BYTES [N], encoded images)"
        if len(inputs) != 1:
            raise BadRequest(f"got inputs {names}: {expected}")
        t = inputs[0]
        if t.name == ENCODED_INPUT:
            if t.datatype != "BYTES":
                raise BadRequest(f"input {t.name!r} must be BYTES, got {t.datatype}")
            if t.array.ndim not in (1, 2) or (t.array.ndim == 2 and t.array.shape[1] != 1):
                raise BadRequest(f"input {t.name!r} must have shape [N] or [N,1], got {t.shape}")
            return await self.service.prepare(list(t.array.ravel()), mv)
        if t.name != spec.name:
            raise BadRequest(f"unknown input {t.name!r}: {expected}")
        if t.datatype not in ("FP32", "FP16", "FP64"):
            raise BadRequest(f"input {t.name!r} must be FP32 (or FP16/FP64), got {t.datatype}")
        want = (spec.channels, spec.height, spec.width)
        if t.array.ndim != 4 or t.array.shape[1:] != want or t.array.shape[0] < 1:
            raise BadRequest(
                f"input {t.name!r} must have shape [N,{','.join(map(str, want))}], got {t.shape}"
            )
        n = t.array.shape[0]
        if n > self.service.limits.max_images:
            raise PayloadTooLarge(
                f"{n} rows in one request; the limit is {self.service.limits.max_images}"
            )
        batch = np.ascontiguousarray(t.array, dtype=np.float32)
        if not np.isfinite(batch).all():
            raise BadRequest(f"input {t.name!r} has NaN or infinite values")
        hw = (spec.height, spec.width)
        return batch, [Geometry(hw, hw, (0, 0))] * n

    @staticmethod
    def _decode(
        plans: list[OutputPlan],
        raw: dict[str, np.ndarray],
        geometries: list[Geometry],
        options: DecodeOptions,
    ) -> list[Tensor]:
        out = []
        for p in plans:
            y = raw[p.task.output]
            if p.fn is None:
                out.append(Tensor(p.name, "FP32", y))
                continue
            rows = [p.fn(y[i], p.task, g, options) for i, g in enumerate(geometries)]
            if len({r.shape for r in rows}) > 1:
                raise BadRequest(
                    f"output {p.name!r} follows each image's size and the images differ in "
                    "size: send images of one size, or set the request parameter "
                    "resolution=model"
                )
            array = np.stack(rows)
            out.append(Tensor(p.name, p.datatype, array))
        return out
