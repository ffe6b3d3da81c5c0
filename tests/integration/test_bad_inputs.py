"""Every error a client can cause gets a 4xx JSON error; the server keeps serving."""

import base64
import io
import struct
import zlib

import httpx
import pytest
from PIL import Image

from tests.gateway import gateway_process
from tests.integration.test_gateway import BUNDLED, scene_png

LIMIT = 3 * 1024 * 1024


def png_of(size, mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_of(size):
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(side=20000) -> bytes:
    """A valid PNG of side x side gray pixels, a few hundred KB on the wire."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    import shutil

    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(BUNDLED, root / "scenes")
    with gateway_process(
        root, reload_interval_s="0", max_body_bytes=str(LIMIT), max_images_per_request="4"
    ) as u:
        yield u


GOOD = None


def good():
    global GOOD
    GOOD = GOOD or scene_png(5)
    return GOOD


def raw(ctype, body):
    return {"content": body, "headers": {"content-type": ctype} if ctype else {}}


PREDICT = "/v1/models/scenes/predict"

CASES = {
    "random bytes as png": (PREDICT, raw("image/png", b"\x00\x01garbage" * 50), 400),
    "truncated png": (PREDICT, raw("image/png", png_of((64, 64))[:70]), 400),
    "truncated jpeg": (PREDICT, raw("image/jpeg", jpeg_of((64, 64))[:200]), 400),
    "text claiming jpeg": (
        PREDICT,
        raw("image/jpeg", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        400,
    ),
    "decompression bomb": (PREDICT, lambda: raw("image/png", png_bomb()), 413),
    "10000x10000 image": (PREDICT, lambda: raw("image/png", png_of((10000, 10000), "1")), 413),
    "1x1 image": (PREDICT, raw("image/png", png_of((1, 1))), 400),
    "empty raw body": (PREDICT, raw("image/png", b""), 400),
    "empty json body": (PREDICT, raw("application/json", b""), 400),
    "invalid json": (PREDICT, raw("application/json", b"{images: ["), 400),
    "json without images": (PREDICT, {"json": {"pictures": []}}, 400),
    "json images not a list": (PREDICT, {"json": {"images": "abc"}}, 400),
    "json image not a string": (PREDICT, {"json": {"images": [123]}}, 400),
    "json empty image list": (PREDICT, {"json": {"images": []}}, 400),
    "bad base64": (PREDICT, {"json": {"images": ["***not base64***"]}}, 400),
    "base64 of text": (PREDICT, {"json": {"images": [base64.b64encode(b"hello").decode()]}}, 400),
    "bad data url": (PREDICT, {"json": {"images": ["data:image/png;base64,@@@"]}}, 400),
    "json array body": (PREDICT, {"json": ["abc"]}, 400),
    "multipart without file": (PREDICT, {"files": {"other": ("a.png", b"x", "image/png")}}, 400),
    "multipart field not a file": (
        PREDICT,
        {"data": {"file": "just text"}, "files": {"x": ("x", b"1")}},
        400,
    ),
    "multipart corrupt image": (
        PREDICT,
        {"files": {"file": ("a.png", b"corrupt", "image/png")}},
        400,
    ),
    "malformed multipart": (
        PREDICT,
        raw(
            "multipart/form-data; boundary=zz",
            b'--zz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
        ),
        400,
    ),
    "text/plain body": (PREDICT, raw("text/plain", b"hello"), 415),
    "no content type": (PREDICT, raw(None, b"hello"), 415),
    "unknown model": ("/v1/models/nope/predict", raw("image/png", b"x"), 404),
    "unknown version": (PREDICT + "?version=7", raw("image/png", b"x"), 404),
    "version zero": (PREDICT + "?version=0", raw("image/png", b"x"), 400),
    "version not a number": (PREDICT + "?version=abc", raw("image/png", b"x"), 400),
    "unknown task": (PREDICT + "?tasks=depth,colour", "good", 404),
    "unknown encoding": (PREDICT + "?encoding=bmp", "good", 400),
    "unknown resolution": (PREDICT + "?resolution=huge", "good", 400),
    "top_k zero": (PREDICT + "?top_k=0", "good", 400),
    "body over the limit": (PREDICT, raw("image/png", b"\x00" * (LIMIT + 1)), 413),
    "chunked body over the limit": (
        PREDICT,
        lambda: {
            "content": iter([b"\x00" * 1024 * 1024] * 4),
            "headers": {"content-type": "image/png"},
        },
        413,
    ),
    "too many images": (PREDICT, {"json": {"images": ["aGk="] * 5}}, 413),
    "one good one corrupt": (PREDICT, "good+corrupt", 400),
    "unknown model metadata": ("/v1/models/nope", None, 404),
    "unknown route": ("/v1/nothing-here", None, 404),
    "GET on predict": (PREDICT, "GET", 405),
    "invalid content-length": (PREDICT, "bad-length", 400),
}


def send(url, path, spec):
    if callable(spec):
        spec = spec()
    if spec is None:
        return httpx.get(url + path, timeout=30)
    if spec == "GET":
        return httpx.get(url + path, timeout=30)
    if spec == "good":
        return httpx.post(url + path, **raw("image/png", good()), timeout=30)
    if spec == "good+corrupt":
        files = [
            ("files", ("a.png", good(), "image/png")),
            ("files", ("b.png", b"broken", "image/png")),
        ]
        return httpx.post(url + path, files=files, timeout=30)
    if spec == "bad-length":
        import socket

        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: abc\r\n\r\n".encode()
            )
            data = s.recv(65536).decode(errors="replace")
        status = int(data.split(" ", 2)[1])
        return httpx.Response(
            status, content=data.split("\r\n\r\n", 1)[-1].encode() or b'{"error":"bad"}'
        )
    return httpx.post(url + path, timeout=60, **spec)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_4xx_json(url, case):
    path, spec, status = CASES[case]
    r = send(url, path, spec)
    assert r.status_code == status, (case, r.status_code, r.text[:300])
    if case != "invalid content-length":  # h11 answers that one itself, before our app
        body = r.json()
        assert isinstance(body["error"], str) and body["error"], case


def test_error_messages_say_what_was_wrong(url):
    r = send(url, PREDICT, "good+corrupt")
    assert "image 1" in r.json()["error"]
    r = httpx.post(url + PREDICT + "?tasks=colour", **raw("image/png", good()))
    assert "colour" in r.json()["error"] and "semseg" in r.json()["error"]
    r = httpx.post(url + PREDICT, **raw("image/png", png_of((1, 1))))
    assert "at least 8 pixels" in r.json()["error"]


def test_at_least_30_distinct_cases():
    assert len(CASES) >= 30


def test_server_still_answers_correctly_after_all_of_it(url):
    for case in CASES:  # once more, all of them, then a normal request
        send(url, CASES[case][0], CASES[case][1])
    r = httpx.post(url + PREDICT, **raw("image/png", good()), timeout=30)
    assert r.status_code == 200
    assert len(r.json()["predictions"][0]["tasks"]) == 6
    metrics = httpx.get(url + "/metrics").text
    assert 'status="500"' not in metrics
