"""``inference.GRPCInferenceService`` (KServe v2 / Triton gRPC) on a second port.

It runs on the HTTP app's event loop, so both share the models, batchers, statistics and
metrics. One interceptor does, for every call: the API key (the rule of ``serving.auth``),
parsing the request message (a message that is not valid protobuf is INVALID_ARGUMENT), the
mapping of errors to status codes (an unexpected error is INTERNAL with no detail; the detail
goes to the log), and the request metrics. The servicer's methods are thin calls into
``InferenceProtocol``. RPCs for features the gateway lacks (shared memory, tracing, logging
settings) stay UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving.api.v2.grpc_codec import parameter_value, parse_request, render_response
from serving.api.v2.protocol import InferenceProtocol
from serving.auth import OPEN_RPCS, check_key
from serving.errors import BadRequest, PolyheadError
from serving.metrics import Metrics
from serving.settings import Settings

log = logging.getLogger(__name__)

STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}


def status_of(e: PolyheadError) -> grpc.StatusCode:
    """The gRPC status of an error."""
    return STATUS.get(e.status, grpc.StatusCode.INTERNAL)


class Gate(grpc.aio.ServerInterceptor):
    """Authentication, request parsing, error mapping and metrics for every RPC."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        """Check ``settings.api_keys``; count calls in ``metrics``."""
        self.keys = settings.api_keys
        self.metrics = metrics

    def _authorize(self, method: str, details: grpc.HandlerCallDetails) -> None:
        if method in OPEN_RPCS:
            return
        meta = {k.lower(): v for k, v in (details.invocation_metadata or ())}
        key, auth = meta.get("x-api-key"), meta.get("authorization")
        check_key(
            self.keys,
            key if isinstance(key, str) else None,
            auth if isinstance(auth, str) else None,
        )

    def _record(self, method: str, code: grpc.StatusCode, started: float) -> None:
        route = f"grpc:{method}"
        self.metrics.requests.labels(route, "GRPC", code.name).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - started)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        """Wrap the method's handler."""
        handler = await continuation(details)
        if handler is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        parse = handler.request_deserializer or (lambda b: b)

        def message(raw: bytes) -> Any:
            try:
                return parse(raw)
            except (DecodeError, ValueError, TypeError) as e:
                raise BadRequest(f"{method}: the request is not a valid message") from e

        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(raw: bytes, context: grpc.aio.ServicerContext) -> Any:
                call = _Call(self, method, context)
                try:
                    self._authorize(method, details)
                    return await inner(message(raw), context)
                except Exception as e:
                    await call.fail(e)
                finally:
                    call.done()

            return grpc.unary_unary_rpc_method_handler(
                unary, response_serializer=handler.response_serializer
            )
        if handler.stream_stream is not None:
            inner_stream = handler.stream_stream

            async def stream(
                requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext
            ) -> AsyncIterator[Any]:
                call = _Call(self, method, context)
                try:
                    self._authorize(method, details)

                    async def parsed() -> AsyncIterator[Any]:
                        async for raw in requests:
                            yield message(raw)

                    async for response in inner_stream(parsed(), context):
                        yield response
                except Exception as e:
                    await call.fail(e)
                finally:
                    call.done()

            return grpc.stream_stream_rpc_method_handler(
                stream, response_serializer=handler.response_serializer
            )
        return handler


class _Call:
    """One RPC: its status (an error mapped to its code) and its metrics when it ends."""

    def __init__(self, gate: Gate, method: str, context: grpc.aio.ServicerContext) -> None:
        self.gate, self.method, self.context = gate, method, context
        self.started, self.code = time.perf_counter(), grpc.StatusCode.OK

    async def fail(self, e: Exception) -> NoReturn:
        """Abort the call with the status ``e`` maps to (inside the ``except`` that caught it)."""
        if isinstance(e, grpc.aio.AbortError):
            raise e
        if isinstance(e, PolyheadError):
            self.code, message = status_of(e), e.message
            if self.code is grpc.StatusCode.INTERNAL:
                log.error("gRPC %s: %s", self.method, message)
        else:
            self.code, message = grpc.StatusCode.INTERNAL, "internal server error"
            log.exception("gRPC %s failed", self.method)
        await self.context.abort(self.code, message)
        raise AssertionError("unreachable: abort raises")

    def done(self) -> None:
        """Count the call."""
        self.gate._record(self.method, self.code, self.started)


