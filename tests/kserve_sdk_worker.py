"""Drive a gateway with the KServe Python SDK, on behalf of a test in another interpreter.

Runs in ``.venv-kserve`` (``make install-kserve-test``): the ``kserve`` wheel pins pandas<3
and python-dateutil<3, and its ``inference`` protobuf package collides with tritonclient's
("duplicate symbol 'inference.ServerLiveRequest'"), so it cannot share the test process.

Usage: ``python kserve_sdk_worker.py REST_BASE_URL GRPC_TARGET``. Reads requests from stdin and
writes replies to stdout, each a 4-byte little-endian length and a pickle: a request is
``{"op": str, **arguments}``, a reply ``{"ok": value}`` or ``{"error": type, "message": str,
"code": HTTP status or gRPC code name}``. Nothing else is ever written to stdout.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import struct
import sys
from typing import Any, BinaryIO

import grpc
import httpx
from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
from kserve.protocol.grpc.grpc_predict_v2_pb2_grpc import GRPCInferenceServiceStub
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse, RequestedOutput
from kserve.protocol.rest.v2_datamodels import ModelMetadataResponse, ServerMetadataResponse


def _request(args: dict[str, Any]) -> InferRequest:
    """An SDK InferRequest from plain arguments (see ``Worker.infer``)."""
    inputs = []
    for spec in args["inputs"]:
        inp = InferInput(
            spec["name"],
            list(spec["shape"]),
            spec["datatype"],
            data=spec.get("data"),
            parameters=dict(spec["parameters"]) if spec.get("parameters") else None,
        )
        if "array" in spec:
            inp.set_data_from_numpy(spec["array"], binary_data=spec.get("binary", True))
        inputs.append(inp)
    binary = args.get("binary_outputs")
    outputs = [
        RequestedOutput(n, parameters=None if binary is None else {"binary_data": binary})
        for n in args.get("outputs") or []
    ]
    return InferRequest(
        args["model"],
        inputs,
        request_id=args.get("request_id"),
        parameters=args.get("parameters"),
        request_outputs=outputs or None,
        model_version=args.get("model_version"),
    )


def _result(response: InferResponse) -> dict[str, Any]:
    return {
        "id": response.id,
        "model_name": response.model_name,
        "model_version": response.model_version,
        "outputs": {o.name: o.as_numpy() for o in response.outputs},
        "datatypes": {o.name: o.datatype for o in response.outputs},
        "order": [o.name for o in response.outputs],
    }


def _tensors(tensors: Any) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in tensors]


class Worker:
    """The SDK's REST and gRPC clients for one gateway, and the operations tests ask for."""

    def __init__(self, rest: str, grpc_target: str) -> None:
        self.rest_url = rest
        self.rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        self.grpc = InferenceGRPCClient(grpc_target, timeout=60)
        self.channel = grpc.aio.insecure_channel(grpc_target)
        self.stub = GRPCInferenceServiceStub(self.channel)

    async def health(self, transport: str, model: str) -> dict[str, bool]:
        """Server live and ready, and ``model`` ready, as the SDK reports them."""
        if transport == "rest":
            return {
                "live": await self.rest.is_server_live(self.rest_url),
                "ready": await self.rest.is_server_ready(self.rest_url),
                "model_ready": await self.rest.is_model_ready(self.rest_url, model),
            }
        return {
            "live": await self.grpc.is_server_live(),
            "ready": await self.grpc.is_server_ready(),
            "model_ready": await self.grpc.is_model_ready(model),
        }

    async def metadata(self, transport: str, model: str) -> dict[str, Any]:
        """Server and model metadata, validated against the SDK's own message types.

        The SDK's clients have no metadata call: REST responses are parsed with its pydantic
        models (``v2_datamodels``), gRPC goes through its generated ``GRPCInferenceServiceStub``.
        """
        if transport == "rest":
            async with httpx.AsyncClient(base_url=self.rest_url, timeout=30) as http:
                server = await http.get("/v2")
                server.raise_for_status()
                meta = await http.get(f"/v2/models/{model}")
                meta.raise_for_status()
            s = ServerMetadataResponse.model_validate(server.json())
            m = ModelMetadataResponse.model_validate(meta.json())
            return {"server": s.model_dump(), "model": m.model_dump()}
        sm = await self.stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=30)
        mm = await self.stub.ModelMetadata(pb.ModelMetadataRequest(name=model), timeout=30)
        return {
            "server": {"name": sm.name, "version": sm.version, "extensions": list(sm.extensions)},
            "model": {
                "name": mm.name,
                "versions": list(mm.versions),
                "platform": mm.platform,
                "inputs": _tensors(mm.inputs),
                "outputs": _tensors(mm.outputs),
            },
        }

    async def infer(self, transport: str, **args: Any) -> dict[str, Any]:
        """Inference through ``InferenceRESTClient.infer`` or ``InferenceGRPCClient.infer``.

        ``args``: ``model``, ``inputs`` (each ``name``, ``shape``, ``datatype`` and either
        ``array`` with ``binary`` for ``set_data_from_numpy``, or ``data``, a list; optional
        ``parameters``), ``outputs`` (names), ``binary_outputs``, ``parameters``, ``request_id``.
        """
        request = _request(args)
        if transport == "rest":
            response = await self.rest.infer(self.rest_url, request, model_name=args["model"])
        else:
            response = await self.grpc.infer(request)
        assert isinstance(response, InferResponse)
        return _result(response)

    async def wire(self, transport: str, **args: Any) -> dict[str, Any]:
        """What the SDK would send for ``infer(**args)``, without sending it."""
        request = _request(args)
        if transport == "rest":
            body, json_length = request.to_rest()
            if json_length is None:
                return {"json": body, "binary": b""}
            assert isinstance(body, bytes)
            return {"json": json.loads(body[:json_length]), "binary": body[json_length:]}
        message = request.to_grpc()
        return {
            "inputs": [
                {
                    "name": t.name,
                    "parameters": {
                        k: (
                            v.WhichOneof("parameter_choice"),
                            getattr(v, v.WhichOneof("parameter_choice")),
                        )
                        for k, v in t.parameters.items()
                    },
                    "bytes_contents": list(t.contents.bytes_contents),
                    "fp32_contents": len(t.contents.fp32_contents),
                }
                for t in message.inputs
            ],
            "raw_input_contents": list(message.raw_input_contents),
        }

    async def close(self) -> None:
        await self.rest.close()
        await self.grpc.close()
        await self.channel.close()


def _read(stream: BinaryIO) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        return None
    (n,) = struct.unpack("<I", head)
    return pickle.loads(stream.read(n))


def _write(stream: BinaryIO, value: Any) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<I", len(data)) + data)
    stream.flush()


def _error(e: BaseException) -> dict[str, Any]:
    code: Any = None
    if isinstance(e, httpx.HTTPStatusError):
        code = e.response.status_code
    elif isinstance(e, grpc.aio.AioRpcError):
        code = e.code().name
    return {"error": type(e).__name__, "message": str(e), "code": code}


async def main(rest: str, grpc_target: str) -> None:
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the replies
    worker = Worker(rest, grpc_target)
    ops = {
        "health": worker.health,
        "metadata": worker.metadata,
        "infer": worker.infer,
        "wire": worker.wire,
    }
    try:
        while (request := _read(stdin)) is not None:
            op = ops[request.pop("op")]
            try:
                _write(stdout, {"ok": await op(**request)})
            except Exception as e:
                _write(stdout, _error(e))
    finally:
        await worker.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
