"""API keys: one rule for every HTTP route and gRPC call.

When keys are configured, every call needs one (``X-API-Key: KEY`` or
``Authorization: Bearer KEY``; over gRPC the same names as metadata), except the server-level
health checks that orchestrators probe: HTTP ``/v2/health/live`` and ``/v2/health/ready``,
gRPC ``ServerLive`` and ``ServerReady``. Keys are compared in constant time, against all.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from pydantic import SecretStr

from serving.errors import Unauthorized

#: gRPC methods open without a key, as the HTTP health routes are
OPEN_RPCS = frozenset({"ServerLive", "ServerReady"})


def given_key(x_api_key: str | None, authorization: str | None) -> str:
    """The key a caller sent, from either header."""
    given = (x_api_key or "").strip()
    auth = authorization or ""
    if not given and auth[:7].lower() == "bearer ":
        given = auth[7:].strip()
    return given


def check_key(keys: Sequence[SecretStr], x_api_key: str | None, authorization: str | None) -> None:
    """Nothing when no keys are configured or a valid one is given; else ``Unauthorized``."""
    if not keys:
        return
    given = given_key(x_api_key, authorization).encode()
    ok = False
    for key in keys:  # every key, always: the time does not say which one matched
        ok |= hmac.compare_digest(given, key.get_secret_value().encode())
    if not ok:
        raise Unauthorized("missing or invalid API key (send X-API-Key or Authorization: Bearer)")
