"""The HTTP/1.1 connection protocol under the app: uvicorn's, with a header limit and JSON errors.

uvicorn answers a request it cannot parse with a plain-text 400 and puts no bound on the size
of the request line and headers. This subclass answers those as the app answers everything,
``{"error": "..."}``, and refuses a request line plus headers over ``max_header_bytes`` with a
431 as soon as that many bytes have arrived (so an endless header costs no more memory).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

_REASONS = {400: b"Bad Request", 431: b"Request Header Fields Too Large"}


def _error(status: int, message: str) -> bytes:
    body = orjson.dumps({"error": message})
    head = b"HTTP/1.1 %d %s\r\n" % (status, _REASONS[status])
    head += b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
    return head + b"connection: close\r\n\r\n" + body


def protocol_class(max_header_bytes: int) -> type[asyncio.Protocol]:
    """Uvicorn's httptools protocol, bounded to ``max_header_bytes`` of request line + headers."""

    class BoundedHttpProtocol(HttpToolsProtocol):
        """See the module docstring."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_headers = False
            self._header_bytes = 0  # request line and complete headers, exactly
            self._raw_bytes = 0  # everything received while inside the headers
            self._too_large = False

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_headers, self._too_large = True, False
            self._header_bytes = self._raw_bytes = 0

        def _count(self, n: int) -> None:
            self._header_bytes += n
            if self._header_bytes > max_header_bytes:
                self._too_large = True
                raise ValueError("request headers too large")  # stops the parser: 431 below

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._count(len(name) + len(value) + 4)
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            super().on_headers_complete()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._in_headers and not self.transport.is_closing():
                # a header still arriving: bound what the parser buffers before calling back
                self._raw_bytes += len(data)
                if self._raw_bytes > 2 * max_header_bytes:
                    self._too_large = True
                    self.send_400_response("request headers too large")

        def send_400_response(self, msg: str) -> None:
            if self._too_large:
                out = _error(
                    431,
                    f"request line and headers exceed the limit of {max_header_bytes} bytes",
                )
            else:
                out = _error(400, "invalid HTTP request: the request line or a header is malformed")
            self.transport.write(out)
            self.transport.close()

    return BoundedHttpProtocol
