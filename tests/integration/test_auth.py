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
def url(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(BUNDLED, root / "scenes")
    with gateway_thread(
        create_app(
            Settings(repo=root, api_keys=[KEY, "second-key-0123456789"], reload_interval_s=0)
        )
    ) as u:
        yield u


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
