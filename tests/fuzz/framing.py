"""Raw HTTP/1.1 on a socket: framing no HTTP client library would send.

Content-Length wrong, negative, doubled or beside Transfer-Encoding; chunked bodies with bad
chunk sizes or extensions; header lines too long, too many, without a colon, with NUL or
non-ASCII bytes, folded; odd request lines (lowercase method, absolute URI, HTTP/1.0, bytes
above 0x7f in the target); bodies cut short with the write side closed. Every request says
``Connection: close`` so the answer ends at EOF.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.fuzz import harness
from tests.fuzz.media import scene_png

TARGETS = [
    ("POST", "/v2/models/scenes/infer", "application/json"),
    ("POST", "/v1/models/scenes/predict", "image/png"),
    ("GET", "/v2/models/scenes", None),
    ("GET", "/v2/health/ready", None),
]


def _small_infer() -> bytes:
    return json.dumps(
        {
            "inputs": [
                {"name": "image", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}
            ]
        }
    ).encode()


@dataclass
class RawCase:
    """Bytes to write, and whether the request is complete (so an answer is owed)."""

    data: bytes
    complete: bool
    note: str

    def __repr__(self) -> str:
        return f"RawCase<{self.note}: {harness.short(self.data, 300)}>"


def _chunked(body: bytes, style: str) -> bytes:
    if style == "bad-size":
        return b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    if style == "size-too-big":
        return f"{len(body) + 50:x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    if style == "huge-size":
        return b"ffffffffffffffff\r\n" + body[:10] + b"\r\n0\r\n\r\n"
    if style == "extension":
        return f"{len(body):x};name=value\r\n".encode() + body + b"\r\n0\r\n\r\n"
    if style == "no-terminator":
        return f"{len(body):x}\r\n".encode() + body + b"\r\n"
    if style == "trailer":
        return f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\nX-Trailer: 1\r\n\r\n"
    pieces = [body[i : i + 7] for i in range(0, len(body), 7)]
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"


FRAMINGS = [
    "ok",
    "chunked",
    "chunked-bad-size",
    "chunked-size-too-big",
    "chunked-huge-size",
    "chunked-extension",
    "chunked-no-terminator",
    "chunked-trailer",
    "cl-not-a-number",
    "cl-negative",
    "cl-plus-sign",
    "cl-two-different",
    "cl-and-te",
    "te-unknown",
    "cl-longer-than-body",
    "cl-shorter-than-body",
    "huge-header",
    "many-headers",
    "header-no-colon",
    "header-nul",
    "header-non-ascii",
    "header-folded",
    "space-before-colon",
    "lowercase-method",
    "absolute-uri",
    "http10",
    "http2-preface",
    "target-non-ascii",
    "target-space",
    "no-host",
    "expect-100",
    "empty-line-first",
]


@st.composite
def raw_requests(draw) -> RawCase:
    """One raw request, framed right or (mostly) wrong."""
    method, path, ctype = draw(st.sampled_from(TARGETS))
    body = b""
    if method == "POST":
        body = _small_infer() if ctype == "application/json" else scene_png(32, 24)
    framing = draw(st.sampled_from(FRAMINGS))
    version = "HTTP/1.1"
    headers = [("Host", "127.0.0.1"), ("Connection", "close")]
    if ctype:
        headers.append(("Content-Type", ctype))
    complete = True
    payload = body
    start = f"{method} {path} "
    if framing.startswith("chunked"):
        headers.append(("Transfer-Encoding", "chunked"))
        payload = _chunked(body, framing.removeprefix("chunked-") if framing != "chunked" else "ok")
        complete = framing not in (
            "chunked-size-too-big",
            "chunked-huge-size",
            "chunked-no-terminator",
        )
    elif framing == "cl-not-a-number":
        headers.append(
            ("Content-Length", draw(st.sampled_from(["abc", "1e3", "12 34", "0x10", "١٢"])))
        )
    elif framing == "cl-negative":
        headers.append(("Content-Length", "-1"))
    elif framing == "cl-plus-sign":
        headers.append(("Content-Length", f"+{len(body)}"))
    elif framing == "cl-two-different":
        headers += [("Content-Length", str(len(body))), ("Content-Length", str(len(body) + 1))]
    elif framing == "cl-and-te":
        headers += [("Content-Length", str(len(body))), ("Transfer-Encoding", "chunked")]
        payload = _chunked(body, "ok")
    elif framing == "te-unknown":
        headers.append(
            (
                "Transfer-Encoding",
                draw(st.sampled_from(["gzip", "chunked, gzip", "identity", "xchunked"])),
            )
        )
    elif framing == "cl-longer-than-body":
        headers.append(("Content-Length", str(len(body) + draw(st.integers(1, 1000)))))
        complete = False
    elif framing == "cl-shorter-than-body":
        headers.append(("Content-Length", str(max(0, len(body) - draw(st.integers(1, 20))))))
    else:
        headers.append(("Content-Length", str(len(body))))
    if framing == "huge-header":
        headers.append(("X-Big", "a" * draw(st.sampled_from([8_000, 17_000, 70_000, 300_000]))))
    elif framing == "many-headers":
        headers += [(f"X-H{i}", "v") for i in range(draw(st.sampled_from([100, 1000, 5000])))]
    elif framing == "lowercase-method":
        start = f"{method.lower()} {path} "
    elif framing == "absolute-uri":
        start = f"{method} http://127.0.0.1{path} "
    elif framing == "http10":
        version = "HTTP/1.0"
    elif framing == "target-space":
        start = f"{method} {path} x "
    elif framing == "no-host":
        headers = headers[1:]
    elif framing == "expect-100":
        headers.append(("Expect", "100-continue"))
    head = (start + version + "\r\n").encode()
    raw_headers = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers)
    if framing == "header-no-colon":
        raw_headers += b"X-Broken header\r\n"
    elif framing == "header-nul":
        raw_headers += b"X-Nul: a\x00b\r\n"
    elif framing == "header-non-ascii":
        raw_headers += "X-Name: ščenes\r\n".encode()
    elif framing == "header-folded":
        raw_headers += b"X-Folded: a\r\n b\r\n"
    elif framing == "space-before-colon":
        raw_headers += b"X-Space : a\r\n"
    elif framing == "target-non-ascii":
        head = f"{method} /v2/models/ščenes ".encode() + version.encode() + b"\r\n"
    elif framing == "http2-preface":
        return RawCase(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", True, framing)
    elif framing == "empty-line-first":
        head = b"\r\n" + head
    return RawCase(head + raw_headers + b"\r\n" + payload, complete, f"{framing} {method} {path}")


def exchange(gw: harness.Gateway, case: RawCase) -> tuple[bytes, float]:
    """Write the request (closing our side after an incomplete one); read until EOF."""
    started = time.monotonic()
    chunks = []
    with socket.create_connection(("127.0.0.1", gw.port), timeout=harness.HTTP_TIMEOUT) as s:
        try:
            s.sendall(case.data)
            if not case.complete:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server may stop reading (and close) before it has everything
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                chunks.append(data)
        except ConnectionResetError:
            pass
    return b"".join(chunks), time.monotonic() - started


def send_raw(gw: harness.Gateway, category: str, case: RawCase) -> None:
    """Send one raw request, count it and judge the answer (raises ``GatewayFault``)."""
    harness.COUNTS[category] += 1
    gw.since_check += 1
    desc, size = repr(case), len(case.data)
    try:
        data, _ = exchange(gw, case)
    except TimeoutError:
        harness.answered(category, "timeout")
        harness.fail(
            f"hang: no answer within {harness.HTTP_TIMEOUT:g}s ({category})", desc, "-", size
        )
    # the app may still be running (and logging) after the connection closed: let it finish, so
    # what it logs is put down to this request and not the next
    time.sleep(0.01 if case.complete else 0.1)
    if not data:
        harness.answered(category, "closed")
        logged = harness.error_blocks(gw.new_log())
        if logged:
            where = harness._signature(logged[-1])
            harness.fail(
                f"the server logged {where.split(': ')[0]}",
                desc,
                f"(connection closed) {where}",
                size,
            )
        if case.complete:
            harness.fail(
                f"complete request, connection closed without an answer ({case.note.split()[0]})",
                desc,
                "-",
                size,
            )
        return
    while data.startswith(b"HTTP/1.1 100 "):  # Expect: 100-continue, then the real answer
        data = data.partition(b"\r\n\r\n")[2]
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        harness.answered(category, "garbage")
        harness.fail("answer is not an HTTP response", desc, harness.short(data, 300), size)
    status = int(parts[1])
    harness.answered(category, status)
    headers = {}
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.decode(errors="replace").partition(":")
        headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    harness.judge_answer(gw, category, desc, size, "GET", status, headers, body)
    logged = harness.error_blocks(gw.new_log())
    if logged:
        where = harness._signature(logged[-1])
        harness.fail(
            f"the server logged {where.split(': ')[0]}", desc, f"HTTP {status}; {where}", size
        )


def _unchunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            n = int(size_line.split(b";")[0], 16)
        except ValueError:
            return body
        if n == 0:
            break
        out, rest = out + rest[:n], rest[n + 2 :]
    return out
