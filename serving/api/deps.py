"""Dependencies shared by the routes, as named ``Annotated`` aliases.

They are ``async``: FastAPI runs a plain ``def`` dependency on a worker thread, and four thread
hops per request cost more than the model on a small input (seen in a py-spy profile).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from serving.errors import Unauthorized
from serving.repository import ModelRepository
from serving.service import PredictionService
from serving.settings import Settings


async def get_settings(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


async def get_service(request: Request) -> PredictionService:
    """The app's prediction service."""
    return request.app.state.service


async def get_repository(request: Request) -> ModelRepository:
    """The app's model repository."""
    return request.app.state.repository


async def require_api_key(request: Request) -> None:
    """401 unless a configured API key is given (``X-API-Key`` or ``Authorization: Bearer``)."""
    settings: Settings = request.app.state.settings
    if not settings.api_keys:
        return
    given = request.headers.get("x-api-key", "")
    auth = request.headers.get("authorization", "")
    if not given and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    # compare against every key, always, in constant time per key
    ok = False
    for key in settings.api_keys:
        ok |= hmac.compare_digest(given.encode(), key.get_secret_value().encode())
    if not ok:
        raise Unauthorized("missing or invalid API key (send X-API-Key or Authorization: Bearer)")


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[PredictionService, Depends(get_service)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
Authorized = Depends(require_api_key)