def _message(cls: type[Any], content: dict[str, Any]) -> Any:
    return json_format.ParseDict(content, cls(), ignore_unknown_fields=True)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """The v2 gRPC service: each method one call into ``InferenceProtocol``."""

    def __init__(self, protocol: InferenceProtocol) -> None:
        """Serve ``protocol``."""
        self.protocol = protocol

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        """Always live while the process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        """Every model has a version that can serve."""
        return pb.ServerReadyResponse(ready=self.protocol.server_ready())

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        """The model version can serve now (false for an unknown one, as Triton answers)."""
        ready = self.protocol.model_ready(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        """Name, version, extensions."""
        return pb.ServerMetadataResponse(**self.protocol.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        """Inputs and outputs with datatype and shape."""
        meta = self.protocol.model_metadata(request.name, request.version or None)
        return _message(pb.ModelMetadataResponse, meta)

    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        """Triton's model configuration."""
        config = self.protocol.model_config(request.name, request.version or None)
        return _message(pb.ModelConfigResponse, {"config": config})

    async def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:
        """Triton's statistics extension."""
        stats = self.protocol.statistics(request.name or None, request.version or None)
        return _message(pb.ModelStatisticsResponse, stats)

    async def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:
        """Every model and version with its state."""
        if request.repository_name:
            raise BadRequest("this server has one repository: leave repository_name empty")
        index = self.protocol.repository_index(request.ready)
        return _message(pb.RepositoryIndexResponse, {"models": index})

    async def RepositoryModelLoad(
        self, request: Any, context: Any
    ) -> pb.RepositoryModelLoadResponse:
        """Load a model (explicit model control mode)."""
        _check_control(request, "load")
        config = request.parameters.get("config")
        await self.protocol.load(
            request.model_name, None if config is None else parameter_value(config)
        )
        return pb.RepositoryModelLoadResponse()

    async def RepositoryModelUnload(
        self, request: Any, context: Any
    ) -> pb.RepositoryModelUnloadResponse:
        """Unload a model (explicit model control mode)."""
        _check_control(request, "unload")
        await self.protocol.unload(request.model_name)
        return pb.RepositoryModelUnloadResponse()

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        """One forward pass through the model's batcher."""
        return render_response(await self.protocol.infer(parse_request(request)))

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests on a stream, answered in order; an error answers that request only."""
        async for request in request_iterator:
            try:
                resp = await self.protocol.infer(parse_request(request))
                yield pb.ModelStreamInferResponse(infer_response=render_response(resp))
            except PolyheadError as e:
                yield pb.ModelStreamInferResponse(
                    error_message=e.message,
                    infer_response=pb.ModelInferResponse(
                        id=request.id, model_name=request.model_name
                    ),
                )


def _check_control(request: Any, what: str) -> None:
    if request.repository_name:
        raise BadRequest("this server has one repository: leave repository_name empty")
    if any(k.startswith("file:") for k in request.parameters):
        raise BadRequest(f"{what}: model files in the request are not supported")


async def start_grpc_server(
    protocol: InferenceProtocol, settings: Settings, metrics: Metrics, port: int
) -> tuple[grpc.aio.Server, int]:
    """Start the gRPC server on ``settings.host:port``; returns it and the bound port."""
    limit = settings.max_body_bytes
    server = grpc.aio.server(
        interceptors=[Gate(settings, metrics)],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, settings.max_response_bytes + (1 << 20))),
            ("grpc.max_metadata_size", settings.max_header_bytes),
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(protocol), server)
    bound = server.add_insecure_port(f"{settings.host}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind the gRPC port {settings.host}:{port}")
    await server.start()
    log.info("gRPC (KServe v2) on %s:%d", settings.host, bound)
    return server, bound
