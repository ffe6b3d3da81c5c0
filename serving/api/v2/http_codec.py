"""The HTTP form of v2 requests and responses: JSON, with the binary tensor extension.

A request body is a JSON header, optionally followed by binary tensor data; when binary data
follows, the ``Inference-Header-Content-Length`` header gives the JSON part's length and each
binary input gives its size in ``parameters.binary_data_size``, in input order. Outputs come
back binary when asked (``binary_data`` per output, or ``binary_data_output`` for all).

BYTES elements in JSON ``data`` are UTF-8 text, as Triton reads them. To carry arbitrary bytes
(an encoded image) in pure JSON, give the input the parameter ``"content_type": "base64"`` (the
convention of MLServer and the KServe SDK's codecs): each element is then the base64 of the
bytes. Bodies may be gzip (several members too) or deflate encoded; they are inflated whole,
within the body limit, and trailing data after the compressed stream is refused.
"""

from __future__ import annotations

import binascii
import zlib
from typing import Any

import numpy as np
import orjson
import pybase64

from serving.api.v2.binary import from_bytes, to_bytes
from serving.api.v2.wire import (
    InferRequest,
    InferResponse,
    RequestedOutput,
    Tensor,
    check_datatype,
    check_name,
    check_shape,
    element_count,
)
from serving.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

HEADER_LENGTH = "inference-header-content-length"
_GZIP_MAGIC = b"\x1f\x8b"


# ---- bodies ------------------------------------------------------------------------------------


