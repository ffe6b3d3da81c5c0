"""The v2 protocol's edges, against a real ``polyhead serve``: each malformed field a 4xx naming
it, never a 500; what Triton's tools rely on; what lies below the app (headers, HTTP parsing).
"""

from __future__ import annotations

import gzip
import logging
import shutil
import socket
import struct
import zlib

import grpc
import httpx
import numpy as np
import orjson
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from serving.backends.factory import backend_factory_for
from serving.metrics import Metrics
from serving.repository import BatchingConfig, ModelRepository
from serving.settings import Settings
from tests.gateway import ROOT, free_port, gateway_server
from tests.images import encode, scene_image

BUNDLED = ROOT / "model_repo"
X = np.random.default_rng(5).standard_normal((1, 3, 128, 128)).astype(np.float32)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(BUNDLED / "scenes", repo / "scenes")
    for odd in ("١", "²", "0", "v2"):  # not versions: ignored, the server still starts
        shutil.copytree(BUNDLED / "scenes" / "1", repo / "scenes" / odd)
    grpc_port = free_port()
    with gateway_server(repo, grpc_port=str(grpc_port), reload_interval_s="0") as (url, proc):
        yield url, f"127.0.0.1:{grpc_port}", proc


def _infer(url: str, body: bytes, **headers: str) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/scenes/infer", content=body, headers=headers, timeout=60)


def _tensor_body(**extra) -> bytes:
    inp = {"name": "image", "datatype": "FP32", "shape": [1, 3, 128, 128], **extra}
    return orjson.dumps({"inputs": [inp]})


def test_versions_in_ascii_digits_only(server):
    url, target, _ = server
    assert httpx.get(f"{url}/v2/models/scenes/versions/1").status_code == 200
    for version in ("١", "²", "0", "1.0"):
        r = httpx.get(f"{url}/v2/models/scenes/versions/{version}")
        assert r.status_code == 400 and "ASCII digits" in r.json()["error"], (version, r.text)
    r = httpx.get(f"{url}/v2/models/scenes/versions/7")
    assert r.status_code == 404
    index = httpx.post(f"{url}/v2/repository/index").json()
    assert index == [{"name": "scenes", "version": "1", "state": "READY"}]
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for call, req in (
            (stub.ModelMetadata, pb.ModelMetadataRequest(name="scenes", version="١")),
            (stub.ModelConfig, pb.ModelConfigRequest(name="scenes", version="²")),
            (stub.ModelInfer, pb.ModelInferRequest(model_name="scenes", model_version="١")),
        ):
            with pytest.raises(grpc.RpcError) as e:
                call(req, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
            assert "Traceback" not in e.value.details()
        ready = stub.ModelReady(pb.ModelReadyRequest(name="scenes", version="١"), timeout=10)
        assert ready.ready is False


def test_repository_scan_logs_what_it_ignores(tmp_path, caplog):
    shutil.copytree(BUNDLED / "scenes", tmp_path / "scenes")
    (tmp_path / "scenes" / "١").mkdir()
    repo = ModelRepository(
        tmp_path, backend_factory_for(Settings()), BatchingConfig(), Metrics(), control="none"
    )
    with caplog.at_level(logging.WARNING, logger="serving.repository"):
        assert repo.on_disk() == ["scenes"]
        assert repo._on_disk() == {"scenes": [1]}
    assert sum("١" in r.getMessage() for r in caplog.records) == 1  # once, not per scan


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (orjson.dumps({"inputs": [{"name": "image", "datatype": "FP32", "data": [1]}]}), "shape"),
        (_tensor_body(shape=None, data=[1]), "'shape' must be a list"),
        (_tensor_body(shape="1,3", data=[1]), "'shape' must be a list"),
        (_tensor_body(shape=[0, 1 << 40, 1 << 40], data=[]), "too large"),
        (_tensor_body(shape=[0, 3, 128, 128], data=[]), "must have shape"),
        (_tensor_body(datatype=None, data=[1]), "'datatype'"),
        (orjson.dumps({"inputs": [{"name": 3, "datatype": "FP32", "shape": [1]}]}), "'name'"),
        (_tensor_body(data=[1], parameters={"binary_data_size": True}), "binary_data_size"),
        (orjson.dumps({"inputs": "x"}), "'inputs'"),
        (orjson.dumps({"inputs": [{}], "parameters": {"top_k": [1]}}), "parameter"),
    ],
)
def test_malformed_fields_are_400_naming_the_field(server, body, message):
    url, _, proc = server
    r = _infer(url, body)
    assert r.status_code == 400, r.text
    assert message in r.json()["error"], r.json()
    assert proc.poll() is None


