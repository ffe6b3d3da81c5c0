"""The gateway's Triton backend against a REAL tritonserver (from the nvidia-pytriton wheel).

Triton serves the bundled model through a Python-backend model that runs the same model.onnx
with ONNX Runtime (tests/triton_python_model/model.py); the gateway keeps pre/post-processing and APIs.
"""

from __future__ import annotations

import base64
import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.gateway import ROOT, gateway_server
from tests.tritonserver import Triton, build_repository, triton_server

BUNDLED = ROOT / "model_repo"
VERSION_DIR = BUNDLED / "scenes" / "1"
TIMEOUT_S = 2.0


def _png(w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
    pixels[h // 4 : h // 2, w // 4 : w // 2] = (230, 40, 40)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


IMAGES = [_png(128, 128, 0), _png(200, 150, 1), _png(97, 211, 2)]


def _predict(url: str, images: list[bytes], **params: str) -> httpx.Response:
    body = {"images": [base64.b64encode(i).decode() for i in images]}
    return httpx.post(
        f"{url}/v1/models/scenes/predict",
        json=body,
        params={"encoding": "json", **params},
        timeout=30,
    )


def _close(a, b, path: str = "") -> None:
    """Recursive equality: numbers to float tolerance, everything else exactly."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        if (
            a
            and all(isinstance(v, int | float) for v in a)
            and not any(isinstance(v, bool) for v in a)
        ):
            np.testing.assert_allclose(
                np.asarray(a, float), np.asarray(b, float), rtol=1e-3, atol=1e-4, err_msg=path
            )
            return
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert b == pytest.approx(a, rel=1e-3, abs=1e-4), path
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def triton():
    with triton_server([VERSION_DIR]) as t:
        yield t


@pytest.fixture(scope="module")
def ort_gateway():
    with gateway_server(BUNDLED, reload_interval_s="0") as (url, _):
        yield url


@pytest.fixture(scope="module")
def triton_gateway(triton: Triton):
    with gateway_server(
        BUNDLED,
        backend="triton",
        triton_url=triton.grpc_url,
        triton_timeout_s=str(TIMEOUT_S),
        reload_interval_s="0.5",
    ) as (url, proc):
        yield url, proc


def test_same_v1_predictions_as_onnxruntime(ort_gateway: str, triton_gateway) -> None:
    url, _ = triton_gateway
    model = httpx.get(f"{url}/v1/models/scenes", timeout=10).json()
    assert model["device"].startswith("triton grpc://")
    for images in (IMAGES[:1], IMAGES):
        want = _predict(ort_gateway, images)
        got = _predict(url, images)
        assert want.status_code == got.status_code == 200, got.text
        _close(want.json(), got.json())


def test_v2_through_the_triton_backend(triton_gateway) -> None:
    import onnxruntime as ort
    import tritonclient.http as th

    url, _ = triton_gateway
    x = np.random.default_rng(3).standard_normal((3, 3, 128, 128)).astype(np.float32)
    session = ort.InferenceSession(str(VERSION_DIR / "model.onnx"))
    ref = dict(
        zip([o.name for o in session.get_outputs()], session.run(None, {"image": x}), strict=True)
    )
    client = th.InferenceServerClient(url.removeprefix("http://"))
    try:
        i = th.InferInput("image", list(x.shape), "FP32")
        i.set_data_from_numpy(x, binary_data=True)
        # every graph output: the raw ones, and the decoded ones under the same names
        outputs = [th.InferRequestedOutput(name, binary_data=True) for name in ref]
        r = client.infer("scenes", [i], outputs=outputs)
        for name, want in ref.items():
            got = r.as_numpy(name)
            assert got.dtype == want.dtype, name
            np.testing.assert_allclose(
                got.astype(np.float32), want.astype(np.float32), rtol=1e-4, atol=1e-3
            )
    finally:
        client.close()


def test_http_protocol_and_triton_side_batching(triton: Triton, ort_gateway: str) -> None:
    """Triton over HTTP (binary tensors) with batching left to Triton's dynamic batcher."""
    with gateway_server(
        BUNDLED,
        backend="triton",
        triton_url=triton.http_url,
        triton_protocol="http",
        triton_batching="triton",
        max_images_per_request="16",
        reload_interval_s="0",
    ) as (url, _):
        assert (
            httpx.get(f"{url}/v1/models/scenes", timeout=10)
            .json()["device"]
            .startswith("triton http://")
        )
        # 10 images > max_batch_size 8: split into two Triton calls, results in order
        images = [_png(64 + 8 * i, 64, i) for i in range(10)]
        want = _predict(ort_gateway, images)
        got = _predict(url, images)
        assert got.status_code == 200, got.text
        _close(want.json(), got.json())
        # concurrent requests each get their own answer
        results: dict[int, httpx.Response] = {}

        def one(k: int) -> None:
            results[k] = _predict(url, [images[k]])

        threads = [threading.Thread(target=one, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in range(6):
            assert results[k].status_code == 200
            _close(want.json()["predictions"][k], results[k].json()["predictions"][0])


def test_triton_metadata_checked_against_manifest(tmp_path: Path) -> None:
    """A Triton model that lacks a task output is refused at load; the gateway says why."""
    repo = tmp_path / "triton"
    build_repository(VERSION_DIR, repo)
    config = repo / "scenes" / "config.pbtxt"
    text = config.read_text()
    start = text.index('  {\n    name: "background"')
    end = text.index("}", start) + 1
    if text[end] == ",":  # not the last output: drop the entry and its comma
        config.write_text(text[:start] + text[end + 2 :])
    else:
        config.write_text(text[:start].rstrip().rstrip(",") + "\n" + text[end:].lstrip())
    triton = Triton(repo, tmp_path, *(_ports()))
    triton.start()
    try:
        with gateway_server(
            BUNDLED,
            ready=False,
            backend="triton",
            triton_url=triton.grpc_url,
            reload_interval_s="0",
        ) as (url, _):
            assert httpx.get(f"{url}/v2/health/ready", timeout=5).status_code == 503
            failed = httpx.get(f"{url}/v1/models", timeout=5).json()["failed_versions"]
            assert "background" in failed["scenes/1"], failed
    finally:
        triton.stop()


def _ports() -> tuple[int, int, int]:
    from tests.gateway import free_port

    return free_port(), free_port(), free_port()


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_gateway_starts_before_triton_and_catches_up(tmp_path: Path) -> None:
    triton = Triton(tmp_path / "repo", tmp_path, *(_ports()))
    build_repository(VERSION_DIR, triton.repo)
    with gateway_server(
        BUNDLED,
        ready=False,
        backend="triton",
        triton_url=triton.grpc_url,
        triton_timeout_s=str(TIMEOUT_S),
        reload_interval_s="0.5",
    ) as (url, proc):
        assert not _ready(url)
        assert _predict(url, IMAGES[:1]).status_code == 404  # no version loaded yet
        triton.start()
        try:
            _wait(lambda: _ready(url), 60, "the gateway to load the model from Triton")
            assert _predict(url, IMAGES[:1]).status_code == 200
            assert proc.poll() is None
        finally:
            triton.stop()


def test_kill_and_restart_triton_under_load(triton: Triton, triton_gateway) -> None:
    """Killed Triton: fast 503s, readiness false. Restarted: the gateway recovers by itself."""
    url, proc = triton_gateway
    assert _ready(url)
    statuses: list[int] = []
    hangs: list[str] = []
    stop = threading.Event()
    # a request may wait at most the Triton timeout plus slack; longer counts as a hang
    client_timeout = TIMEOUT_S + 8

    def load() -> None:
        with httpx.Client(timeout=client_timeout) as client:
            body = {"images": [base64.b64encode(IMAGES[0]).decode()]}
            while not stop.is_set():
                try:
                    r = client.post(f"{url}/v1/models/scenes/predict", json=body)
                    statuses.append(r.status_code)
                    if r.status_code != 200:
                        assert r.json()["error"]
                except httpx.TimeoutException as e:
                    hangs.append(repr(e))

    workers = [threading.Thread(target=load) for _ in range(4)]
    for w in workers:
        w.start()
    try:
        _wait(lambda: statuses.count(200) >= 8, 60, "requests to succeed before the kill")
        triton.kill()
        killed_at = len(statuses)
        _wait(lambda: not _ready(url), 15, "readiness to go false")
        _wait(lambda: 503 in statuses[killed_at:], 15, "a 503 after the kill")
        time.sleep(1.0)
        after_kill = statuses[killed_at:]
        assert set(after_kill) <= {200, 503}, sorted(set(after_kill))

        triton.start()
        _wait(lambda: _ready(url), 30, "readiness to come back after the restart")
        recovered_at = len(statuses)
        _wait(lambda: statuses[recovered_at:].count(200) >= 8, 30, "requests to succeed again")
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=client_timeout + 5)
    assert not hangs, hangs
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert proc.poll() is None  # the same gateway process throughout
    assert all(s == 200 for s in statuses[recovered_at + 8 :][-4:])


def test_production_config_stays_onnxruntime(tmp_path: Path) -> None:
    """The test-only Python-backend repository is generated; model_repo's config is untouched."""
    text = (BUNDLED / "scenes" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in text and "backend:" not in text
    name = build_repository(VERSION_DIR, tmp_path)
    generated = (tmp_path / name / "config.pbtxt").read_text()
    assert 'backend: "python"' in generated and "platform" not in generated
    assert generated.count("name:") == text.count("name:")  # same inputs and outputs


def test_real_triton_accepts_the_production_config_sections(tmp_path: Path) -> None:
    """Warm-up and the TensorRT accelerator section, as export writes them, parse in Triton."""
    repo = tmp_path / "repo"
    build_repository(VERSION_DIR, repo, tensorrt_precision="FP16")
    text = (repo / "scenes" / "config.pbtxt").read_text()
    assert "model_warmup" in text and '"tensorrt"' in text
    triton = Triton(repo, tmp_path, *(_ports()))
    triton.start()
    try:
        r = httpx.get(f"http://{triton.http_url}/v2/models/scenes/config", timeout=5).json()
        accel = r["optimization"]["execution_accelerators"]["gpu_execution_accelerator"][0]
        assert accel["name"] == "tensorrt"
        assert accel["parameters"]["precision_mode"] == "FP16"
        assert [w["batch_size"] for w in r["model_warmup"]] == [1, 8]
    finally:
        triton.stop()
