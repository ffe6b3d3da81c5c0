"""Overload answers 503 with Retry-After; hot reload loses no request and rejects broken versions."""

import asyncio
import json
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from serving.api.app import create_app
from serving.backends.factory import onnxruntime_factory
from serving.settings import Settings
from tests.gateway import gateway_process, gateway_thread
from tests.integration.test_gateway import BUNDLED, scene_png


class SlowBackend:
    """The real ONNX Runtime backend, plus a fixed delay per forward pass."""

    def __init__(self, inner, delay):
        self.inner, self.delay = inner, delay

    def __getattr__(self, name):
        return getattr(self.inner, name)

    async def infer(self, batch, outputs):
        await asyncio.sleep(self.delay)
        return await self.inner.infer(batch, outputs)


def test_overload_gets_503_with_retry_after_and_admitted_requests_succeed(tmp_path):
    shutil.copytree(BUNDLED, tmp_path / "scenes")
    settings = Settings(
        repo=tmp_path, max_batch_size=1, max_queue_delay_ms=0, max_queue_size=2, reload_interval_s=0
    )
    base = onnxruntime_factory(settings)
    app = create_app(settings, backend_factory=lambda p, m: SlowBackend(base(p, m), 0.25))
    image = scene_png(8)
    with gateway_thread(app) as url:

        def call(_):
            return httpx.post(
                f"{url}/v1/models/scenes/predict?tasks=background",
                content=image,
                headers={"content-type": "image/png"},
                timeout=60,
            )

        with ThreadPoolExecutor(16) as pool:
            responses = list(pool.map(call, range(16)))
    codes = sorted(r.status_code for r in responses)
    refused = [r for r in responses if r.status_code == 503]
    admitted = [r for r in responses if r.status_code == 200]
    assert set(codes) <= {200, 503}, codes
    assert refused and admitted, codes
    for r in refused:
        assert int(r.headers["retry-after"]) >= 1
        assert "busy" in r.json()["error"]
    for r in admitted:
        assert r.json()["predictions"][0]["tasks"]["background"]["label"]


def publish(repo, version, corrupt=False):
    """Publish like `polyhead export` does: write a hidden directory, then one rename."""
    model = repo / "scenes"
    staging = model / f".staging-{version}"
    shutil.copytree(BUNDLED / "1", staging)
    manifest = json.loads((staging / "manifest.json").read_text())
    manifest["version"] = version
    (staging / "manifest.json").write_text(json.dumps(manifest))
    if corrupt:
        (staging / "model.onnx").write_bytes(b"this is not an onnx model")
    os.rename(staging, model / str(version))


@pytest.mark.slow
def test_hot_reload_loses_no_request_and_keeps_serving_through_a_broken_version(tmp_path):
    (tmp_path / "scenes").mkdir()
    shutil.copytree(BUNDLED / "1", tmp_path / "scenes" / "1")
    image = scene_png(9)
    with gateway_process(tmp_path, reload_interval_s="0.3") as url:
        stop = threading.Event()
        results = []

        def hammer():
            with httpx.Client(timeout=60) as client:
                while not stop.is_set():
                    r = client.post(
                        f"{url}/v1/models/scenes/predict?tasks=background",
                        content=image,
                        headers={"content-type": "image/png"},
                    )
                    results.append((r.status_code, r.json().get("version")))

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        publish(tmp_path, 2)
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/v1/models").json()["models"][0]["latest"] != 2:
            assert time.monotonic() < deadline, "version 2 never went live"
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        assert results and all(code == 200 for code, _ in results), {c for c, _ in results}
        versions = [v for _, v in results]
        assert versions[0] == 1 and versions[-1] == 2
        after = httpx.post(
            f"{url}/v1/models/scenes/predict",
            content=image,
            headers={"content-type": "image/png"},
            timeout=30,
        )
        assert after.json()["version"] == 2

        publish(tmp_path, 3, corrupt=True)
        deadline = time.monotonic() + 30
        while "scenes/3" not in httpx.get(f"{url}/v1/models").json()["failed_versions"]:
            assert time.monotonic() < deadline, "the broken version was never reported"
            time.sleep(0.1)
        listing = httpx.get(f"{url}/v1/models").json()
        assert listing["models"][0]["latest"] == 2
        r = httpx.post(
            f"{url}/v1/models/scenes/predict",
            content=image,
            headers={"content-type": "image/png"},
            timeout=30,
        )
        assert r.status_code == 200 and r.json()["version"] == 2
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        metrics = httpx.get(f"{url}/metrics").text
        assert 'polyhead_model_loads_total{model="scenes",result="failure"} 1.0' in metrics