def inflate(body: bytes, encoding: str | None, limit: int) -> bytes:
    """``body`` decoded from its Content-Encoding (identity, gzip or deflate), at most ``limit``."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding[:40]!r}: use gzip, deflate or identity"
        )
    gzip = encoding != "deflate"
    out = bytearray()
    rest = body
    while True:
        inflater = zlib.decompressobj(wbits=31 if gzip else 15)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as e:
            raise BadRequest(f"body is not valid {encoding} data: {e}") from e
        if len(out) > limit or inflater.unconsumed_tail:
            raise PayloadTooLarge(f"decompressed body exceeds the limit of {limit} bytes")
        if not inflater.eof:
            raise BadRequest(f"{encoding} body is truncated")
        rest = inflater.unused_data
        if not rest:
            return bytes(out)
        if not (gzip and rest.startswith(_GZIP_MAGIC)):  # another gzip member may follow
            raise BadRequest(f"{len(rest)} bytes of trailing data after the {encoding} stream")


# ---- tensors in JSON ---------------------------------------------------------------------------


def _flatten(name: str, data: Any) -> list[Any]:
    """JSON ``data`` may be flat or nested row-major; both mean the same elements."""
    if not isinstance(data, list):
        raise BadRequest(f"input {name!r}: 'data' must be a list, got {type(data).__name__}")
    if not any(isinstance(d, list) for d in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _bytes_elements(name: str, flat: list[Any], base64: bool) -> np.ndarray:
    out = np.empty(len(flat), dtype=object)
    for i, v in enumerate(flat):
        if not isinstance(v, str):
            raise BadRequest(
                f"input {name!r}: BYTES data must be strings, element {i} is {type(v).__name__}"
            )
        if base64:
            try:
                out[i] = pybase64.b64decode(v, validate=True)
            except (binascii.Error, ValueError) as e:
                raise BadRequest(f"input {name!r}: element {i} is not valid base64: {e}") from e
        else:
            out[i] = v.encode()
    return out


def from_json(
    name: str, datatype: Any, shape: Any, data: Any, content_type: str | None = None
) -> np.ndarray:
    """A tensor from the JSON ``data`` of a request (``content_type`` "base64" for BYTES)."""
    dtype = check_datatype(name, datatype)
    dims = check_shape(name, shape)
    flat = _flatten(name, data)
    count = element_count(dims)
    if len(flat) != count:
        raise BadRequest(
            f"input {name!r}: shape {list(dims)} needs {count} elements, data has {len(flat)}"
        )
    if content_type not in (None, "str", "base64"):
        raise BadRequest(
            f"input {name!r}: parameter content_type must be 'base64' or 'str', "
            f"got {content_type!r}"
        )
    if datatype == "BYTES":
        return _bytes_elements(name, flat, content_type == "base64").reshape(dims)
    if content_type == "base64":
        raise BadRequest(f"input {name!r}: content_type 'base64' applies to BYTES inputs only")
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise BadRequest(f"input {name!r}: BOOL data must be true/false")
    elif dtype.kind in "iu":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            raise BadRequest(f"input {name!r}: {datatype} data must be integers")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise BadRequest(f"input {name!r}: {datatype} data must be numbers")
    try:
        return np.asarray(flat, dtype=dtype).reshape(dims)
    except (OverflowError, ValueError, TypeError) as e:
        raise BadRequest(f"input {name!r}: values do not fit {datatype}") from e


def to_json_data(tensor: Tensor) -> list[Any]:
    """The flat JSON ``data`` list of a tensor (BYTES as UTF-8 text)."""
    flat = tensor.array.ravel()
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    if tensor.datatype in ("FP16", "FP32", "FP64"):
        return flat.astype(np.float64).tolist()
    return flat.tolist()


# ---- requests ----------------------------------------------------------------------------------


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be an object")
    return value


def check_parameters(params: dict[str, Any], what: str) -> dict[str, Any]:
    """Parameter values are strings, numbers or booleans (the protocol's ``InferParameter``)."""
    for key, value in params.items():
        if not isinstance(value, str | int | float | bool):
            raise BadRequest(f"{what}: parameter {key!r} must be a string, number or boolean")
    if "shared_memory_region" in params:
        raise BadRequest(f"{what}: shared memory is not supported; send the data in the request")
    return params


def _split(body: bytes, header_length: str | None) -> tuple[bytes, memoryview]:
    if header_length is None:
        return body, memoryview(b"")
    if not (header_length.isascii() and header_length.strip().isdigit()):
        raise BadRequest(f"{HEADER_LENGTH} must be an integer, got {header_length[:40]!r}")
    n = int(header_length)
    if not 0 < n <= len(body):
        raise BadRequest(f"{HEADER_LENGTH} is {n} but the body has {len(body)} bytes")
    return body[:n], memoryview(body)[n:]


def parse_infer_request(
    body: bytes, header_length: str | None, model: str, version: str | None
) -> InferRequest:
    """A request body (JSON, or JSON + binary) as an ``InferRequest``."""
    head, binary = _split(body, header_length)
    if not head:
        raise BadRequest("empty body: expected a JSON inference request")
    try:
        payload = orjson.loads(head)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"inference request is not valid JSON: {e}") from e
    if not isinstance(payload, dict):
        raise BadRequest("inference request must be a JSON object")
    params = check_parameters(_object(payload.get("parameters"), "parameters"), "request")
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
        name = check_name(f"inputs[{i}]", item.get("name"))
        if any(t.name == name for t in inputs):
            raise BadRequest(f"input {name!r} is given twice")
        datatype, shape = item.get("datatype"), item.get("shape")
        if "shape" not in item:
            raise BadRequest(f"input {name!r} has no 'shape'")
        iparams = check_parameters(
            _object(item.get("parameters"), f"input {name!r} parameters"), f"input {name!r}"
        )
        content_type = iparams.get("content_type")
        if content_type is not None and not isinstance(content_type, str):
            raise BadRequest(f"input {name!r}: parameter content_type must be a string")
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
            array = from_json(name, datatype, shape, item["data"], content_type)
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
            if not isinstance(item, dict):
                raise BadRequest(f"outputs[{i}] must be an object")
            oname = check_name(f"outputs[{i}]", item.get("name"))
            oparams = check_parameters(
                _object(item.get("parameters"), f"output {oname!r} parameters"),
                f"output {oname!r}",
            )
            flag = oparams.get("binary_data")
            if flag is not None and not isinstance(flag, bool):
                raise BadRequest(f"output {oname!r}: binary_data must be true or false")
            outputs.append(RequestedOutput(oname, flag, oparams.get("classification")))
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadRequest("'id' must be a string")
    return InferRequest(model, version, inputs, outputs, request_id, params, binary_default)


# ---- responses ---------------------------------------------------------------------------------


def render_infer_response(response: InferResponse, request: InferRequest) -> tuple[bytes, int]:
    """The response body, and the JSON header's length when binary outputs follow (else 0)."""
    chunks: list[bytes] = []
    outputs = []
    for t in response.outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if request.binary(t.name):
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
    if response.parameters:
        head["parameters"] = response.parameters
    header = orjson.dumps(head)
    if not chunks:
        return header, 0
    return b"".join([header, *chunks]), len(header)
