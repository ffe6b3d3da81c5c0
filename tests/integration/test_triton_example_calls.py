"""The calls of Triton's example clients, made against the gateway with the model ``scenes``.

triton-inference-server/client ships ``src/python/examples/simple_*_client.py``; each one must
exit 0 against the gateway once adapted to our model, input and output names and shapes. The
clients are not copied here: each test below makes the same tritonclient calls, with the same
client options, and asserts what that client checks before exiting 1 (infer results are
compared with ONNX Runtime run directly on the model instead of the examples' sums).

Which clients apply (shared-memory ones are out of scope):

* ``simple_{http,grpc}_infer``, ``simple_http_async_infer``, ``simple_grpc_async_infer``,
  ``simple_{http,grpc}_aio_infer``, ``simple_grpc_custom_args``, ``simple_grpc_keepalive``:
  plain inference with client options; they apply as they are.
* ``simple_{http,grpc}_string_infer``: their models add integers written as strings and echo
  strings back, which an image model cannot do; what applies is sending and receiving BYTES
  tensors (binary, NUL bytes inside, object and ``np.bytes_`` arrays), done with encoded
  images. A BYTES input in JSON must be UTF-8 text, which an encoded image is not.
* ``simple_grpc_sequence_{stream,sync}_infer``, ``simple_grpc_aio_sequence_stream_infer``,
  ``simple_http_sequence_sync_infer``: not applicable. They need a stateful model behind
  Triton's sequence batcher (correlation IDs, start/end flags, a running sum per sequence);
  ``scenes`` is stateless and uses the dynamic batcher.

Also here, though outside the ``*_client.py`` pattern: ``simple_{http,grpc}_health_metadata``
and ``simple_{http,grpc}_model_control`` (the latter against a gateway started with
``POLYHEAD_MODEL_CONTROL_MODE=explicit``, Triton's explicit model-control mode).
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import time
from functools import partial

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as http_aio
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.gateway import ROOT, free_port, gateway_server

BUNDLED = ROOT / "model_repo"
MODEL = "scenes"
ONNX = BUNDLED / MODEL / "1" / "model.onnx"
MANIFEST = json.loads((BUNDLED / MODEL / "1" / "manifest.json").read_text())
RAW = ["semseg", "depth", "normals", "edges", "shapes", "background"]
# the examples' OUTPUT0 and OUTPUT1
OUT0, OUT1 = "semseg", "depth"
# what the examples send beside the request: query parameters (HTTP) and headers
QUERY = {"test_1": 1, "test_2": 2}


def _headers() -> dict[str, str]:
    """A fresh dict each call: the HTTP client adds its own headers to the one it is given."""
    return {"test": "1"}


UNKNOWN = "Request for unknown model"  # Triton's message, which the examples look for
STAT_KINDS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
BATCH_KINDS = ("compute_input", "compute_infer", "compute_output")


@pytest.fixture(scope="module")
def server():
    grpc_port = free_port()
    with gateway_server(BUNDLED, grpc_port=str(grpc_port), reload_interval_s="0") as (url, _):
        yield url.removeprefix("http://"), f"127.0.0.1:{grpc_port}"


@pytest.fixture
def explicit_server(tmp_path):
    """A gateway in explicit model-control mode over a copy of the repository.

    Only liveness is awaited: in explicit mode nothing need be loaded at start.
    """
    repo = tmp_path / "repo"
    shutil.copytree(BUNDLED, repo)
    grpc_port = free_port()
    with gateway_server(
        repo,
        ready=False,
        grpc_port=str(grpc_port),
        reload_interval_s="0",
        model_control_mode="explicit",
    ) as (url, _):
        models = sorted(p.parent.name for p in repo.glob("*/config.pbtxt"))
        yield url.removeprefix("http://"), f"127.0.0.1:{grpc_port}", models


@pytest.fixture(scope="module")
def session():
    return ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 128, 128)).astype(np.float32)


def _ref(session, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": x}), strict=True))


def _close(got: np.ndarray | None, want: np.ndarray, name: str = "") -> None:
    assert got is not None, f"output {name!r} missing"
    assert got.shape == want.shape, (name, got.shape, want.shape)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---- statistics: one shape for the HTTP JSON and the gRPC message ---------------------------


def _grpc_stats(model_stats) -> dict:
    """A gRPC ModelStatistics as the dict the HTTP endpoint returns."""

    def duration(d) -> dict:
        return {"count": d.count, "ns": d.ns}

    return {
        "name": model_stats.name,
        "version": model_stats.version,
        "last_inference": model_stats.last_inference,
        "inference_count": model_stats.inference_count,
        "execution_count": model_stats.execution_count,
        "inference_stats": {
            k: duration(getattr(model_stats.inference_stats, k)) for k in STAT_KINDS
        },
        "batch_stats": [
            {"batch_size": b.batch_size, **{k: duration(getattr(b, k)) for k in BATCH_KINDS}}
            for b in model_stats.batch_stats
        ],
    }


def _check_stats(stats: dict, since_ms: int) -> None:
    """Triton's per-model statistics after at least one successful request made at since_ms."""
    assert stats["name"] == MODEL and stats["version"] == "1", stats
    inference = stats["inference_stats"]
    for kind in STAT_KINDS:
        assert {"count", "ns"} <= set(inference[kind]), (kind, inference)
        assert inference[kind]["count"] >= 0 and inference[kind]["ns"] >= 0, (kind, inference)
    assert inference["success"]["count"] >= 1 and inference["success"]["ns"] > 0, inference
    assert inference["compute_infer"]["count"] >= 1, inference
    assert stats["inference_count"] >= inference["success"]["count"], stats
    assert 1 <= stats["execution_count"] <= stats["inference_count"], stats
    # milliseconds since the epoch, of the request just made (a second's slack for clocks)
    assert since_ms - 1000 <= stats["last_inference"] <= _now_ms() + 1000, stats
    for b in stats["batch_stats"]:
        assert 1 <= b["batch_size"] <= 8, b
        for kind in BATCH_KINDS:
            assert {"count", "ns"} <= set(b[kind]), b


