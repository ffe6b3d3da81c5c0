"""The Open Inference Protocol (KServe v2) core, shared by the HTTP and gRPC front ends.

A model is described by its manifest. Its v2 inputs are the graph's own tensor input
(``image``, FP32 N×3×H×W, already normalised) or, instead, ``image_bytes``: BYTES, one encoded
image per row, pre-processed on the server exactly as ``/v1`` does. Its v2 outputs are the raw
task outputs (logits, as the graph computes them) and, on request only, decoded outputs named
``TASK.WHAT``: each task kind's decoded tensors (``semseg.classes`` UINT8 H×W, ``depth.depth``
FP16, ``normals.normals`` FP16 H×W×3, ``edges.probability`` FP16, ``shapes.probabilities``,
...; see ``serving.kinds``), its extra outputs (``background.label``), ``TASK.json`` (the very
JSON ``/v1`` returns for that task), and ``image.box`` / ``image.size`` (where dense maps lie
on each image). Dense decoded outputs follow the request's ``resolution`` (``model`` by
default) and ``max_side``, as in ``/v1``. Every request is one forward pass through the
model's dynamic batcher, and its response is held to the output budget before decoding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import orjson

from serving.decoding import (
    check_budget,
    decode_task,
    laid_back,
    parse_options,
    task_bytes,
    task_outputs,
    task_tensors,
)
from serving.errors import BadRequest, NotFound, PayloadTooLarge
from serving.geometry import Geometry, identity
from serving.kinds import DecodeOptions, get_kind
from serving.kinds.base import Maps
from serving.kinds.maps import target_size
from serving.manifest import Manifest, TaskSpec
from serving.manifest.triton_config import TRITON_DTYPES
from serving.repository import DATATYPES, ModelVersion
from serving.service import PredictionService
from serving.tensors import Tensor

ENCODED_INPUT = "image_bytes"
SERVER_NAME = "polyhead"
SERVER_VERSION = "0.1.0"
EXTENSIONS = ["binary_tensor_data", "model_repository"]
BOX_OUTPUT = "image.box"  # INT32 [N, 4]: left, top, width, height in the image's pixels
SIZE_OUTPUT = "image.size"  # INT32 [N, 2]: width, height of the image

#: JSON bytes of one element at most, by datatype (a float repr, with its comma)
_JSON_ELEMENT = {"UINT8": 4, "INT32": 12, "BYTES": 0}
_V2_SHRINK = (
    "set the request parameter resolution to 'model' (the default) or a smaller max_side, "
    "ask for binary outputs, fewer outputs, or fewer images per request"
)

PlanKind = Literal["raw", "tensor", "extra", "json", "box", "size"]


@dataclass(frozen=True)
class OutputPlan:
    """How to produce one v2 output: a raw task output, a decoded one, or a placement."""

    name: str
    datatype: str
    shape: list[int]  # per row; -1 for a dimension that follows the image
    kind: PlanKind
    task: TaskSpec | None = None
    tensor: str = ""  # the decoded tensor (tensor plans)
    fn: Callable[[Maps, TaskSpec], np.ndarray] | None = None  # extra plans

    @property
    def dense(self) -> bool:
        """True when the output is a map that follows the image size."""
        return -1 in self.shape


def output_plans(manifest: Manifest) -> dict[str, OutputPlan]:
    """Every output a v2 client may ask for, by name, raw outputs first."""
    plans: dict[str, OutputPlan] = {}
    for t in manifest.tasks:
        plans[t.output] = OutputPlan(
            t.output, "FP32", list(manifest.output_shape(t.name)), "raw", t
        )
    for t in manifest.tasks:
        kind = get_kind(t.kind)
        raw_row = manifest.output_shape(t.name)
        for d in kind.decoded:
            shape = list(d.row_shape(raw_row))
            if d.resample is not None:
                shape[:2] = [-1, -1]
            name = f"{t.name}.{d.name}"
            plans[name] = OutputPlan(name, DATATYPES[d.dtype], shape, "tensor", t, tensor=d.name)
        for x in kind.v2_extra(t):
            name = f"{t.name}.{x.suffix}"
            plans[name] = OutputPlan(name, x.datatype, x.shape(t), "extra", t, fn=x.fn)
        plans[f"{t.name}.json"] = OutputPlan(f"{t.name}.json", "BYTES", [1], "json", t)
    plans[BOX_OUTPUT] = OutputPlan(BOX_OUTPUT, "INT32", [4], "box")
    plans[SIZE_OUTPUT] = OutputPlan(SIZE_OUTPUT, "INT32", [2], "size")
    return plans


def plan_bytes(
    p: OutputPlan, geometries: list[Geometry], options: DecodeOptions, binary: bool
) -> int:
    """An upper bound on one output's bytes in the response (binary, or JSON ``data``)."""
    if p.kind == "json":
        assert p.task is not None
        body = sum(task_bytes(p.task, g, options) for g in geometries)
        return body + 4 * len(geometries) if binary else 2 * body + 4 * len(geometries)
    total = 0
    for g in geometries:
        shape = list(p.shape)
        if p.dense:
            shape[:2] = target_size(g, options.resolution, options.max_side)
        elements = math.prod(shape)
        if p.datatype == "BYTES":
            total += 4 + 1024 if binary else 2 * 1024
        elif binary:
            total += elements * (np.dtype(_NUMPY[p.datatype]).itemsize)
        else:
            total += elements * _JSON_ELEMENT.get(p.datatype, 24)
    return total + 200


