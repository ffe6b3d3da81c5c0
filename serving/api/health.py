"""Liveness, readiness and Prometheus metrics (no API key needed)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from serving.api.errors import error_response
from serving.api.openapi import errors

router = APIRouter(tags=["health"])


@router.get("/v2/health/live", summary="The process is up")
async def live() -> dict[str, bool]:
    """Always true while the process answers."""
    return {"live": True}


@router.get("/v2/health/ready", summary="Every model has a version serving", responses=errors(503))
async def ready(request: Request) -> Response:
    """200 when every model has a version whose backend can serve now, 503 otherwise."""
    repo = request.app.state.repository
    if not repo.ready():
        return error_response(503, "not ready: no model version is serving yet")
    down = [n for n in repo.names() if not repo.get(n).backend.ready()]
    if down:
        return error_response(503, f"not ready: the backend of {', '.join(down)} is down")
    return Response(b'{"ready":true}', media_type="application/json")


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Text exposition of the app's registry."""
    m = request.app.state.metrics
    for name in request.app.state.repository.names():
        mv = request.app.state.repository.get(name)
        m.queued.labels(name).set(mv.batcher.queued)
    return Response(m.render(), media_type=m.content_type)
