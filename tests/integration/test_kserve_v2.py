"""The gateway's Open Inference Protocol (KServe v2), driven by the official tritonclient.

One gateway subprocess with HTTP and gRPC; results are checked against running the same ONNX
graph directly with ONNX Runtime, and decoded outputs against what /v1 returns.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import struct
import threading

import grpc
import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http as httpclient
import tritonclient.http.aio as http_aio
from PIL import Image
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

from tests.gateway import ROOT, free_port, gateway_server

BUNDLED = ROOT / "model_repo"
ONNX = BUNDLED / "scenes" / "1" / "model.onnx"
RAW = ["semseg", "depth", "normals", "edges", "shapes", "background"]


@pytest.fixture(scope="module")
def server():
    grpc_port = free_port()
    with gateway_server(BUNDLED, grpc_port=str(grpc_port), reload_interval_s="0") as (url, _):
        yield url.removeprefix("http://"), f"127.0.0.1:{grpc_port}"


@pytest.fixture(scope="module")
def session():
    return ort.InferenceSession(str(ONNX), providers=["CPUExecutionProvider"])


def _x(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 128, 128)).astype(np.float32)


def _ref(session, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"image": x}), strict=True))


def _png(w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    pixels[h // 3 : h // 2, w // 3 : w // 2] = (20, 200, 40)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


# ---- metadata and health ---------------------------------------------------------------------


def test_metadata_and_health_http(server):
    http, _ = server
    c = httpclient.InferenceServerClient(http)
    try:
        assert c.is_server_live() and c.is_server_ready()
        meta = c.get_server_metadata()
        assert meta["name"] == "polyhead" and "binary_tensor_data" in meta["extensions"]
        model = c.get_model_metadata("scenes")
        assert model["versions"] == ["1"]
        inputs = {i["name"]: i for i in model["inputs"]}
        assert inputs["image"] == {"name": "image", "datatype": "FP32", "shape": [-1, 3, 128, 128]}
        assert inputs["image_bytes"]["datatype"] == "BYTES"
        outputs = {o["name"]: o for o in model["outputs"]}
        assert outputs["semseg"]["shape"] == [-1, 5, 128, 128]
        assert outputs["shapes"] == {"name": "shapes", "datatype": "FP32", "shape": [-1, 4]}
        assert outputs["semseg.classes"]["datatype"] == "UINT8"
        assert outputs["background.label"]["datatype"] == "BYTES"
        assert c.is_model_ready("scenes") and c.is_model_ready("scenes", "1")
        assert not c.is_model_ready("nope") and not c.is_model_ready("scenes", "7")
        assert c.get_model_config("scenes")["max_batch_size"] == 8
        index = c.get_model_repository_index()
        assert {"name": "scenes", "version": "1", "state": "READY"} in index
        with pytest.raises(InferenceServerException, match="unknown model"):
            c.get_model_metadata("nope")
    finally:
        c.close()


def test_metadata_and_health_grpc(server):
    _, target = server
    c = grpcclient.InferenceServerClient(target)
    try:
        assert c.is_server_live() and c.is_server_ready()
        assert c.get_server_metadata().name == "polyhead"
        model = c.get_model_metadata("scenes", as_json=True)
        assert [i["name"] for i in model["inputs"]] == ["image", "image_bytes"]
        assert [o["name"] for o in model["outputs"]][:6] == RAW
        assert c.is_model_ready("scenes", "1") and not c.is_model_ready("scenes", "2")
        assert not c.is_model_ready("nope")
        cfg = c.get_model_config("scenes", as_json=True)["config"]
        assert cfg["name"] == "scenes" and int(cfg["max_batch_size"]) == 8
        assert c.get_model_repository_index().models[0].state == "READY"
        with pytest.raises(InferenceServerException) as e:
            c.get_model_metadata("nope")
        assert "NOT_FOUND" in str(e.value.status())
    finally:
        c.close()


# ---- inference against ONNX Runtime --------------------------------------------------------


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("n", [1, 3])
def test_http_infer_equals_onnxruntime(server, session, binary, n):
    http, _ = server
    x = _x(n, seed=n)
    ref = _ref(session, x)
    c = httpclient.InferenceServerClient(http)
    try:
        inp = httpclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in RAW]
        r = c.infer("scenes", [inp], outputs=outs, request_id="req-7")
        assert r.get_response()["id"] == "req-7"
        assert r.get_response()["model_version"] == "1"
        for name in RAW:
            np.testing.assert_allclose(r.as_numpy(name), ref[name], rtol=1e-5, atol=1e-5)
    finally:
        c.close()


@pytest.mark.parametrize("n", [1, 3])
def test_grpc_infer_equals_onnxruntime(server, session, n):
    _, target = server
    x = _x(n, seed=10 + n)
    ref = _ref(session, x)
    c = grpcclient.InferenceServerClient(target)
    try:
        inp = grpcclient.InferInput("image", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = c.infer("scenes", [inp], model_version="1")
        assert [o.name for o in r.get_response().outputs] == RAW
        for name in RAW:
            np.testing.assert_allclose(r.as_numpy(name), ref[name], rtol=1e-5, atol=1e-5)
    finally:
        c.close()


def test_output_subsets_come_back_in_request_order(server, session):
    http, target = server
    x = _x(2, seed=5)
    ref = _ref(session, x)
    h = httpclient.InferenceServerClient(http)
    g = grpcclient.InferenceServerClient(target)
    try:
        hi = httpclient.InferInput("image", list(x.shape), "FP32")
        hi.set_data_from_numpy(x)
        r = h.infer(
            "scenes",
            [hi],
            outputs=[
                httpclient.InferRequestedOutput("depth"),
                httpclient.InferRequestedOutput("background"),
            ],
        )
        assert [o["name"] for o in r.get_response()["outputs"]] == ["depth", "background"]
        np.testing.assert_allclose(r.as_numpy("depth"), ref["depth"], rtol=1e-5, atol=1e-5)
        assert r.as_numpy("semseg") is None
        # no outputs named: every raw output, no decoded one
        r = h.infer("scenes", [hi])
        assert [o["name"] for o in r.get_response()["outputs"]] == RAW

        gi = grpcclient.InferInput("image", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        r = g.infer(
            "scenes",
            [gi],
            outputs=[
                grpcclient.InferRequestedOutput("shapes.probabilities"),
                grpcclient.InferRequestedOutput("edges"),
            ],
        )
        assert [o.name for o in r.get_response().outputs] == ["shapes.probabilities", "edges"]
        probs = 1 / (1 + np.exp(-ref["shapes"].astype(np.float64)))
        np.testing.assert_allclose(r.as_numpy("shapes.probabilities"), probs, rtol=1e-5, atol=1e-6)
    finally:
        h.close()
        g.close()


# ---- encoded images and decoded outputs ----------------------------------------------------


def _v1(http: str, images: list[bytes], **params) -> dict:
    body = {"images": [base64.b64encode(i).decode() for i in images]}
    r = httpx.post(f"http://{http}/v1/models/scenes/predict", json=body, params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def test_image_bytes_decoded_outputs_equal_v1(server):
    http, target = server
    images = [_png(160, 120, 1), _png(160, 120, 2)]
    v1 = _v1(http, images)
    for module, address in ((httpclient, http), (grpcclient, target)):
        c = module.InferenceServerClient(address)
        try:
            inp = module.InferInput("image_bytes", [2], "BYTES")
            inp.set_data_from_numpy(np.array(images, dtype=object))
            names = [
                "semseg.json",
                "background.json",
                "depth.json",
                "semseg.classes",
                "background.label",
                "normals.normals",
            ]
            r = c.infer("scenes", [inp], outputs=[module.InferRequestedOutput(n) for n in names])
            for i in range(2):
                for task in ("semseg", "background", "depth"):
                    got = json.loads(r.as_numpy(f"{task}.json")[i][0])
                    assert got == v1["predictions"][i]["tasks"][task], (module.__name__, task)
                label = r.as_numpy("background.label")[i][0].decode()
                assert label == v1["predictions"][i]["tasks"]["background"]["label"]
            classes = r.as_numpy("semseg.classes")
            assert classes.dtype == np.uint8 and classes.shape == (2, 128, 128)  # model grid
            normals = r.as_numpy("normals.normals")
            assert normals.dtype == np.float16 and normals.shape == (2, 128, 128, 3)
            norms = np.linalg.norm(normals.astype(np.float32), axis=-1)
            np.testing.assert_allclose(norms, 1.0, atol=2e-3)
            r = c.infer(
                "scenes",
                [inp],
                outputs=[module.InferRequestedOutput("semseg.classes")],
                parameters={"resolution": "original"},
            )
            assert r.as_numpy("semseg.classes").shape == (2, 120, 160)
        finally:
            c.close()


def test_class_map_matches_v1_map(server):
    http, _ = server
    image = _png(96, 64, 3)
    v1 = _v1(http, [image], encoding="json")
    want = np.asarray(v1["predictions"][0]["tasks"]["semseg"]["map"]["data"], dtype=np.uint8)
    c = httpclient.InferenceServerClient(http)
    try:
        inp = httpclient.InferInput("image_bytes", [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[image]], dtype=object))
        r = c.infer("scenes", [inp], outputs=[httpclient.InferRequestedOutput("semseg.classes")])
        np.testing.assert_array_equal(r.as_numpy("semseg.classes")[0], want)
    finally:
        c.close()


def test_images_of_different_sizes(server):
    http, _ = server
    images = np.array([_png(100, 80, 4), _png(64, 90, 5)], dtype=object)
    c = httpclient.InferenceServerClient(http)
    try:
        inp = httpclient.InferInput("image_bytes", [2], "BYTES")
        inp.set_data_from_numpy(images)
        out = [httpclient.InferRequestedOutput("semseg.classes")]
        with pytest.raises(InferenceServerException, match="resolution=model"):
            c.infer("scenes", [inp], outputs=out, parameters={"resolution": "original"})
        r = c.infer("scenes", [inp], outputs=out)  # the model's grid: one size for both
        assert r.as_numpy("semseg.classes").shape == (2, 128, 128)
        # image-level and raw outputs do not depend on the size
        r = c.infer("scenes", [inp], outputs=[httpclient.InferRequestedOutput("background.label")])
        assert r.as_numpy("background.label").shape == (2, 1)
    finally:
        c.close()


# ---- async, concurrent, streaming ----------------------------------------------------------


def test_asyncio_clients_concurrently(server, session):
    http, target = server
    xs = [_x(1, seed=100 + k) for k in range(16)]
    refs = [_ref(session, x)["shapes"] for x in xs]

    async def run() -> None:
        h = http_aio.InferenceServerClient(http)
        g = grpc_aio.InferenceServerClient(target)
        try:

            async def one_http(x):
                i = httpclient.InferInput("image", list(x.shape), "FP32")
                i.set_data_from_numpy(x)
                return await h.infer(
                    "scenes", [i], outputs=[httpclient.InferRequestedOutput("shapes")]
                )

            async def one_grpc(x):
                i = grpcclient.InferInput("image", list(x.shape), "FP32")
                i.set_data_from_numpy(x)
                return await g.infer(
                    "scenes", [i], outputs=[grpcclient.InferRequestedOutput("shapes")]
                )

            got = await asyncio.gather(*(one_http(x) for x in xs), *(one_grpc(x) for x in xs))
            for k, r in enumerate(got):
                np.testing.assert_allclose(r.as_numpy("shapes"), refs[k % 16], rtol=1e-5, atol=1e-5)
        finally:
            await h.close()
            await g.close()

    asyncio.run(run())


def test_sync_clients_async_infer_and_threads(server, session):
    http, target = server
    xs = [_x(1, seed=200 + k) for k in range(8)]
    refs = [_ref(session, x)["background"] for x in xs]
    g = grpcclient.InferenceServerClient(target)
    h = httpclient.InferenceServerClient(http, concurrency=8)
    try:
        done: dict[int, object] = {}
        event = threading.Event()

        def callback(k, result, error):
            done[k] = error if error is not None else result
            if len(done) == len(xs):
                event.set()

        for k, x in enumerate(xs):
            i = grpcclient.InferInput("image", list(x.shape), "FP32")
            i.set_data_from_numpy(x)
            g.async_infer("scenes", [i], lambda result, error, k=k: callback(k, result, error))
        assert event.wait(30)
        for k in range(len(xs)):
            np.testing.assert_allclose(
                done[k].as_numpy("background"), refs[k], rtol=1e-5, atol=1e-5
            )

        pending = []
        for x in xs:
            i = httpclient.InferInput("image", list(x.shape), "FP32")
            i.set_data_from_numpy(x)
            pending.append(h.async_infer("scenes", [i]))
        for k, p in enumerate(pending):
            np.testing.assert_allclose(
                p.get_result().as_numpy("background"), refs[k], rtol=1e-5, atol=1e-5
            )
    finally:
        g.close()
        h.close()


def test_grpc_streaming(server, session):
    _, target = server
    xs = [_x(1, seed=300 + k) for k in range(4)]
    results: list = []
    event = threading.Event()

    def callback(result, error):
        results.append(error if error is not None else result)
        if len(results) == len(xs) + 1:
            event.set()

    c = grpcclient.InferenceServerClient(target)
    try:
        c.start_stream(callback)
        for k, x in enumerate(xs):
            i = grpcclient.InferInput("image", list(x.shape), "FP32")
            i.set_data_from_numpy(x)
            c.async_stream_infer("scenes", [i], request_id=str(k))
        bad = grpcclient.InferInput("nope", [1], "FP32")
        bad.set_data_from_numpy(np.zeros(1, np.float32))
        c.async_stream_infer("scenes", [bad], request_id="bad")
        assert event.wait(30)
        c.stop_stream()
    finally:
        c.close()
    good = [r for r in results if not isinstance(r, InferenceServerException)]
    errors = [r for r in results if isinstance(r, InferenceServerException)]
    assert len(good) == 4 and len(errors) == 1 and "unknown input" in errors[0].message()
    for r in good:
        k = int(r.get_response().id)
        np.testing.assert_allclose(
            r.as_numpy("depth"), _ref(session, xs[k])["depth"], rtol=1e-5, atol=1e-5
        )


def test_versioned_urls(server):
    http, _ = server
    x = _x(1, seed=7)
    c = httpclient.InferenceServerClient(http)
    try:
        i = httpclient.InferInput("image", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        assert c.infer("scenes", [i], model_version="1").get_response()["model_version"] == "1"
        with pytest.raises(InferenceServerException, match="no loaded version 3"):
            c.infer("scenes", [i], model_version="3")
    finally:
        c.close()
    r = httpx.get(f"http://{http}/v2/models/scenes/versions/x1")
    assert r.status_code == 400 and "positive integer" in r.json()["error"]
    assert httpx.get(f"http://{http}/v2/models/scenes/versions/1/ready").status_code == 200


def test_gzip_request_body(server, session):
    http, _ = server
    x = _x(1, seed=8)
    c = httpclient.InferenceServerClient(http)
    try:
        for algorithm in ("gzip", "deflate"):
            i = httpclient.InferInput("image", list(x.shape), "FP32")
            i.set_data_from_numpy(x)
            r = c.infer("scenes", [i], request_compression_algorithm=algorithm)
            np.testing.assert_allclose(
                r.as_numpy("edges"), _ref(session, x)["edges"], rtol=1e-5, atol=1e-5
            )
    finally:
        c.close()


def test_grpc_calls_are_in_the_metrics(server):
    http, _ = server
    text = httpx.get(f"http://{http}/metrics").text
    assert 'route="grpc:ModelInfer"' in text and 'status="OK"' in text
    assert 'route="/v2/models/{name}/infer"' in text


# ---- malformed requests: 400 with a message, never 500 -------------------------------------


def _header(inputs: list[dict], **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


IMG = {"name": "image", "datatype": "FP32", "shape": [1, 3, 128, 128]}
X = np.zeros((1, 3, 128, 128), np.float32).tobytes()


def _binary(inputs: list[dict], blob: bytes, header_len: int | None = None) -> tuple[bytes, dict]:
    head = _header(inputs)
    n = len(head) if header_len is None else header_len
    return head + blob, {
        "Inference-Header-Content-Length": str(n),
        "Content-Type": "application/octet-stream",
    }


def _bytes_elements(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


BAD = {
    "data shorter than the shape": (_header([{**IMG, "data": [0.0] * 10}]), {}, "needs 49152"),
    "unknown datatype": (_header([{**IMG, "datatype": "FP8", "data": [0.0]}]), {}, "datatype"),
    "wrong input name": (
        _header([{**IMG, "name": "pixels", "data": [0.0] * 49152}]),
        {},
        "unknown input",
    ),
    "an unknown second input": (
        _header(
            [
                {**IMG, "data": [0.0] * 49152},
                {"name": "mask", "datatype": "BYTES", "shape": [1], "data": ["eA=="]},
            ]
        ),
        {},
        "unknown input",
    ),
    "same input twice": (
        _header([{**IMG, "data": [0.0] * 49152}, {**IMG, "data": [0.0] * 49152}]),
        {},
        "twice",
    ),
    "binary size past the body": (
        *_binary([{**IMG, "parameters": {"binary_data_size": len(X) + 4}}], X),
        "past the end",
    ),
    "binary sizes do not add up": (
        *_binary([{**IMG, "parameters": {"binary_data_size": len(X)}}], X + b"\0" * 8),
        "add up",
    ),
    "binary size wrong for the shape": (
        *_binary([{**IMG, "parameters": {"binary_data_size": len(X) - 4}}], X[:-4]),
        "needs",
    ),
    "header length beyond the body": (*_binary([IMG], b"", header_len=10_000), "body has"),
    "header length not a number": (
        _header([IMG]),
        {"Inference-Header-Content-Length": "ten"},
        "integer",
    ),
    "header length zero": (_header([IMG]), {"Inference-Header-Content-Length": "0"}, "body has"),
    "truncated JSON header": (_header([{**IMG, "data": [0.0] * 49152}])[:-30], {}, "JSON"),
    "not JSON": (b"\x89PNG\r\n", {}, "JSON"),
    "empty body": (b"", {}, "empty"),
    "JSON array": (b"[1, 2]", {}, "object"),
    "no inputs": (_header([]), {}, "non-empty"),
    "BYTES length past the data": (
        *_binary(
            [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 8},
                }
            ],
            struct.pack("<I", 99) + b"abcd",
        ),
        "declares 99",
    ),
    "BYTES fewer elements than the shape": (
        *_binary(
            [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": 9},
                }
            ],
            _bytes_elements(b"hello"),
        ),
        "ends inside",
    ),
    "BYTES not an image": (
        *_binary(
            [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": 9},
                }
            ],
            _bytes_elements(b"hello"),
        ),
        "image",
    ),
    "shape not a list": (_header([{**IMG, "shape": "1x3", "data": [0.0]}]), {}, "shape"),
    "negative dimension": (
        _header([{**IMG, "shape": [-1, 3, 128, 128], "data": [0.0]}]),
        {},
        "negative",
    ),
    "huge shape": (
        _header([{**IMG, "shape": [1_000_000_000, 1_000_000_000], "data": [0.0]}]),
        {},
        "too large",
    ),
    "image of the wrong shape": (
        _header([{**IMG, "shape": [1, 3, 64, 64], "data": [0.0] * 12288}]),
        {},
        "must have shape",
    ),
    "strings as FP32 data": (_header([{**IMG, "data": ["a"] * 49152}]), {}, "numbers"),
    "INT32 image": (
        _header([{**IMG, "datatype": "INT32", "data": [0] * 49152}]),
        {},
        "must be FP32",
    ),
    "bad parameter": (
        _header([{**IMG, "data": [0.0] * 49152}], parameters={"resolution": "huge"}),
        {},
        "resolution",
    ),
    "non-bool binary_data_output": (
        _header([{**IMG, "data": [0.0] * 49152}], parameters={"binary_data_output": "yes"}),
        {},
        "binary_data_output",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_http_requests_are_400(server, case):
    http, _ = server
    body, headers, message = BAD[case]
    r = httpx.post(
        f"http://{http}/v2/models/scenes/infer", content=body, headers=headers, timeout=30
    )
    assert r.status_code == 400, (case, r.status_code, r.text)
    assert message.lower() in r.json()["error"].lower(), (case, r.json())


def test_gateway_still_serves_after_malformed_requests(server, session):
    http, _ = server
    for case in BAD:
        body, headers, _ = BAD[case]
        httpx.post(f"http://{http}/v2/models/scenes/infer", content=body, headers=headers)
    x = _x(1, seed=9)
    c = httpclient.InferenceServerClient(http)
    try:
        i = httpclient.InferInput("image", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        r = c.infer("scenes", [i])
        np.testing.assert_allclose(
            r.as_numpy("semseg"), _ref(session, x)["semseg"], rtol=1e-5, atol=1e-5
        )
    finally:
        c.close()


def test_unknown_model_or_output_is_404_and_bad_encoding_is_415(server):
    http, _ = server
    r = httpx.post(f"http://{http}/v2/models/nope/infer", content=_header([IMG]))
    assert r.status_code == 404 and "unknown model" in r.json()["error"]
    body = _header([{**IMG, "data": [0.0] * 49152}], outputs=[{"name": "semseg.png"}])
    r = httpx.post(f"http://{http}/v2/models/scenes/infer", content=body)
    assert r.status_code == 404 and "unknown output" in r.json()["error"]
    r = httpx.post(
        f"http://{http}/v2/models/scenes/infer",
        content=gzip.compress(b"{}"),
        headers={"Content-Encoding": "br"},
    )
    assert r.status_code == 415
    r = httpx.post(
        f"http://{http}/v2/models/scenes/infer",
        content=b"\x1f\x8b\x08garbage",
        headers={"Content-Encoding": "gzip"},
    )
    assert r.status_code == 400


def _raw_request(**overrides) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=overrides.pop("model", "scenes"))
    req.inputs.add(
        name="image",
        datatype=overrides.pop("datatype", "FP32"),
        shape=overrides.pop("shape", [1, 3, 128, 128]),
    )
    for blob in overrides.pop("raw", [X]):
        req.raw_input_contents.append(blob)
    return req


@pytest.mark.parametrize(
    ("request_", "code", "message"),
    [
        (_raw_request(raw=[X[:-4]]), grpc.StatusCode.INVALID_ARGUMENT, "needs"),
        (_raw_request(raw=[X, X]), grpc.StatusCode.INVALID_ARGUMENT, "raw_input_contents"),
        (_raw_request(datatype="FP8"), grpc.StatusCode.INVALID_ARGUMENT, "datatype"),
        (_raw_request(raw=[]), grpc.StatusCode.INVALID_ARGUMENT, "contents has 0"),
        (
            _raw_request(shape=[1, 3, 64, 64], raw=[X[: 3 * 64 * 64 * 4]]),
            grpc.StatusCode.INVALID_ARGUMENT,
            "must have shape",
        ),
        (_raw_request(model="nope"), grpc.StatusCode.NOT_FOUND, "unknown model"),
    ],
)
def test_malformed_grpc_requests(server, request_, code, message):
    _, target = server
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.ModelInfer(request_, timeout=30)
        assert e.value.code() == code
        assert message in e.value.details()
        # typed contents work too (no raw contents)
        req = pb.ModelInferRequest(model_name="scenes")
        t = req.inputs.add(name="image", datatype="FP32", shape=[1, 3, 128, 128])
        t.contents.fp32_contents.extend([0.0] * 49152)
        out = stub.ModelInfer(req, timeout=30)
        assert [o.name for o in out.outputs] == RAW


def _metric(text: str, name: str) -> float:
    line = next(x for x in text.splitlines() if x.startswith(name + '{model="scenes"}'))
    return float(line.rsplit(" ", 1)[1])


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_one_forward_pass_per_request_through_the_batcher(server, protocol):
    """A v2 request of 3 rows is one batch of 3 in the batcher's metrics, as /v1 would be."""
    http, target = server
    before = httpx.get(f"http://{http}/metrics").text
    x = _x(3, seed=11)
    module = httpclient if protocol == "http" else grpcclient
    c = module.InferenceServerClient(http if protocol == "http" else target)
    try:
        i = module.InferInput("image", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        c.infer("scenes", [i], outputs=[module.InferRequestedOutput("semseg.classes")])
    finally:
        c.close()
    after = httpx.get(f"http://{http}/metrics").text
    assert (
        _metric(after, "polyhead_batch_size_count") - _metric(before, "polyhead_batch_size_count")
        == 1
    )
    assert (
        _metric(after, "polyhead_batch_size_sum") - _metric(before, "polyhead_batch_size_sum") == 3
    )
    assert _metric(after, "polyhead_images_total") - _metric(before, "polyhead_images_total") == 3