def _one(statistics: dict) -> dict:
    # the examples exit 1 unless there is exactly one entry (one model, one version)
    assert len(statistics["model_stats"]) == 1, statistics
    return statistics["model_stats"][0]


# ---- HTTP ---------------------------------------------------------------------------------


def _http_request(module, x: np.ndarray, input_binary: bool, with_outputs: bool):
    inp = module.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=input_binary)
    outputs = None
    if with_outputs:  # the first binary, the second JSON, as the examples ask for them
        outputs = [
            module.InferRequestedOutput(OUT0, binary_data=True),
            module.InferRequestedOutput(OUT1, binary_data=False),
        ]
    return [inp], outputs


def _check_requested(result, ref: dict) -> None:
    for name in (OUT0, OUT1):
        _close(result.as_numpy(name), ref[name], name)


def _check_all(result, ref: dict) -> None:
    for name in RAW:
        _close(result.as_numpy(name), ref[name], name)


HTTP_CASES = [(False, None), (True, None), (True, "gzip"), (False, "deflate")]


@pytest.mark.parametrize(("input_binary", "compression"), HTTP_CASES)
def test_simple_http_infer_client(server, session, input_binary, compression):
    http, _ = server
    x = _x(1, seed=1)
    ref = _ref(session, x)
    zipped = {
        "request_compression_algorithm": compression,
        "response_compression_algorithm": compression,
    }
    c = httpclient.InferenceServerClient(http)
    try:
        since = _now_ms()
        inputs, outputs = _http_request(httpclient, x, input_binary, with_outputs=True)
        r = c.infer(
            MODEL, inputs, outputs=outputs, query_params=QUERY, headers=_headers(), **zipped
        )
        stats = c.get_inference_statistics(model_name=MODEL, headers=_headers())
        _check_stats(_one(stats), since)
        _check_requested(r, ref)

        inputs, _ = _http_request(httpclient, x, input_binary, with_outputs=False)
        r = c.infer(MODEL, inputs, outputs=None, query_params=QUERY, headers=_headers(), **zipped)
        _check_all(r, ref)

        inputs, outputs = _http_request(httpclient, x, input_binary, with_outputs=True)
        with pytest.raises(InferenceServerException) as e:
            c.infer("wrong_model_name", inputs, outputs=outputs, query_params=QUERY)
        assert e.value.message().startswith(UNKNOWN), e.value.message()
    finally:
        c.close()


