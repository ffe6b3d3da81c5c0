"""The Open Inference Protocol (KServe v2) core, shared by the HTTP routes and the gRPC servicer.

A model's v2 inputs are the graph's own tensor input (``image``, FP32 N×3×H×W, already
normalised) or, instead, ``image_bytes``: BYTES [N, 1], one encoded image per row,
pre-processed exactly as ``/v1`` does. A request sends exactly one of them, so both are declared
optional, in Triton's convention for batching models: metadata shapes lead with the batch
dimension -1, config dims leave it out and ``max_batch_size`` gives it. Its outputs are listed
in ``serving.api.v2.outputs``. Inference goes through ``PredictionService.run``, the one path
every API takes. Also here: Triton's statistics extension (fed by what the gateway measures)
and its model repository extension (index; load and unload in explicit model control mode).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from serving.api.v2.outputs import (
    OutputPlan,
    classification_count,
    decode_outputs,
    output_plans,
    plan_bytes,
)
from serving.api.v2.wire import InferRequest, InferResponse, Tensor, check_model_name, parse_version
from serving.decoding import parse_options
from serving.errors import BadRequest, NotFound, PayloadTooLarge
from serving.geometry import Geometry, identity
from serving.kinds import DecodeOptions
from serving.repository import ModelVersion
from serving.service import Plan, PredictionService

ENCODED_INPUT = "image_bytes"
SERVER_NAME = "polyhead"
SERVER_VERSION = "0.1.0"
EXTENSIONS = [
    "classification",
    "binary_tensor_data",
    "model_repository",
    "statistics",
]
_TRITON_TYPES = {
    "FP32": "TYPE_FP32",
    "FP16": "TYPE_FP16",
    "UINT8": "TYPE_UINT8",
    "INT32": "TYPE_INT32",
    "BYTES": "TYPE_STRING",
}
_FLOAT_INPUTS = ("FP32", "FP16", "FP64")
_MAX_BATCH = 1024
_V2_SHRINK = (
    "set the request parameter resolution to 'model' (the default) or a smaller max_side, "
    "ask for binary outputs, fewer outputs, or fewer images per request"
)


def _max_batch_override(name: str, config: Any) -> int | None:
    """The ``max_batch_size`` a load request's config sets (None: keep the configured one)."""
    if config is None:
        return None
    if not isinstance(config, str):
        raise BadRequest(f"failed to load {name!r}: parameter 'config' must be a JSON string")
    try:
        cfg = orjson.loads(config)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"failed to load {name!r}: config is not valid JSON: {e}") from e
    if not isinstance(cfg, dict):
        raise BadRequest(f"failed to load {name!r}: config must be a JSON object")
    other = sorted(set(cfg) - {"name", "max_batch_size"})
    if other:
        raise BadRequest(
            f"failed to load {name!r}: a load request may set max_batch_size only, "
            f"not {', '.join(other)}"
        )
    if cfg.get("name", name) != name:
        raise BadRequest(f"failed to load {name!r}: config is for model {cfg['name']!r}")
    size = cfg.get("max_batch_size")
    if size is None:
        return None
    if isinstance(size, str) and size.isascii() and size.isdigit():
        size = int(size)  # protobuf JSON may quote integers
    if not isinstance(size, int) or isinstance(size, bool) or not 1 <= size <= _MAX_BATCH:
        raise BadRequest(
            f"failed to load {name!r}: max_batch_size must be an integer from 1 to {_MAX_BATCH}"
        )
    return size


