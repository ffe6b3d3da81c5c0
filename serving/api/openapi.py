"""What the OpenAPI document says of bodies the routes parse themselves, and of errors.

The v2 inference body is read by ``serving.api.v2.http_codec`` (not by FastAPI: it may carry
binary tensor data after its JSON), so its schema is given here; so are the error responses,
which every route answers as ``{"error": "..."}``.
"""

from __future__ import annotations

from typing import Any

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "What was wrong."}},
}

_WHY = {
    400: "Malformed request: the message names the field.",
    401: "Missing or invalid API key.",
    404: "Unknown model, version, task or output.",
    413: "Body, image count or response over a limit.",
    415: "Unsupported Content-Type or Content-Encoding.",
    503: "Not ready, or overloaded (Retry-After).",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses."""
    return {
        s: {"description": _WHY[s], "content": {"application/json": {"schema": ERROR_SCHEMA}}}
        for s in statuses
    }


_PARAMETERS = {
    "type": "object",
    "additionalProperties": {"type": ["string", "number", "integer", "boolean"]},
}
_TENSOR_IN = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "example": "image_bytes"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}, "example": [1, 1]},
        "datatype": {
            "type": "string",
            "enum": [
                "BOOL",
                "UINT8",
                "UINT16",
                "UINT32",
                "UINT64",
                "INT8",
                "INT16",
                "INT32",
                "INT64",
                "FP16",
                "FP32",
                "FP64",
                "BYTES",
            ],
        },
        "parameters": _PARAMETERS,
        "data": {"type": "array", "description": "Row-major values, flat or nested."},
    },
}
_TENSOR_OUT = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "datatype": {"type": "string"},
        "parameters": _PARAMETERS,
        "data": {"type": "array"},
    },
}
INFER_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR_IN},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "parameters": _PARAMETERS},
            },
        },
    },
}
INFER_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["model_name", "outputs"],
    "properties": {
        "model_name": {"type": "string"},
        "model_version": {"type": "string"},
        "id": {"type": "string"},
        "parameters": _PARAMETERS,
        "outputs": {"type": "array", "items": _TENSOR_OUT},
    },
}

INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": (
            "An inference request. With the binary tensor extension the JSON is followed by "
            "the tensors' bytes (header Inference-Header-Content-Length). An encoded image in "
            'pure JSON: input "image_bytes", datatype BYTES, parameters {"content_type": '
            '"base64"}, data [base64 string].'
        ),
        "content": {
            "application/json": {
                "schema": INFER_REQUEST,
                "example": {
                    "inputs": [
                        {
                            "name": "image_bytes",
                            "shape": [1, 1],
                            "datatype": "BYTES",
                            "parameters": {"content_type": "base64"},
                            "data": ["<base64 of a JPEG or PNG>"],
                        }
                    ],
                    "outputs": [{"name": "semseg.json"}],
                },
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The outputs (JSON, or JSON then binary outputs).",
        "content": {
            "application/json": {"schema": INFER_RESPONSE},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **errors(400, 401, 404, 413, 415, 503),
}