def test_simple_http_async_infer_client(server, session):
    http, _ = server
    x = _x(1, seed=2)
    ref = _ref(session, x)
    requests = 2
    c = httpclient.InferenceServerClient(http, concurrency=requests)
    try:
        inp = httpclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in (OUT0, OUT1)]
        pending = [
            c.async_infer(model_name=MODEL, inputs=[inp], outputs=outputs) for _ in range(requests)
        ]
        for p in pending:
            _check_requested(p.get_result(), ref)
    finally:
        c.close()


def test_simple_http_aio_infer_client(server, session):
    http, _ = server
    x = _x(1, seed=3)
    ref = _ref(session, x)

    async def run() -> None:
        c = http_aio.InferenceServerClient(http)
        try:

            def infer(model: str, with_outputs: bool):
                inputs, outputs = _http_request(http_aio, x, False, with_outputs)
                return c.infer(
                    model, inputs, outputs=outputs, query_params=QUERY, headers=_headers()
                )

            since = _now_ms()
            r = await infer(MODEL, True)
            stats = await c.get_inference_statistics(model_name=MODEL, headers=_headers())
            _check_stats(_one(stats), since)
            _check_requested(r, ref)

            _check_all(await infer(MODEL, False), ref)

            with pytest.raises(InferenceServerException) as e:
                await infer("wrong_model_name", True)
            assert e.value.message().startswith(UNKNOWN), e.value.message()

            first, second = await asyncio.gather(infer(MODEL, True), infer(MODEL, False))
            _check_requested(first, ref)
            _check_all(second, ref)
        finally:
            await c.close()

    asyncio.run(run())


# ---- gRPC ---------------------------------------------------------------------------------


