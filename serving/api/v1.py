"""``/v1``: the friendly API.

Images in (multipart, JSON base64, or a raw image body), every task's decoded prediction out,
from one forward pass.
"""

from __future__ import annotations

import binascii
from typing import Annotated, Any

import orjson
import pybase64
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException

from serving.api.deps import Authorized, RepositoryDep, ServiceDep, SettingsDep
from serving.api.openapi import errors
from serving.decoding import parse_options
from serving.errors import BadRequest, UnsupportedMediaType
from serving.kinds import get_kind
from serving.repository import ModelVersion

router = APIRouter(prefix="/v1", tags=["v1"], dependencies=[Authorized])

_PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                    },
                },
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "byte"}}
                    },
                },
                "example": {"images": ["<base64 of a PNG or JPEG>"]},
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class JSONBytes(Response):
    """orjson-rendered JSON (fast on the large base64 strings of dense maps)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise ``content``."""
        return orjson.dumps(content)


def describe(mv: ModelVersion, versions: list[int]) -> dict[str, Any]:
    """Public description of a model version."""
    m = mv.manifest
    return {
        "name": mv.name,
        "version": mv.version,
        "versions": versions,
        "device": mv.backend.device,
        "input": m.input.model_dump(),
        "max_batch_size": mv.batcher.max_batch_size,
        "tasks": [
            {
                "name": t.name,
                "kind": t.kind,
                "labels": t.labels,
                "threshold": t.threshold,
                "units": t.units,
                "output_shape": list(m.output_shape(t.name)),
                "dense": t.dense,
                "decoded_in_graph": [d.name for d in t.decoded],
                "view": get_kind(t.kind).view,
            }
            for t in m.tasks
        ],
        "metrics": m.metrics,
    }


@router.get("/models", summary="List the models and their loaded versions", responses=errors(401))
async def list_models(repo: RepositoryDep) -> dict[str, Any]:
    """Every model with at least one version serving."""
    return {
        "models": [
            {"name": n, "versions": repo.versions(n), "latest": max(repo.versions(n))}
            for n in repo.names()
        ],
        "failed_versions": repo.failures(),
    }


@router.get(
    "/models/{name}",
    summary="Describe a model: tasks, labels, input, version, device",
    responses=errors(400, 401, 404),
)
async def get_model(name: str, repo: RepositoryDep, version: int | None = None) -> dict[str, Any]:
    """The newest (or the pinned) version of a model."""
    return describe(repo.get(name, version), repo.versions(name))


async def _read_images(request: Request, settings: Any) -> list[bytes]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        try:
            form = await request.form(max_files=settings.max_images_per_request + 1, max_fields=16)
        except MultiPartException as e:
            raise BadRequest(f"malformed multipart body: {e.message}") from e
        parts = form.getlist("file") + form.getlist("files")
        if not parts:
            raise BadRequest("multipart body has no part named 'file' or 'files'")
        images = []
        for part in parts:
            if not isinstance(part, UploadFile):
                raise BadRequest("the 'file'/'files' parts must be file uploads")
            images.append(await part.read())
        return images
    if ctype == "application/json":
        body = await request.body()
        if not body:
            raise BadRequest("empty body")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise BadRequest(f"body is not valid JSON: {e}") from e
        if not isinstance(payload, dict) or "images" not in payload:
            raise BadRequest('JSON body must be an object {"images": ["<base64>", ...]}')
        items = payload["images"]
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise BadRequest('"images" must be a list of base64 strings')
        images = []
        for i, item in enumerate(items):
            if item.startswith("data:") and "," in item:
                item = item.split(",", 1)[1]  # data URL
            try:
                images.append(pybase64.b64decode(item, validate=True))
            except (binascii.Error, ValueError) as e:
                raise BadRequest(f"images[{i}] is not valid base64: {e}") from e
        return images
    if ctype.startswith("image/") or ctype == "application/octet-stream":
        body = await request.body()
        if not body:
            raise BadRequest("empty body")
        return [body]
    if not ctype:
        raise UnsupportedMediaType(
            "missing Content-Type: send multipart/form-data, application/json or image/*"
        )
    raise UnsupportedMediaType(
        f"unsupported Content-Type {ctype!r}: send multipart/form-data, application/json or image/*"
    )


@router.post(
    "/models/{name}/predict",
    summary="Predict every task for one or more images (one forward pass)",
    openapi_extra=_PREDICT_BODY,
    response_class=JSONBytes,
    responses=errors(400, 401, 404, 413, 415, 503),
)
async def predict(
    name: str,
    request: Request,
    service: ServiceDep,
    settings: SettingsDep,
    tasks: Annotated[
        str | None, Query(description="Comma-separated task names (default: all).")
    ] = None,
    version: Annotated[int | None, Query(ge=1, description="Pin a model version.")] = None,
    encoding: Annotated[
        str | None, Query(description="Dense maps: float16 (default), png or json.")
    ] = None,
    resolution: Annotated[
        str | None,
        Query(
            description="Dense maps at the model's grid (model, the default; each map says the "
            "box of the image it covers) or at the image's own size (original)."
        ),
    ] = None,
    max_side: Annotated[
        int | None,
        Query(description="Maps at the image's size, but their long side at most this."),
    ] = None,
    top_k: Annotated[int | None, Query(description="Labels returned for classification.")] = None,
) -> JSONBytes:
    """Decoded predictions; the model runs once whatever ``tasks`` selects."""
    options = parse_options(encoding, resolution, top_k, max_side)
    service.repository.get(name, version)  # unknown model/version: 404 before reading the body
    images = await _read_images(request, settings)
    wanted = [t.strip() for t in tasks.split(",") if t.strip()] if tasks else None
    result = await service.predict(name, images, wanted, version, options)
    return JSONBytes(result)
