"""``/``: a page where a person uploads an image and sees every task's output.

The page is static files (``serving/api/static``: markup, styles, dependency-free scripts, a
favicon and sample scenes listed in ``samples/index.json``); how it draws each task comes from
the task kinds (``view`` in ``serving.kinds``), through ``/v1/models/{name}``.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The upload page."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/favicon.ico")
async def favicon() -> FileResponse:
    """The icon browsers ask for on every page (an SVG: every current browser draws one)."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


def static_files() -> StaticFiles:
    """The page's scripts, styles and sample images, served under ``/static``."""
    return StaticFiles(directory=STATIC)
