"""``/v2`` over HTTP: thin routes over ``InferenceProtocol`` and the HTTP codec.

Health routes (``/v2/health/live`` and ``/ready``, open to probes) live in ``serving.api.health``;
everything here needs the API key when keys are configured.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.api.deps import Authorized
from serving.api.openapi import INFER_BODY, INFER_RESPONSES, errors
from serving.api.v2.http_codec import (
    HEADER_LENGTH,
    check_parameters,
    inflate,
    parse_infer_request,
    render_infer_response,
)
from serving.api.v2.protocol import InferenceProtocol
from serving.errors import BadRequest

router = APIRouter(prefix="/v2", tags=["v2"], dependencies=[Authorized])

_ERRORS = errors(400, 401, 404)


def _protocol(request: Request) -> InferenceProtocol:
    return request.app.state.protocol


def _json(content: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(content), status_code=status, media_type="application/json")


async def _json_body(request: Request) -> dict[str, Any]:
    """An optional JSON object body (repository calls)."""
    body = inflate(
        await request.body(),
        request.headers.get("content-encoding"),
        request.app.state.settings.max_body_bytes,
    )
    if not body.strip():
        return {}
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e}") from e
    if not isinstance(payload, dict):
        raise BadRequest("body must be a JSON object")
    return payload


@router.get("", summary="Server metadata", responses=errors(401))
async def server_metadata(request: Request) -> Response:
    """Name, version and protocol extensions."""
    return _json(_protocol(request).server_metadata())


@router.get("/models/stats", summary="Statistics of every model", responses=_ERRORS)
async def all_statistics(request: Request) -> Response:
    """Triton's statistics extension for every loaded version."""
    return _json(_protocol(request).statistics(None, None))


@router.get("/models/{name}/stats", summary="Statistics of a model's versions", responses=_ERRORS)
@router.get(
    "/models/{name}/versions/{version}/stats",
    summary="Statistics of a model version",
    responses=_ERRORS,
)
async def model_statistics(request: Request, name: str, version: str | None = None) -> Response:
    """Triton's statistics extension: counts and durations since each version loaded."""
    return _json(_protocol(request).statistics(name, version))


@router.get("/models/{name}", summary="Model metadata (newest version)", responses=_ERRORS)
@router.get("/models/{name}/versions/{version}", summary="Model metadata", responses=_ERRORS)
async def model_metadata(request: Request, name: str, version: str | None = None) -> Response:
    """Inputs and outputs with datatype and shape."""
    return _json(_protocol(request).model_metadata(name, version))


@router.get(
    "/models/{name}/ready",
    summary="Model readiness (newest version)",
    responses=errors(400, 401, 404, 503),
)
@router.get(
    "/models/{name}/versions/{version}/ready",
    summary="Model readiness",
    responses=errors(400, 401, 404, 503),
)
async def model_ready(request: Request, name: str, version: str | None = None) -> Response:
    """200 when the version can serve now, else 503 (404 for an unknown model)."""
    protocol = _protocol(request)
    protocol.model(name, version)  # unknown model or version: 404
    if protocol.model_ready(name, version):
        return _json({"name": name, "ready": True})
    return _json({"error": f"model {name!r} is not ready"}, 503)


@router.get("/models/{name}/config", summary="Model configuration", responses=_ERRORS)
@router.get(
    "/models/{name}/versions/{version}/config", summary="Model configuration", responses=_ERRORS
)
async def model_config(request: Request, name: str, version: str | None = None) -> Response:
    """Triton's model configuration (JSON form)."""
    return _json(_protocol(request).model_config(name, version))


@router.post("/repository/index", summary="Models in the repository", responses=errors(400, 401))
async def repository_index(request: Request) -> Response:
    """Every model and version with its state (``{"ready": true}``: the ready ones only)."""
    payload = await _json_body(request)
    ready = payload.get("ready", False)
    if not isinstance(ready, bool):
        raise BadRequest("'ready' must be true or false")
    return _json(_protocol(request).repository_index(ready))


async def _control_parameters(request: Request, what: str) -> dict[str, Any]:
    payload = await _json_body(request)
    raw = payload.get("parameters")
    if raw is not None and not isinstance(raw, dict):
        raise BadRequest("'parameters' must be an object")
    params = check_parameters(raw or {}, f"{what} request")
    if any(k.startswith("file:") for k in params):
        raise BadRequest(f"{what}: model files in the request are not supported")
    return params


@router.post(
    "/repository/models/{name}/load",
    summary="Load a model (explicit model control mode)",
    responses=errors(400, 401),
)
async def load_model(request: Request, name: str) -> Response:
    """Load, or reload from disk, a model's newest versions."""
    params = await _control_parameters(request, "load")
    await _protocol(request).load(name, params.get("config"))
    return _json({})


@router.post(
    "/repository/models/{name}/unload",
    summary="Unload a model (explicit model control mode)",
    responses=errors(400, 401),
)
async def unload_model(request: Request, name: str) -> Response:
    """Stop serving a model; requests already running finish."""
    await _control_parameters(request, "unload")
    await _protocol(request).unload(name)
    return _json({})


@router.post(
    "/models/{name}/infer",
    summary="Inference (newest version)",
    openapi_extra=INFER_BODY,
    responses=INFER_RESPONSES,
)
@router.post(
    "/models/{name}/versions/{version}/infer",
    summary="Inference",
    openapi_extra=INFER_BODY,
    responses=INFER_RESPONSES,
)
async def infer(request: Request, name: str, version: str | None = None) -> Response:
    """One forward pass; JSON or binary tensors in and out."""
    protocol = _protocol(request)
    protocol.model(name, version)  # unknown model or version: 404 before reading the body
    body = inflate(
        await request.body(),
        request.headers.get("content-encoding"),
        request.app.state.settings.max_body_bytes,
    )
    infer_request = parse_infer_request(body, request.headers.get(HEADER_LENGTH), name, version)
    response = await protocol.infer(infer_request)
    content, header_length = render_infer_response(response, infer_request)
    if not header_length:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(header_length)},
    )