def _grpc_request(module, x: np.ndarray, with_outputs: bool = True):
    inp = module.InferInput("image", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    outputs = [module.InferRequestedOutput(n) for n in (OUT0, OUT1)] if with_outputs else None
    return [inp], outputs


@pytest.mark.parametrize("compression", [None, "gzip", "deflate"])
def test_simple_grpc_infer_client(server, session, compression):
    _, target = server
    x = _x(1, seed=4)
    ref = _ref(session, x)
    c = grpcclient.InferenceServerClient(target)
    try:
        since = _now_ms()
        inputs, outputs = _grpc_request(grpcclient, x)
        r = c.infer(
            model_name=MODEL,
            inputs=inputs,
            outputs=outputs,
            client_timeout=60.0,
            headers=_headers(),
            compression_algorithm=compression,
        )
        stats = c.get_inference_statistics(model_name=MODEL)
        assert len(stats.model_stats) == 1, stats
        _check_stats(_grpc_stats(stats.model_stats[0]), since)
        _check_requested(r, ref)

        r = c.infer(
            model_name=MODEL, inputs=inputs, outputs=None, compression_algorithm=compression
        )
        _check_all(r, ref)
    finally:
        c.close()


def test_simple_grpc_async_infer_client(server, session):
    _, target = server
    x = _x(1, seed=5)
    ref = _ref(session, x)
    c = grpcclient.InferenceServerClient(target)
    try:
        got: list = []

        def callback(sink, result, error):
            sink.append(error if error else result)

        inputs, outputs = _grpc_request(grpcclient, x)
        c.async_infer(
            model_name=MODEL,
            inputs=inputs,
            callback=partial(callback, got),
            outputs=outputs,
            client_timeout=60.0,
        )
        deadline = time.monotonic() + 10  # the example waits up to ten seconds
        while not got and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(got) == 1, got
        assert not isinstance(got[0], InferenceServerException), got[0]
        _check_requested(got[0], ref)
    finally:
        c.close()


def test_simple_grpc_aio_infer_client(server, session):
    _, target = server
    x = _x(1, seed=6)
    ref = _ref(session, x)

    async def run() -> None:
        c = grpc_aio.InferenceServerClient(target)
        try:
            since = _now_ms()
            inputs, outputs = _grpc_request(grpc_aio, x)
            r = await c.infer(
                model_name=MODEL,
                inputs=inputs,
                outputs=outputs,
                client_timeout=60.0,
                headers=_headers(),
                compression_algorithm=None,
            )
            stats = await c.get_inference_statistics(model_name=MODEL)
            assert len(stats.model_stats) == 1, stats
            _check_stats(_grpc_stats(stats.model_stats[0]), since)
            _check_requested(r, ref)

            both = await asyncio.gather(
                *(c.infer(model_name=MODEL, inputs=inputs, outputs=None) for _ in range(2))
            )
            for result in both:
                _check_all(result, ref)
        finally:
            await c.close()

    asyncio.run(run())


def test_simple_grpc_custom_args_client(server, session):
    _, target = server
    x = _x(1, seed=7)
    ref = _ref(session, x)
    one_mb = 1 << 20  # the example's message limit; semseg and depth of one image fit
    channel_args = [
        ("grpc.max_send_message_length", one_mb),
        ("grpc.max_receive_message_length", one_mb),
        ("grpc.keepalive_time_ms", 2**31 - 1),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", False),
        ("grpc.http2.max_pings_without_data", 2),
        ("grpc.dns_enable_srv_queries", 1),
    ]
    c = grpcclient.InferenceServerClient(target, channel_args=channel_args)
    try:
        inputs, outputs = _grpc_request(grpcclient, x)
        r = c.infer(model_name=MODEL, inputs=inputs, outputs=outputs, headers=_headers())
        _check_requested(r, ref)
    finally:
        c.close()


def test_simple_grpc_keepalive_client(server, session):
    _, target = server
    x = _x(1, seed=8)
    ref = _ref(session, x)
    keepalive = grpcclient.KeepAliveOptions(
        keepalive_time_ms=2**31 - 1,
        keepalive_timeout_ms=20_000,
        keepalive_permit_without_calls=False,
        http2_max_pings_without_data=2,
    )
    c = grpcclient.InferenceServerClient(target, keepalive_options=keepalive)
    try:
        inputs, outputs = _grpc_request(grpcclient, x)
        r = c.infer(model_name=MODEL, inputs=inputs, outputs=outputs, headers=_headers())
        _check_requested(r, ref)
    finally:
        c.close()


# ---- BYTES tensors (the transport half of the string clients) ----------------------------


def _png(seed: int) -> bytes:
    """A 128x128 PNG: the model's input size, so decoding involves no resize."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8)
    pixels[32:80, 40:96] = rng.integers(0, 256, size=3, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    data = buf.getvalue()
    assert b"\0" in data and not data.endswith(b"\0")  # NULs inside; np.bytes_ keeps all
    return data


def _normalised(images: list[bytes]) -> np.ndarray:
    spec = MANIFEST["input"]
    mean = np.asarray(spec["mean"], np.float32)
    std = np.asarray(spec["std"], np.float32)
    rows = []
    for data in images:
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
        rows.append(((rgb * np.float32(spec["scale"]) - mean) / std).transpose(2, 0, 1))
    return np.stack(rows).astype(np.float32)


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _check_bytes_result(result, ref: dict) -> None:
    task = next(t for t in MANIFEST["tasks"] if t["name"] == "background")
    want = [task["labels"][k] for k in ref["background"].argmax(axis=1)]
    np.testing.assert_allclose(
        result.as_numpy("background"), ref["background"], rtol=1e-4, atol=1e-4
    )
    assert [_text(v) for v in result.as_numpy("background.label").reshape(-1)] == want
    decoded = [json.loads(_text(v)) for v in result.as_numpy("background.json").reshape(-1)]
    assert [d["label"] for d in decoded] == want


def test_simple_http_string_infer_client_bytes_transport(server, session):
    http, _ = server
    images = [_png(11), _png(12)]
    ref = _ref(session, _normalised(images))
    c = httpclient.InferenceServerClient(http)
    try:
        for dtype in (np.object_, np.bytes_):
            data = np.array(images, dtype=dtype)
            inp = httpclient.InferInput("image_bytes", list(data.shape), "BYTES")
            inp.set_data_from_numpy(data, binary_data=True)
            outputs = [
                httpclient.InferRequestedOutput("background.label", binary_data=True),
                httpclient.InferRequestedOutput("background.json", binary_data=False),
                httpclient.InferRequestedOutput("background", binary_data=True),
            ]
            _check_bytes_result(c.infer(model_name=MODEL, inputs=[inp], outputs=outputs), ref)
    finally:
        c.close()


def test_simple_grpc_string_infer_client_bytes_transport(server, session):
    _, target = server
    images = [_png(13), _png(14)]
    ref = _ref(session, _normalised(images))
    c = grpcclient.InferenceServerClient(target)
    try:
        for dtype in (np.object_, np.bytes_):
            data = np.array(images, dtype=dtype)
            inp = grpcclient.InferInput("image_bytes", list(data.shape), "BYTES")
            inp.set_data_from_numpy(data)
            outputs = [
                grpcclient.InferRequestedOutput(n)
                for n in ("background.label", "background.json", "background")
            ]
            _check_bytes_result(c.infer(model_name=MODEL, inputs=[inp], outputs=outputs), ref)
    finally:
        c.close()


# ---- statistics counted per request (what the examples' statistics calls rely on) ---------


def _stats_deltas(before: dict, after: dict) -> dict:
    def batches(s: dict) -> dict[int, int]:
        return {b["batch_size"]: b["compute_infer"]["count"] for b in s["batch_stats"]}

    b0, b1 = batches(before), batches(after)
    return {
        "inference_count": after["inference_count"] - before["inference_count"],
        "execution_count": after["execution_count"] - before["execution_count"],
        **{
            f"{k}.{f}": after["inference_stats"][k][f] - before["inference_stats"][k][f]
            for k in STAT_KINDS
            for f in ("count", "ns")
        },
        "batches": {n: b1[n] - b0.get(n, 0) for n in b1 if b1[n] != b0.get(n, 0)},
    }


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_statistics_count_each_request(server, protocol):
    """Two requests of one image and one of three, one after the other: Triton's counts."""
    http, target = server
    module = httpclient if protocol == "http" else grpcclient
    c = module.InferenceServerClient(http if protocol == "http" else target)

    def stats(version: str = "") -> dict:
        s = c.get_inference_statistics(model_name=MODEL, model_version=version)
        if protocol == "http":
            return _one(s)
        assert len(s.model_stats) == 1, s
        return _grpc_stats(s.model_stats[0])

    try:
        before = stats()
        since = _now_ms()
        for n, seed in ((1, 20), (1, 21), (3, 22)):
            inp = module.InferInput("image", [n, 3, 128, 128], "FP32")
            inp.set_data_from_numpy(_x(n, seed))
            c.infer(MODEL, [inp], outputs=[module.InferRequestedOutput("shapes")])
        after = stats()
        _check_stats(after, since)
        d = _stats_deltas(before, after)
        assert d["inference_count"] == 5 and d["execution_count"] == 3, d
        for kind in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
            assert d[f"{kind}.count"] == 3, (kind, d)
        assert d["fail.count"] == 0, d
        assert d["success.ns"] > 0 and d["compute_infer.ns"] > 0, d
        assert d["success.ns"] >= d["compute_infer.ns"], d  # a request's time covers its compute
        assert d["batches"] == {1: 2, 3: 1}, d
        versioned = stats("1")
        assert versioned["version"] == "1" and versioned["inference_count"] >= 5, versioned
    finally:
        c.close()


# ---- outside the *_client.py pattern: health and metadata, model control ------------------


def test_simple_http_health_metadata(server):
    http, _ = server
    c = httpclient.InferenceServerClient(http)
    try:
        assert c.is_server_live(query_params=QUERY)
        assert c.is_server_ready()
        assert c.is_model_ready(MODEL)
        assert c.get_server_metadata()["name"] == "polyhead"  # the example expects "triton"
        assert c.get_model_metadata(MODEL, query_params=QUERY)["name"] == MODEL
        with pytest.raises(InferenceServerException) as e:
            c.get_model_metadata("wrong_model_name")
        assert UNKNOWN in e.value.message(), e.value.message()
    finally:
        c.close()


def test_simple_grpc_health_metadata(server):
    _, target = server
    headers = {"test": "1", "dummy": "2"}
    c = grpcclient.InferenceServerClient(target)
    try:
        assert c.is_server_live(headers=headers)
        assert c.is_server_ready()
        assert c.is_model_ready(MODEL)
        assert c.get_server_metadata().name == "polyhead"  # the example expects "triton"
        assert c.get_model_metadata(MODEL, headers=headers).name == MODEL
        with pytest.raises(InferenceServerException) as e:
            c.get_model_metadata("wrong_model_name")
        assert UNKNOWN in e.value.message(), e.value.message()
        assert c.get_model_config(MODEL).config.name == MODEL
    finally:
        c.close()


BROKEN_CONFIG = '{"max_batch_size": 16, "parameters": {'  # not JSON
OVERRIDE = json.dumps({"max_batch_size": "16"})  # proto JSON: an int32 may come quoted


def test_simple_http_model_control(explicit_server):
    http, _, models = explicit_server
    c = httpclient.InferenceServerClient(http)
    try:
        assert len(c.get_model_repository_index()) == len(models)
        c.load_model(MODEL)
        assert c.is_model_ready(MODEL)
        with pytest.raises(InferenceServerException) as e:
            c.load_model(MODEL, config=BROKEN_CONFIG)
        assert "failed to load" in e.value.message(), e.value.message()
        c.load_model(MODEL, config=OVERRIDE)
        assert c.get_model_config(MODEL)["max_batch_size"] == 16
        c.unload_model(MODEL)
        assert not c.is_model_ready(MODEL)
        with pytest.raises(InferenceServerException) as e:
            c.load_model("wrong_model_name")
        assert "failed to load" in e.value.message(), e.value.message()
    finally:
        c.close()


def test_simple_grpc_model_control(explicit_server):
    _, target, models = explicit_server
    c = grpcclient.InferenceServerClient(target)
    try:
        assert len(c.get_model_repository_index().models) == len(models)
        c.load_model(MODEL)
        assert c.is_model_ready(MODEL)
        with pytest.raises(InferenceServerException) as e:
            c.load_model(MODEL, config=BROKEN_CONFIG)
        assert "failed to load" in e.value.message(), e.value.message()
        c.load_model(MODEL, config=OVERRIDE)
        assert c.get_model_config(MODEL).config.max_batch_size == 16
        c.unload_model(MODEL)
        assert not c.is_model_ready(MODEL)
        # a file path component longer than NAME_MAX: an error, and the server lives on
        # (Triton answers INTERNAL today and notes INVALID_ARGUMENT would be right)
        with pytest.raises(InferenceServerException) as e:
            c.load_model(MODEL, config="{}", files={"file:" + "A" * 256: b"a"})
        assert e.value.status() in ("StatusCode.INTERNAL", "StatusCode.INVALID_ARGUMENT"), e.value
        assert c.is_server_live()
        with pytest.raises(InferenceServerException) as e:
            c.load_model("wrong_model_name")
        assert "failed to load" in e.value.message(), e.value.message()
    finally:
        c.close()
