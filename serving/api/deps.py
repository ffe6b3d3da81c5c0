"""Dependencies shared by the routes, as named ``Annotated`` aliases.

They are ``async``: FastAPI runs a plain ``def`` dependency on a worker thread, and four thread
hops per request cost more than the model on a small input (seen in a py-spy profile).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from serving.auth import check_key
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


# Declared so the OpenAPI document has security schemes: /docs then offers "Authorize" and its
# "Try it out" sends the key. Their values are not used: the headers are read as they came.
API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="One of POLYHEAD_API_KEYS, when set."
)
BEARER = HTTPBearer(auto_error=False, description="The same key as `Authorization: Bearer KEY`.")


async def require_api_key(
    request: Request,
    _key: Annotated[str | None, Security(API_KEY_HEADER)],
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> None:
    """401 unless a configured API key is given (the rule of ``serving.auth``)."""
    settings: Settings = request.app.state.settings
    check_key(
        settings.api_keys, request.headers.get("x-api-key"), request.headers.get("authorization")
    )


SettingsDep = Annotated[Settings, Depends(get_settings)]
ServiceDep = Annotated[PredictionService, Depends(get_service)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
Authorized = Depends(require_api_key)