class InferenceProtocol:
    """Server and model metadata, readiness, statistics, repository and inference."""

    def __init__(self, service: PredictionService, reject_nonfinite: bool = False) -> None:
        """Answer v2 calls from ``service``'s repository and its one path to the model.

        ``reject_nonfinite`` refuses tensor inputs with NaN or infinite values (400).
        """
        self.service = service
        self.repository = service.repository
        self.reject_nonfinite = reject_nonfinite

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
        """The loaded version (400 for a malformed version, 404 when unknown)."""
        return self.repository.get(check_model_name(name), parse_version(version))

    def model_ready(self, name: str, version: str | None) -> bool:
        """The version is loaded and its backend can serve now."""
        try:
            return self.model(name, version).backend.ready()
        except (NotFound, BadRequest):
            return False

    def model_metadata(self, name: str, version: str | None) -> dict[str, Any]:
        """``GET /v2/models/{name}[/versions/{v}]``: shapes lead with the batch dimension."""
        mv = self.model(name, version)
        inp = mv.manifest.input
        return {
            "name": mv.name,
            "versions": [str(v) for v in self.repository.versions(mv.name)],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {
                    "name": inp.name,
                    "datatype": "FP32",
                    "shape": [-1, inp.channels, inp.height, inp.width],
                },
                {"name": ENCODED_INPUT, "datatype": "BYTES", "shape": [-1, 1]},
            ],
            "outputs": [
                {"name": p.name, "datatype": p.datatype, "shape": [-1, *p.shape]}
                for p in output_plans(mv.manifest).values()
            ],
        }

    def model_config(self, name: str, version: str | None) -> dict[str, Any]:
        """Triton's model configuration (JSON form) of the model as the gateway serves it."""
        mv = self.model(name, version)
        inp = mv.manifest.input
        return {
            "name": mv.name,
            "platform": "onnxruntime_onnx",
            "backend": "onnxruntime",
            "version_policy": {"latest": {"num_versions": self.repository.max_versions}},
            "max_batch_size": mv.batcher.max_batch_size,
            "input": [
                {
                    "name": inp.name,
                    "data_type": "TYPE_FP32",
                    "format": "FORMAT_NCHW",
                    "dims": [inp.channels, inp.height, inp.width],
                    "optional": True,
                },
                {
                    "name": ENCODED_INPUT,
                    "data_type": "TYPE_STRING",
                    "format": "FORMAT_NONE",
                    "dims": [1],
                    "optional": True,
                },
            ],
            "output": [
                {"name": p.name, "data_type": _TRITON_TYPES[p.datatype], "dims": list(p.shape)}
                for p in output_plans(mv.manifest).values()
            ],
            "dynamic_batching": {
                "max_queue_delay_microseconds": int(mv.batcher.max_delay * 1e6),
            },
            "instance_group": [
                {
                    "name": mv.name,
                    "kind": "KIND_CPU" if mv.backend.device == "cpu" else "KIND_GPU",
                    "count": 1,
                }
            ],
            "model_transaction_policy": {"decoupled": False},
        }

    # ---- statistics --------------------------------------------------------------------

    def statistics(self, name: str | None, version: str | None) -> dict[str, Any]:
        """``GET /v2/models[/{name}[/versions/{v}]]/stats``: Triton's statistics extension."""
        if not name:
            if version:
                raise BadRequest("a version needs a model name")
            versions = [
                self.repository.get(n, v)
                for n in self.repository.names()
                for v in self.repository.versions(n)
            ]
        elif version:
            versions = [self.model(name, version)]
        else:
            self.model(name, None)  # 404 for an unknown model
            versions = [self.repository.get(name, v) for v in self.repository.versions(name)]
        return {"model_stats": [mv.stats.as_dict() for mv in versions]}

    # ---- the model repository ----------------------------------------------------------

    def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """``POST /v2/repository/index``: every model in the repository and its versions' state."""
        index: list[dict[str, Any]] = [
            {"name": n, "version": str(v), "state": "READY"}
            for n in self.repository.names()
            for v in self.repository.versions(n)
        ]
        if ready_only:
            return index
        for key, why in self.repository.failures().items():
            n, v = key.rsplit("/", 1)
            index.append({"name": n, "version": v, "state": "UNAVAILABLE", "reason": why})
        listed = {e["name"] for e in index}
        for n, unloaded in self.repository.not_serving().items():
            if n in listed:
                continue
            # as Triton: a model unloaded on request says so; one never loaded is a name only
            entry = {"name": n, "state": "UNAVAILABLE", "reason": "unloaded"}
            index.append(entry if unloaded else {"name": n})
        return sorted(index, key=lambda e: (e["name"], int(e.get("version", "0"))))

    async def load(self, name: str, config: Any = None) -> None:
        """``POST /v2/repository/models/{name}/load`` (explicit model control mode).

        ``config`` is the request's JSON model configuration, if any: of Triton's fields the
        gateway takes ``name`` (which must match) and ``max_batch_size``.
        """
        name = check_model_name(name)
        await self.repository.load(name, _max_batch_override(name, config))

    async def unload(self, name: str) -> None:
        """``POST /v2/repository/models/{name}/unload`` (explicit model control mode)."""
        await self.repository.unload(check_model_name(name))

    # ---- inference ---------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        """Run one request: one forward pass, then the requested outputs."""
        mv = self.model(request.model, request.version)
        manifest = mv.manifest
        plans = output_plans(manifest)
        wanted = [plans[n] for n in self._requested(request, plans)]
        classification = {
            o.name: classification_count(plans[o.name], o.classification)
            for o in request.outputs or []
            if o.classification is not None
        }
        options = self._options(request.parameters)
        used, ignored = self._choose_input(request.inputs, mv)
        notes: dict[str, Any] = {"ignored_inputs": ",".join(ignored)} if ignored else {}
        inputs = self._inputs(used, mv, notes)
        needed = list(dict.fromkeys(o for p in wanted for o in p.graph_outputs))
        needed = needed or [manifest.tasks[0].output]

        def plan(geometries: list[Geometry]) -> Plan[list[Tensor]]:
            size = sum(
                plan_bytes(
                    p, geometries, options, request.binary(p.name), classification.get(p.name)
                )
                for p in wanted
            )
            return Plan(
                needed,
                size,
                _V2_SHRINK,
                lambda raw: decode_outputs(
                    wanted, raw, manifest.input, geometries, options, classification
                ),
            )

        outputs = await self.service.run(mv, inputs, plan)
        params = {k: v for k, v in notes.items() if v}
        return InferResponse(mv.name, str(mv.version), outputs, request.id, params)

    @staticmethod
    def _requested(request: InferRequest, plans: dict[str, OutputPlan]) -> list[str]:
        if not request.outputs:
            return [p.name for p in plans.values() if p.kind == "raw"]
        names = [o.name for o in request.outputs]
        unknown = [n for n in names if n not in plans]
        if unknown:
            raise NotFound(f"unknown output(s) {unknown}; outputs: {', '.join(plans)}")
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

    @staticmethod
    def _choose_input(inputs: list[Tensor], mv: ModelVersion) -> tuple[Tensor, list[str]]:
        """The input the forward pass uses, and those it ignores.

        Both inputs are optional and one is used: the tensor when both are sent (as generic
        load generators such as perf_analyzer do, filling every input the metadata lists), and
        the response then names the ignored one in its parameter ``ignored_inputs``.
        """
        spec = mv.manifest.input
        names = [t.name for t in inputs]
        expected = f"send {spec.name!r} (FP32 [N,3,{spec.height},{spec.width}]) or "
        expected += f"{ENCODED_INPUT!r} (BYTES [N,1], encoded images)"
        unknown = [n for n in names if n not in (spec.name, ENCODED_INPUT)]
        if unknown:
            raise BadRequest(f"unknown input(s) {unknown}: {expected}")
        if not inputs:
            raise BadRequest(f"no input: {expected}")
        if len(inputs) == 1:
            return inputs[0], []
        return next(t for t in inputs if t.name == spec.name), [ENCODED_INPUT]

    def _inputs(
        self, t: Tensor, mv: ModelVersion, notes: dict[str, Any]
    ) -> list[bytes] | tuple[np.ndarray, list[Geometry]]:
        """Encoded images to prepare, or a checked tensor batch with its geometries.

        Tensor values are the model's input as sent, NaN and infinities included (as Triton
        passes them; perf_analyzer's random inputs have them): the response's parameter
        ``nonfinite_input_values`` counts them, and ``reject_nonfinite`` refuses them instead.
        """
        spec = mv.manifest.input
        limit = self.service.limits.max_images
        if t.name == ENCODED_INPUT:
            if t.datatype != "BYTES":
                raise BadRequest(f"input {t.name!r} must be BYTES, got {t.datatype}")
            if t.array.ndim not in (1, 2) or (t.array.ndim == 2 and t.array.shape[1] != 1):
                raise BadRequest(f"input {t.name!r} must have shape [N,1] or [N], got {t.shape}")
            if t.array.shape[0] > limit:
                raise PayloadTooLarge(
                    f"{t.array.shape[0]} images in one request; the limit is {limit}"
                )
            return list(t.array.ravel())
        if t.datatype not in _FLOAT_INPUTS:
            raise BadRequest(f"input {t.name!r} must be FP32 (or FP16/FP64), got {t.datatype}")
        want = (spec.channels, spec.height, spec.width)
        if t.array.ndim != 4 or t.array.shape[1:] != want or t.array.shape[0] < 1:
            raise BadRequest(
                f"input {t.name!r} must have shape [N,{','.join(map(str, want))}], got {t.shape}"
            )
        n = t.array.shape[0]
        if n > limit:
            raise PayloadTooLarge(f"{n} rows in one request; the limit is {limit}")
        batch = np.ascontiguousarray(t.array, dtype=np.float32)
        nonfinite = batch.size - int(np.count_nonzero(np.isfinite(batch)))
        if nonfinite and self.reject_nonfinite:
            raise BadRequest(f"input {t.name!r} has {nonfinite} NaN or infinite values")
        notes["nonfinite_input_values"] = nonfinite
        return batch, [identity(spec.height, spec.width)] * n