def test_unknown_model_and_output_are_404(server):
    url, target, _ = server
    r = httpx.post(f"{url}/v2/models/nope/infer", content=_tensor_body(data=[0.0] * 49152))
    assert r.status_code == 404 and "Request for unknown model" in r.json()["error"]
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": [1, 3, 128, 128],
                    "data": [0.0] * 49152,
                }
            ],
            "outputs": [{"name": "nope"}],
        }
    )
    assert _infer(url, body).status_code == 404
    with grpc.insecure_channel(target) as channel:
        req = pb.ModelInferRequest(model_name="scenes")
        req.inputs.add(name="image", datatype="FP32", shape=[1, 3, 128, 128])
        req.raw_input_contents.append(X.tobytes())
        req.outputs.add(name="nope")
        with pytest.raises(grpc.RpcError) as e:
            pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND


def test_grpc_raw_and_typed_contents_together_are_refused(server):
    _, target, _ = server
    req = pb.ModelInferRequest(model_name="scenes")
    t = req.inputs.add(name="image", datatype="FP32", shape=[1, 3, 128, 128])
    t.contents.fp32_contents.extend([0.0] * 49152)
    req.raw_input_contents.append(X.tobytes())
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as e:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "both typed contents and raw_input_contents" in e.value.details()


def test_grpc_message_that_is_not_protobuf_is_invalid_argument(server):
    _, target, _ = server
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as e:
            call(b"\xff\xff\xff\xff not protobuf", timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, e.value
    assert "not a valid message" in e.value.details()


def test_classification_extension_over_http_and_grpc(server):
    url, target, _ = server
    results = []
    for module, address in ((httpclient, url.removeprefix("http://")), (grpcclient, target)):
        client = module.InferenceServerClient(address)
        try:
            i = module.InferInput("image", list(X.shape), "FP32")
            i.set_data_from_numpy(X)
            out = module.InferRequestedOutput("shapes", class_count=2)
            results.append(client.infer("scenes", [i], outputs=[out]).as_numpy("shapes"))
            bad = module.InferRequestedOutput("semseg.classes", class_count=2)
            with pytest.raises(Exception, match="classification takes an output"):
                client.infer("scenes", [i], outputs=[bad])
        finally:
            client.close()
    assert results[0].shape == (1, 2) and results[0].tolist() == results[1].tolist()
    value, index, label = results[0][0, 0].decode().split(":")
    assert label in ("circle", "square", "triangle", "star") and int(index) in range(4)
    assert float(value) >= float(results[0][0, 1].decode().split(":")[0])


def test_nonfinite_tensors_pass_through_and_are_counted(server):
    url, _, _ = server
    x = X.copy()
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": [1, 3, 128, 128],
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "semseg.json"}, {"name": "shapes"}],
        }
    )
    r = _infer(url, head + x.tobytes(), **{"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200, r.text
    assert r.json()["parameters"]["nonfinite_input_values"] == 3


def test_nonfinite_tensors_refused_when_asked():
    with gateway_server(BUNDLED, reload_interval_s="0", reject_nonfinite_tensors="true") as (
        url,
        _,
    ):
        data = [0.0] * 49152
        body = orjson.dumps(
            {
                "inputs": [
                    {"name": "image", "datatype": "FP32", "shape": [1, 3, 128, 128], "data": data}
                ]
            }
        )
        assert _infer(url, body).status_code == 200
        x = X.copy()
        x[0, 0, 0, 0] = np.nan
        head = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "FP32",
                        "shape": [1, 3, 128, 128],
                        "parameters": {"binary_data_size": x.nbytes},
                    }
                ]
            }
        )
        r = _infer(url, head + x.tobytes(), **{"Inference-Header-Content-Length": str(len(head))})
        assert r.status_code == 400 and "1 NaN or infinite" in r.json()["error"]


