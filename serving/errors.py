"""Errors of the serving side: one base class, each subclass says which HTTP status it becomes.

They are raised anywhere below the routes and translated to ``{"error": "..."}`` responses in one
place (``serving.api.errors``). Third-party errors are translated at the boundary where they
occur (``raise ... from e``).
"""

from __future__ import annotations


class PolyheadError(Exception):
    """Base class: ``status`` is the HTTP status the error maps to."""

    status: int = 500

    def __init__(self, message: str) -> None:
        """An error whose message is shown to the client as is."""
        super().__init__(message)
        self.message = message


class BadRequest(PolyheadError):
    """The request is malformed (bad JSON, bad base64, wrong parameter)."""

    status = 400


class InvalidImage(BadRequest):
    """The bytes are not an image we can decode (corrupt, truncated, unsupported format)."""


class Unauthorized(PolyheadError):
    """No valid API key."""

    status = 401


class NotFound(PolyheadError):
    """An unknown model, version or task."""

    status = 404


class PayloadTooLarge(PolyheadError):
    """The body or an image exceeds a configured limit."""

    status = 413


class UnsupportedMediaType(PolyheadError):
    """A content type the endpoint does not take."""

    status = 415


class Overloaded(PolyheadError):
    """The queue is full: come back later (503 with Retry-After)."""

    status = 503

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        """Overloaded; clients should retry after ``retry_after`` seconds."""
        super().__init__(message)
        self.retry_after = retry_after


class ModelNotReady(PolyheadError):
    """The model exists but cannot serve now (loading, or its backend is down)."""

    status = 503


class BackendUnavailable(ModelNotReady):
    """The inference backend (a Triton server) is unreachable, not ready, or timed out."""


class ModelLoadError(PolyheadError):
    """A model version could not be loaded (bad manifest, graph mismatch, unreadable file)."""

    status = 500


class BackendError(PolyheadError):
    """The inference backend failed on a valid request."""

    status = 500
