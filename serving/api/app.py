"""The app factory: settings in, a FastAPI app out (nothing is built at import time)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from serving.api import docs, health, page, v1
from serving.api.errors import install_error_handlers
from serving.api.middleware import BodyLimit, RequestMetrics
from serving.api.v2 import rest as v2_rest
from serving.api.v2.protocol import InferenceProtocol
from serving.backends.factory import BackendFactory, backend_factory_for
from serving.metrics import Metrics
from serving.repository import BatchingConfig, ModelRepository
from serving.service import PredictionService, RequestLimits
from serving.settings import Settings

log = logging.getLogger(__name__)


def create_app(
    settings: Settings | None = None, backend_factory: BackendFactory | None = None
) -> FastAPI:
    """Build the gateway; models load when the app starts (lifespan)."""
    settings = settings or Settings()
    metrics = Metrics()
    repository = ModelRepository(
        settings.repo,
        backend_factory or backend_factory_for(settings),
        BatchingConfig(
            settings.max_batch_size, settings.max_queue_delay_ms, settings.max_queue_size
        ),
        metrics,
        max_versions=settings.max_versions,
        control=settings.model_control_mode,
        startup_models=settings.load_models,
    )
    service = PredictionService(
        repository,
        RequestLimits(
            settings.max_image_pixels,
            settings.min_image_side,
            settings.max_images_per_request,
            settings.max_response_bytes,
        ),
        metrics,
    )

    protocol = InferenceProtocol(service, settings.reject_nonfinite_tensors)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await repository.start(settings.reload_interval_s)
        log.info("serving %s from %s", repository.names(), settings.repo)
        grpc_server = None
        if settings.grpc_port is not None:
            from serving.api.v2.grpc_server import start_grpc_server

            grpc_server, app.state.grpc_port = await start_grpc_server(
                protocol, settings, metrics, settings.grpc_port
            )
        try:
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(grace=2.0)
            await repository.stop()
            service.close()

    app = FastAPI(
        title="polyhead",
        summary="Multi-task model gateway: one forward pass, every task, decoded.",
        version="0.1.0",
        lifespan=lifespan,
        # served by serving.api.docs from local files instead of FastAPI's CDN-backed pages
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.repository = repository
    app.state.service = service
    app.state.protocol = protocol
    app.state.grpc_port = None
    install_error_handlers(app)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(health.router)
    app.include_router(v1.router)
    app.include_router(v2_rest.router)
    app.include_router(page.router)
    app.include_router(docs.router)
    app.mount("/static", page.static_files(), name="static")
    app.mount(docs.PREFIX, docs.static_files(), name="static-docs")
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestMetrics, metrics=metrics)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document without its 422 entries: invalid parameters are answered 400 here."""
    if app.openapi_schema is None:
        doc = get_openapi(
            title=app.title, version=app.version, summary=app.summary, routes=app.routes
        )
        for path in doc.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        schemas = doc.get("components", {}).get("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        app.openapi_schema = doc
    return app.openapi_schema
