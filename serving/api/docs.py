"""``/docs`` (Swagger UI) and ``/redoc``, with every file they load served by the gateway.

FastAPI's own pages load Swagger UI and Redoc from a CDN, so they are blank offline. The files
come from the ``fastapi-offline`` package (Swagger UI and Redoc bundles, kept up to date, no
dependency beyond FastAPI) and are served under ``/static-docs``; the HTML is FastAPI's. A
Content-Security-Policy keeps the pages on this origin: Redoc's sidebar would otherwise fetch
its vendor's logo from the vendor's CDN.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

PREFIX = "/static-docs"
FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "redoc.standalone.js")
# inline: FastAPI's pages start Swagger UI with an inline script; blob: Redoc's search worker
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)

router = APIRouter(include_in_schema=False)


def assets() -> Path:
    """The folder of Swagger UI's and Redoc's files (fails at startup if the package lacks one)."""
    folder = Path(str(files("fastapi_offline") / "static"))
    missing = [f for f in FILES if not (folder / f).is_file()]
    if missing:
        raise RuntimeError(f"fastapi-offline has no {', '.join(missing)} in {folder}")
    return folder


def static_files() -> StaticFiles:
    """The docs' scripts and styles, to mount at :data:`PREFIX`."""
    return StaticFiles(directory=assets())


def _local(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = CSP
    return response


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the OpenAPI document."""
    root = request.scope.get("root_path", "")
    return _local(
        get_swagger_ui_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{request.app.title} - API",
            oauth2_redirect_url=f"{root}/docs/oauth2-redirect",
            swagger_js_url=f"{root}{PREFIX}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{PREFIX}/swagger-ui.css",
            swagger_favicon_url=f"{root}/favicon.ico",
            # else Swagger UI sends the document to an online validator for a badge
            swagger_ui_parameters={"validatorUrl": None},
        )
    )


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page."""
    return _local(get_swagger_ui_oauth2_redirect_html())


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """Redoc over the OpenAPI document."""
    root = request.scope.get("root_path", "")
    return _local(
        get_redoc_html(
            openapi_url=f"{root}/openapi.json",
            title=f"{request.app.title} - API reference",
            redoc_js_url=f"{root}{PREFIX}/redoc.standalone.js",
            redoc_favicon_url=f"{root}/favicon.ico",
            with_google_fonts=False,
        )
    )
