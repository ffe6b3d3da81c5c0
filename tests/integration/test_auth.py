"""Optional API keys: /v1 needs one, health and metrics stay open."""

import shutil

import httpx
import pytest
from pydantic import ValidationError

from serving.api.app import create_app
from serving.settings import Settings
from tests.gateway import gateway_thread
from tests.integration.test_gateway import BUNDLED

KEY = "k" * 24


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(BUNDLED, root / "scenes")
    settings = Settings(
        repo=root, api_keys=[KEY, "second-key-0123456789"], reload_interval_s=0, grpc_port=0
    )
    app = create_app(settings)
    with gateway_thread(app) as u:
        yield u, app.state.grpc_port


@pytest.fixture(scope="module")
def url(served):
    return served[0]


def test_v2_http_and_grpc_need_a_valid_key(served):
    import numpy as np
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    url, grpc_port = served
    assert httpx.get(f"{url}/v2/models/scenes").status_code == 401
    assert httpx.get(f"{url}/v2/models/scenes", headers={"x-api-key": KEY}).status_code == 200
    r = httpx.post(f"{url}/v2/models/scenes/infer", json={"inputs": []})
    assert r.status_code == 401 and "API key" in r.json()["error"]

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
    try:
        x = grpcclient.InferInput("image", [1, 3, 128, 128], "FP32")
        x.set_data_from_numpy(np.zeros((1, 3, 128, 128), np.float32))
        with pytest.raises(InferenceServerException, match="API key") as e:
            client.infer("scenes", [x])
        assert "UNAUTHENTICATED" in str(e.value.status())
        with pytest.raises(InferenceServerException, match="API key"):
            client.get_model_metadata("scenes")
        r = client.infer("scenes", [x], headers={"x-api-key": KEY})
        assert r.as_numpy("shapes").shape == (1, 4)
        bearer = {"authorization": "Bearer second-key-0123456789"}
        assert client.get_model_metadata("scenes", headers=bearer).name == "scenes"
    finally:
        client.close()


def test_one_rule_for_every_rpc_and_route(served):
    """Every call needs the key but the server-level health checks, over HTTP and gRPC alike."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    url, grpc_port = served
    for path in ("/v2", "/v2/models/scenes/ready", "/v2/models/scenes/config", "/v2/models/stats"):
        assert httpx.get(f"{url}{path}").status_code == 401, path
        assert httpx.get(f"{url}{path}", headers={"x-api-key": KEY}).status_code == 200, path
    assert httpx.post(f"{url}/v2/repository/index").status_code == 401
    for path in ("/v2/health/live", "/v2/health/ready"):
        assert httpx.get(f"{url}{path}").status_code == 200, path
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        assert stub.ServerReady(pb.ServerReadyRequest(), timeout=10).ready
        guarded = [
            (stub.ModelReady, pb.ModelReadyRequest(name="scenes")),
            (stub.ServerMetadata, pb.ServerMetadataRequest()),
            (stub.ModelMetadata, pb.ModelMetadataRequest(name="scenes")),
            (stub.ModelConfig, pb.ModelConfigRequest(name="scenes")),
            (stub.ModelStatistics, pb.ModelStatisticsRequest(name="scenes")),
            (stub.RepositoryIndex, pb.RepositoryIndexRequest()),
            (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="scenes")),
        ]
        for call, request in guarded:
            with pytest.raises(grpc.RpcError) as e:
                call(request, timeout=10)
            assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED, call
        meta = (("x-api-key", KEY),)
        assert stub.ModelReady(pb.ModelReadyRequest(name="scenes"), metadata=meta).ready
        with pytest.raises(grpc.RpcError) as e:
            list(stub.ModelStreamInfer(iter([pb.ModelInferRequest(model_name="scenes")])))
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_v1_needs_a_valid_key(url):
    assert httpx.get(f"{url}/v1/models").status_code == 401
    assert httpx.get(f"{url}/v1/models", headers={"x-api-key": "wrong" * 5}).status_code == 401
    r = httpx.post(
        f"{url}/v1/models/scenes/predict", content=b"x", headers={"content-type": "image/png"}
    )
    assert r.status_code == 401 and "API key" in r.json()["error"]
    assert httpx.get(f"{url}/v1/models", headers={"x-api-key": KEY}).status_code == 200
    assert (
        httpx.get(
            f"{url}/v1/models", headers={"authorization": "Bearer second-key-0123456789"}
        ).status_code
        == 200
    )


def test_health_and_metrics_stay_open(url):
    assert httpx.get(f"{url}/v2/health/live").status_code == 200
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{url}/metrics").status_code == 200


def test_short_keys_are_refused(tmp_path):
    with pytest.raises(ValidationError, match="at least 16 characters"):
        Settings(repo=tmp_path, api_keys=["short"])


def test_settings_come_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("POLYHEAD_MAX_BATCH_SIZE", "4")
    monkeypatch.setenv("POLYHEAD_REPO", str(tmp_path))
    monkeypatch.setenv("POLYHEAD_PROVIDERS", '["CPUExecutionProvider"]')
    s = Settings()
    assert s.max_batch_size == 4 and s.repo == tmp_path and s.providers == ["CPUExecutionProvider"]
    monkeypatch.setenv("POLYHEAD_MAX_BATCH_SIZE", "0")
    with pytest.raises(ValidationError, match="max_batch_size"):
        Settings()