def test_both_inputs_use_the_tensor_and_say_so(server):
    url, _, _ = server
    png = encode(scene_image(1), "PNG")
    client = httpclient.InferenceServerClient(url.removeprefix("http://"))
    try:
        i = httpclient.InferInput("image", list(X.shape), "FP32")
        i.set_data_from_numpy(X)
        b = httpclient.InferInput("image_bytes", [1, 1], "BYTES")
        b.set_data_from_numpy(np.array([[png]], dtype=object))
        both = client.infer("scenes", [i, b])
        alone = client.infer("scenes", [i])
        np.testing.assert_array_equal(both.as_numpy("shapes"), alone.as_numpy("shapes"))
        assert both.get_response()["parameters"] == {"ignored_inputs": "image_bytes"}
    finally:
        client.close()


def test_base64_image_in_pure_json_equals_binary(server):
    url, _, _ = server
    import base64

    png = encode(scene_image(2), "PNG")
    body = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [1, 1],
                    "parameters": {"content_type": "base64"},
                    "data": [base64.b64encode(png).decode()],
                }
            ],
            "outputs": [{"name": "shapes"}],
        }
    )
    via_json = _infer(url, body).json()["outputs"][0]["data"]
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [1, 1],
                    "parameters": {"binary_data_size": len(png) + 4},
                }
            ],
            "outputs": [{"name": "shapes", "parameters": {"binary_data": False}}],
        }
    )
    raw = head + struct.pack("<I", len(png)) + png
    via_binary = _infer(url, raw, **{"Inference-Header-Content-Length": str(len(head))})
    assert via_binary.json()["outputs"][0]["data"] == via_json


@pytest.mark.parametrize(
    ("body", "encoding", "status"),
    [
        (gzip.compress(_tensor_body()[:20]) + gzip.compress(_tensor_body()[20:]), "gzip", 400),
        (gzip.compress(_tensor_body(data=[0.0] * 49152)) + b"junk", "gzip", 400),
        (zlib.compress(_tensor_body(data=[0.0] * 49152)) + b"junk", "deflate", 400),
    ],
)
def test_compressed_bodies_whole_or_refused(server, body, encoding, status):
    url, _, _ = server
    r = _infer(url, body, **{"Content-Encoding": encoding})
    assert r.status_code == status, r.text
    if r.status_code == 400 and b"junk" in body:
        assert "trailing data" in r.json()["error"]
    else:  # both members read: the error is about the request inside, not the framing
        assert "neither 'data' nor binary_data_size" in r.json()["error"]


def _raw_http(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):
            pass
    return out


def test_below_the_app_errors_are_json_and_headers_are_bounded(server):
    url, _, proc = server
    huge = b"GET /v2 HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    out = _raw_http(url, huge)
    assert out.startswith(b"HTTP/1.1 431"), out[:200]
    assert b'{"error":"request line and headers exceed' in out
    many = b"".join(b"X-%d: %s\r\n" % (i, b"b" * 100) for i in range(300))
    assert _raw_http(url, b"GET /v2 HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n").startswith(
        b"HTTP/1.1 431"
    )
    out = _raw_http(url, b"NOT HTTP AT ALL\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400") and b"application/json" in out, out
    assert b'{"error":"invalid HTTP request' in out
    assert proc.poll() is None
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200


