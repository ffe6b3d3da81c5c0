"""Translate every error into ``{"error": "..."}`` with its status, in one place."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from serving.errors import Overloaded, PolyheadError

log = logging.getLogger(__name__)


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The JSON error body every endpoint uses."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _polyhead(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PolyheadError)
    headers = None
    if isinstance(exc, Overloaded):
        headers = {"Retry-After": str(int(exc.retry_after))}
    if exc.status >= 500 and not isinstance(exc, Overloaded):
        log.error("%s %s: %s", request.method, request.url.path, exc.message)
    return error_response(exc.status, exc.message, headers)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return error_response(400, "invalid request: " + "; ".join(parts))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail), getattr(exc, "headers", None))


async def _disconnected(request: Request, exc: Exception) -> JSONResponse:
    # the client went away (or its body framing broke) before the body was complete: not a
    # server fault; the answer is likely never read
    log.info("%s %s: the client disconnected mid-body", request.method, request.url.path)
    return error_response(400, "the request body ended before it was complete")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Register the translation table on ``app``."""
    app.add_exception_handler(PolyheadError, _polyhead)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(ClientDisconnect, _disconnected)
    app.add_exception_handler(Exception, _unexpected)
