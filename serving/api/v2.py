"""``/v2``: the Open Inference Protocol (KServe v2) over HTTP, with the binary tensor extension.

A request body is a JSON header, optionally followed by binary tensor data; when binary data
follows, the ``Inference-Header-Content-Length`` header gives the JSON part's length and each
binary input says its size in ``parameters.binary_data_size`` (in input order). Outputs are
returned binary when asked (``binary_data`` per output, or ``binary_data_output`` for all).
Health routes live in ``serving.api.health``.
"""

from __future__ import annotations

import zlib
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.api.deps import Authorized
from serving.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType
from serving.oip import InferenceProtocol, InferRequest, InferResponse, RequestedOutput
from serving.tensors import Tensor, from_bytes, from_json, to_bytes, to_json_data

router = APIRouter(prefix="/v2", tags=["v2"], dependencies=[Authorized])

HEADER_LENGTH = "inference-header-content-length"


def _protocol(request: Request) -> InferenceProtocol:
    return request.app.state.protocol


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


@router.get("", summary="Server metadata")
async def server_metadata(request: Request) -> Response:
    """Name, version and protocol extensions."""
    return _json(_protocol(request).server_metadata())


@router.get("/models/{name}", summary="Model metadata (newest version)")
@router.get("/models/{name}/versions/{version}", summary="Model metadata")
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    """Inputs and outputs with datatype and shape."""
    return _json(_protocol(request).model_metadata(name, version))


@router.get("/models/{name}/ready", summary="Model readiness (newest version)")
@router.get("/models/{name}/versions/{version}/ready", summary="Model readiness")
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    """200 when the version can serve now, else 503 (404 for an unknown model)."""
    protocol = _protocol(request)
    protocol.model(name, version)  # unknown model or version: 404
    ready = protocol.model_ready(name, version)
    body = {"name": name, "ready": ready}
    return _json(body) if ready else _json({"error": f"model {name!r} is not ready"}, 503)


@router.get("/models/{name}/config", summary="Model configuration (Triton's JSON form)")
@router.get("/models/{name}/versions/{version}/config", summary="Model configuration")
async def model_config(request: Request, name: str, version: str | None = None) -> Response:
    """The raw model's configuration."""
    return _json(_protocol(request).model_config(name, version))


@router.post("/repository/index", summary="Models and versions in the repository")
async def repository_index(request: Request) -> Response:
    """Every version with its state."""
    return _json(_protocol(request).repository_index())


@router.post("/models/{name}/infer", summary="Inference (newest version)")
@router.post("/models/{name}/versions/{version}/infer", summary="Inference")
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    """One forward pass; JSON or binary tensors in and out."""
    protocol = _protocol(request)
    protocol.model(name, version)  # unknown model or version: 404 before reading the body
    body = await _body(request)
    infer_request, binary_default = parse_infer_request(
        body, request.headers.get(HEADER_LENGTH), name, version
    )
    response = await protocol.infer(infer_request)
    wanted = {o.name: o.binary for o in infer_request.outputs or []}
    binary = {
        t.name: (wanted.get(t.name) if wanted.get(t.name) is not None else binary_default)
        for t in response.outputs
    }
    return render_infer_response(response, binary)


async def _body(request: Request) -> bytes:
    body = await request.body()
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedMediaType(f"unsupported Content-Encoding {encoding!r}: gzip or deflate")
    limit = request.app.state.settings.max_body_bytes
    inflater = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"body is not valid {encoding} data: {e}") from e
    if len(out) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
    if not inflater.eof:
        raise BadRequest(f"{encoding} body is truncated")
    return out


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be an object")
    return value


def parse_infer_request(
    body: bytes, header_length: str | None, model: str, version: str | None
) -> tuple[InferRequest, bool]:
    """A request body (JSON, or JSON + binary) as an ``InferRequest``.

    Returns the request and whether outputs default to binary (``binary_data_output``).
    """
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {header_length!r}") from None
        if not 0 < n <= len(body):
            raise BadRequest(f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    if not head:
        raise BadRequest("empty body: expected a JSON inference request")
    try:
        payload = orjson.loads(head)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"inference request is not valid JSON: {e}") from e
    if not isinstance(payload, dict):
        raise BadRequest("inference request must be a JSON object")
    params = _object(payload.get("parameters"), "parameters")
    binary_default = params.get("binary_data_output", False)
    if not isinstance(binary_default, bool):
        raise BadRequest("parameter 'binary_data_output' must be true or false")
    raw_inputs = payload.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadRequest("'inputs' must be a non-empty list")

    inputs: list[Tensor] = []
    offset = 0
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise BadRequest(f"inputs[{i}] must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest(f"inputs[{i}] has no name")
        if any(t.name == name for t in inputs):
            raise BadRequest(f"input {name!r} is given twice")
        datatype, shape = item.get("datatype"), item.get("shape")
        iparams = _object(item.get("parameters"), f"input {name!r} parameters")
        size = iparams.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer")
            if "data" in item:
                raise BadRequest(f"input {name!r} has both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise BadRequest(
                    f"input {name!r}: binary_data_size {size} runs past the end of the body "
                    f"({len(binary) - offset} binary bytes left)"
                )
            array = from_bytes(name, datatype, shape, binary[offset : offset + size])
            offset += size
        else:
            if "data" not in item:
                raise BadRequest(f"input {name!r} has neither 'data' nor binary_data_size")
            array = from_json(name, datatype, shape, item["data"])
        inputs.append(Tensor(name, str(datatype), array))
    if offset != len(binary):
        raise BadRequest(
            f"binary data sizes add up to {offset} bytes but {len(binary)} follow the JSON header"
        )

    outputs: list[RequestedOutput] | None = None
    if payload.get("outputs") is not None:
        raw_outputs = payload["outputs"]
        if not isinstance(raw_outputs, list):
            raise BadRequest("'outputs' must be a list")
        outputs = []
        for i, item in enumerate(raw_outputs):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise BadRequest(f"outputs[{i}] must be an object with a name")
            oparams = _object(item.get("parameters"), f"output {item['name']!r} parameters")
            flag = oparams.get("binary_data")
            if flag is not None and not isinstance(flag, bool):
                raise BadRequest(f"output {item['name']!r}: binary_data must be true or false")
            if "classification" in oparams:
                raise BadRequest(
                    "the classification extension is not supported: "
                    "ask for TASK.probabilities or TASK.json instead"
                )
            outputs.append(RequestedOutput(item["name"], flag))
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    request = InferRequest(model, version, inputs, outputs, request_id, params, binary_default)
    return request, binary_default


def render_infer_response(response: InferResponse, binary: dict[str, bool | None]) -> Response:
    """JSON, or JSON header + binary outputs when any output goes binary."""
    chunks: list[bytes] = []
    outputs = []
    for t in response.outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if binary.get(t.name):
            data = to_bytes(t)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = to_json_data(t)
        outputs.append(entry)
    head: dict[str, Any] = {
        "model_name": response.model,
        "model_version": response.version,
        "outputs": outputs,
    }
    if response.id is not None:
        head["id"] = response.id
    header = orjson.dumps(head)
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(
        b"".join([header, *chunks]),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