def test_openapi_describes_the_v2_body_and_the_errors(server):
    url, _, _ = server
    doc = httpx.get(f"{url}/openapi.json").json()
    infer = doc["paths"]["/v2/models/{name}/infer"]["post"]
    schema = infer["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["inputs"]
    for status in ("400", "404", "413", "503"):
        assert infer["responses"][status]["content"]["application/json"]["schema"]["required"] == [
            "error"
        ]
    predict = doc["paths"]["/v1/models/{name}/predict"]["post"]
    assert {"400", "404", "413", "415"} <= set(predict["responses"])


def test_explicit_model_control(tmp_path):
    shutil.copytree(BUNDLED / "scenes", tmp_path / "scenes")
    grpc_port = free_port()
    env = {"model_control_mode": "explicit", "grpc_port": str(grpc_port)}
    with gateway_server(tmp_path, **env) as (url, _):
        # as Triton: nothing is loaded until asked; the index lists the model by name only
        assert httpx.post(f"{url}/v2/repository/index").json() == [{"name": "scenes"}]
        assert httpx.get(f"{url}/v2/models/scenes").status_code == 404
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        try:
            client.load_model("scenes", config='{"max_batch_size": 4}')
            assert client.get_model_config("scenes")["max_batch_size"] == 4
            client.load_model("scenes")  # a reload keeps the override
            assert client.get_model_config("scenes")["max_batch_size"] == 4
            with pytest.raises(Exception, match="failed to load"):
                client.load_model("scenes", config='{"input": []}')
            with pytest.raises(Exception, match="failed to load"):
                client.load_model("nope")
            assert client.is_model_ready("scenes")  # a failed load leaves it serving
            client.unload_model("scenes")
            assert not client.is_model_ready("scenes")
            index = client.get_model_repository_index()
            assert index == [{"name": "scenes", "state": "UNAVAILABLE", "reason": "unloaded"}]
        finally:
            client.close()
    with gateway_server(tmp_path, reload_interval_s="0") as (url, _):  # poll/none: refused
        r = httpx.post(f"{url}/v2/repository/models/scenes/unload")
        assert r.status_code == 400 and "POLYHEAD_MODEL_CONTROL_MODE=explicit" in r.json()["error"]


def test_statistics_count_every_api_once(server):
    url, target, _ = server

    def stats() -> dict:
        return httpx.get(f"{url}/v2/models/scenes/versions/1/stats").json()["model_stats"][0]

    before = stats()
    png = encode(scene_image(4), "PNG")
    assert httpx.post(f"{url}/v1/models/scenes/predict", files={"file": png}).status_code == 200
    _infer(url, _tensor_body(data=[0.0] * 49152))
    with grpc.insecure_channel(target) as channel:
        req = pb.ModelInferRequest(model_name="scenes")
        req.inputs.add(name="image", datatype="FP32", shape=[2, 3, 128, 128])
        req.raw_input_contents.append(np.zeros((2, 3, 128, 128), np.float32).tobytes())
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=30)
    httpx.post(f"{url}/v1/models/scenes/predict", files={"file": b"not an image"})
    after = stats()
    s0, s1 = before["inference_stats"], after["inference_stats"]
    assert s1["success"]["count"] - s0["success"]["count"] == 3
    assert s1["fail"]["count"] - s0["fail"]["count"] == 1
    assert after["inference_count"] - before["inference_count"] == 4  # 1 + 1 + 2 images
    assert s1["queue"]["count"] - s0["queue"]["count"] == 3
    assert s1["compute_input"]["ns"] > s0["compute_input"]["ns"]  # the PNG was decoded
    metrics = httpx.get(f"{url}/metrics").text
    line = next(
        x for x in metrics.splitlines() if x.startswith('polyhead_images_total{model="scenes"}')
    )
    assert float(line.rsplit(" ", 1)[1]) == after["inference_count"]
