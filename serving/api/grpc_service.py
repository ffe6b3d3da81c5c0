"""``inference.GRPCInferenceService`` (KServe v2 / Triton gRPC) on a second port.

It runs on the same event loop as the HTTP app, so both share the models, batchers and metrics.
The generated protocol modules are the ones the ``tritonclient`` package ships.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving.errors import BadRequest, PolyheadError, Unauthorized
from serving.metrics import Metrics
from serving.oip import InferenceProtocol, InferRequest, InferResponse, RequestedOutput
from serving.settings import Settings
from serving.tensors import Tensor, check_datatype, check_shape, from_bytes, to_bytes

log = logging.getLogger(__name__)
R = TypeVar("R")

_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
# typed ``contents`` field of each datatype (FP16 has none: raw contents only)
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _param_value(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def _tensor(i: int, t: Any, raw: list[bytes]) -> Tensor:
    name = t.name
    dtype = check_datatype(name, t.datatype)
    shape = check_shape(name, list(t.shape))
    if raw:
        if i >= len(raw):
            raise BadRequest(f"input {name!r}: no raw_input_contents entry for it")
        return Tensor(name, t.datatype, from_bytes(name, t.datatype, shape, raw[i]))
    field = _CONTENTS.get(t.datatype)
    if field is None:
        raise BadRequest(f"input {name!r}: {t.datatype} data must be sent in raw_input_contents")
    values = list(getattr(t.contents, field))
    count = int(np.prod(shape)) if shape else 1
    if len(values) != count:
        raise BadRequest(
            f"input {name!r}: shape {list(shape)} needs {count} elements, "
            f"contents has {len(values)}"
        )
    if t.datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = values
        return Tensor(name, t.datatype, array.reshape(shape))
    try:
        return Tensor(name, t.datatype, np.asarray(values, dtype=dtype).reshape(shape))
    except (OverflowError, ValueError) as e:
        raise BadRequest(f"input {name!r}: values do not fit {t.datatype}: {e}") from e


def parse_request(req: pb.ModelInferRequest) -> InferRequest:
    """A gRPC request as a transport-neutral ``InferRequest``."""
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise BadRequest(
            f"{len(raw)} raw_input_contents entries for {len(req.inputs)} inputs: "
            "send raw contents for every input or for none"
        )
    names = [t.name for t in req.inputs]
    if len(set(names)) != len(names):
        raise BadRequest(f"an input is given twice: {names}")
    inputs = [_tensor(i, t, raw) for i, t in enumerate(req.inputs)]
    outputs = [RequestedOutput(o.name) for o in req.outputs] or None
    params = {k: _param_value(v) for k, v in req.parameters.items()}
    return InferRequest(
        req.model_name, req.model_version or None, inputs, outputs, req.id or None, params
    )


def render_response(resp: InferResponse) -> pb.ModelInferResponse:
    """A transport-neutral response as gRPC, every output in ``raw_output_contents``."""
    out = pb.ModelInferResponse(model_name=resp.model, model_version=resp.version, id=resp.id or "")
    for t in resp.outputs:
        out.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        out.raw_output_contents.append(to_bytes(t))
    return out


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The v2 gRPC service over an ``InferenceProtocol``."""

    def __init__(self, protocol: InferenceProtocol, settings: Settings, metrics: Metrics) -> None:
        """Serve ``protocol``; API keys (if any) are checked on every call."""
        self.protocol = protocol
        self.keys = [k.get_secret_value().encode() for k in settings.api_keys]
        self.metrics = metrics

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        if not self.keys:
            return
        meta = {k.lower(): v for k, v in (context.invocation_metadata() or ())}
        given = str(meta.get("x-api-key", ""))
        auth = str(meta.get("authorization", ""))
        if not given and auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(given.encode(), key)
        if not ok:
            raise Unauthorized("missing or invalid API key (metadata x-api-key or authorization)")

    async def _call(
        self, method: str, context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[R]]
    ) -> R:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            self._authorize(context)
            return await fn()
        except PolyheadError as e:
            code = _STATUS.get(e.status, grpc.StatusCode.INTERNAL)
            if code is grpc.StatusCode.INTERNAL:
                log.error("gRPC %s: %s", method, e.message)
            await context.abort(code, e.message)
        except Exception:
            code = grpc.StatusCode.INTERNAL
            log.exception("gRPC %s failed", method)
            await context.abort(code, "internal server error")
        finally:
            route = f"grpc:{method}"
            self.metrics.requests.labels(route, "GRPC", code.name).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
        raise AssertionError("unreachable: abort raises")

    # ---- health and metadata -----------------------------------------------------------

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        """Always live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        """Every model has a version that can serve."""
        return pb.ServerReadyResponse(ready=self.protocol.server_ready())

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        """The model version can serve now."""
        return pb.ModelReadyResponse(
            ready=self.protocol.model_ready(request.name, request.version or None)
        )

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        """Name, version, extensions."""

        async def run() -> pb.ServerMetadataResponse:
            return pb.ServerMetadataResponse(**self.protocol.server_metadata())

        return await self._call("ServerMetadata", context, run)

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        """Inputs and outputs with datatype and shape."""

        async def run() -> pb.ModelMetadataResponse:
            return json_format.ParseDict(
                self.protocol.model_metadata(request.name, request.version or None),
                pb.ModelMetadataResponse(),
            )

        return await self._call("ModelMetadata", context, run)

    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        """Triton's model configuration of the raw model."""

        async def run() -> pb.ModelConfigResponse:
            cfg = self.protocol.model_config(request.name, request.version or None)
            return json_format.ParseDict({"config": cfg}, pb.ModelConfigResponse())

        return await self._call("ModelConfig", context, run)

    async def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:
        """Every version with its state."""

        async def run() -> pb.RepositoryIndexResponse:
            return json_format.ParseDict(
                {"models": self.protocol.repository_index()}, pb.RepositoryIndexResponse()
            )

        return await self._call("RepositoryIndex", context, run)

    # ---- inference ---------------------------------------------------------------------

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        """One forward pass through the model's batcher."""

        async def run() -> pb.ModelInferResponse:
            return render_response(await self.protocol.infer(parse_request(request)))

        return await self._call("ModelInfer", context, run)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests on a stream, answered in order; an error answers that request only."""
        try:
            self._authorize(context)
        except Unauthorized as e:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, e.message)
        async for request in request_iterator:
            try:
                resp = await self.protocol.infer(parse_request(request))
                yield pb.ModelStreamInferResponse(infer_response=render_response(resp))
            except PolyheadError as e:
                yield pb.ModelStreamInferResponse(
                    error_message=e.message,
                    infer_response=pb.ModelInferResponse(id=request.id),
                )


async def start_grpc_server(
    protocol: InferenceProtocol, settings: Settings, metrics: Metrics, port: int
) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server on ``settings.host:port``; returns it and the bound port."""
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 256 * 1024 * 1024)),
            ("grpc.so_reuseport", 0),
        ]
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(
        InferenceServicer(protocol, settings, metrics), server
    )
    bound = server.add_insecure_port(f"{settings.host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {settings.host}:{port}")
    await server.start()
    log.info("gRPC (KServe v2) on %s:%d", settings.host, bound)
    return server, bound