_NUMPY = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8", "INT32": "int32"}


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
    binary_default: bool = True  # outputs not marked otherwise go binary (gRPC: always)

    def binary(self, output: str) -> bool:
        """Whether ``output`` goes in binary form."""
        for o in self.outputs or []:
            if o.name == output and o.binary is not None:
                return o.binary
        return self.binary_default


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
        """Triton's model configuration (JSON form) of the graph: its raw and decoded outputs."""
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
                {"name": name, "data_type": TRITON_DTYPES[dtype], "dims": list(shape)}
                for name, dtype, shape in m.graph_outputs
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
        wanted = [plans[n] for n in self._requested(request, plans)]
        options = self._options(request.parameters)
        batch, geometries = await self._inputs(request.inputs, mv)
        size = sum(plan_bytes(p, geometries, options, request.binary(p.name)) for p in wanted)
        check_budget(size, self.service.limits.max_response_bytes, _V2_SHRINK)
        needed: list[str] = []
        for p in wanted:
            if p.kind == "raw":
                needed.append(p.name)
            elif p.task is not None:
                needed += task_outputs(p.task)
        needed = list(dict.fromkeys(needed)) or [manifest.tasks[0].output]
        raw = await self.service.forward(mv, batch, needed)  # the one forward pass
        if all(p.kind == "raw" for p in wanted):
            outputs = [Tensor(p.name, "FP32", raw[p.name]) for p in wanted]
        else:
            outputs = await self.service.on_cpu(
                self._decode, wanted, raw, manifest.input, geometries, options
            )
        return InferResponse(mv.name, str(mv.version), outputs, request.id)

    @staticmethod
    def _requested(request: InferRequest, plans: dict[str, OutputPlan]) -> list[str]:
        if not request.outputs:
            return [p.name for p in plans.values() if p.kind == "raw"]
        names = [o.name for o in request.outputs]
        unknown = [n for n in names if n not in plans]
        if unknown:
            raise BadRequest(f"unknown output(s) {unknown}; outputs: {', '.join(plans)}")
        if len(set(names)) != len(names):
            raise BadRequest(f"an output is requested twice: {names}")
        return names

    @staticmethod
    def _options(parameters: dict[str, Any]) -> DecodeOptions:
        """Decoding options from request parameters (``resolution``, ``max_side``, ...)."""
        res, enc, k, side = (
            parameters.get(p) for p in ("resolution", "encoding", "top_k", "max_side")
        )
        if res is not None and not isinstance(res, str):
            raise BadRequest("parameter 'resolution' must be a string")
        if enc is not None and not isinstance(enc, str):
            raise BadRequest("parameter 'encoding' must be a string")
        for name, value in (("top_k", k), ("max_side", side)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise BadRequest(f"parameter {name!r} must be an integer")
        return parse_options(enc, res, k, side)

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
        return batch, [identity(spec.height, spec.width)] * n

    @staticmethod
    def _decode(
        plans: list[OutputPlan],
        raw: dict[str, np.ndarray],
        spec: Any,
        geometries: list[Geometry],
        options: DecodeOptions,
    ) -> list[Tensor]:
        tensors: dict[str, Maps] = {}
        rows: dict[str, list[tuple[Maps, dict[str, Any] | None]]] = {}

        def laid(task: TaskSpec) -> list[tuple[Maps, dict[str, Any] | None]]:
            if task.name not in rows:
                batch = tensors.setdefault(task.name, task_tensors(task, raw))
                rows[task.name] = [
                    laid_back(task, {k: v[i] for k, v in batch.items()}, g, options)
                    for i, g in enumerate(geometries)
                ]
            return rows[task.name]

        grid = (spec.height, spec.width)
        whole_grid = options.resolution == "model" and all(
            g.resized == grid and g.offset == (0, 0) for g in geometries
        )
        out = []
        for p in plans:
            if p.kind == "raw":
                out.append(Tensor(p.name, "FP32", raw[p.name]))
                continue
            if p.kind == "box":
                boxes = np.array([g.box for g in geometries], dtype=np.int32)
                out.append(Tensor(p.name, "INT32", boxes))
                continue
            if p.kind == "size":
                sizes = [(g.original[1], g.original[0]) for g in geometries]
                out.append(Tensor(p.name, "INT32", np.array(sizes, dtype=np.int32)))
                continue
            task = p.task
            assert task is not None
            if p.kind == "tensor" and (whole_grid or not p.dense):
                batch = tensors.setdefault(task.name, task_tensors(task, raw))
                out.append(Tensor(p.name, p.datatype, batch[p.tensor]))
                continue
            if p.kind == "json":
                values = [
                    orjson.dumps(decode_task(task, {k: v[i] for k, v in b.items()}, g, options))
                    for b in [tensors.setdefault(task.name, task_tensors(task, raw))]
                    for i, g in enumerate(geometries)
                ]
                out.append(Tensor(p.name, "BYTES", np.array(values, dtype=object).reshape(-1, 1)))
                continue
            if p.kind == "extra":
                assert p.fn is not None
                arrays = [p.fn(maps, task) for maps, _ in laid(task)]
            else:
                arrays = [maps[p.tensor] for maps, _ in laid(task)]
            if len({a.shape for a in arrays}) > 1:
                raise BadRequest(
                    f"output {p.name!r} follows each image's size and the images differ in "
                    "size: send images of one size, or set the request parameter "
                    "resolution=model"
                )
            array = np.stack(arrays)
            if p.datatype in _NUMPY:
                array = array.astype(_NUMPY[p.datatype], copy=False)
            out.append(Tensor(p.name, p.datatype, array))
        return out
