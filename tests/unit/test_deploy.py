"""deploy/: what can be checked without a Docker engine or a cluster.

The compose file validates against the Compose specification's JSON schema (vendored by the
check-jsonschema package) and follows our rules; the kustomize overlays render with kubectl; the
Dockerfiles install what the README says and run as non-root with a health check; every
POLYHEAD_* variable anywhere in deploy/ is a real setting with a valid value.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serving.settings import Settings
from tests.gateway import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose" / "docker-compose.yml"
DOCKERFILES = sorted((DEPLOY / "docker").glob("Dockerfile.*[!e]"))  # not the .dockerignore files
OVERLAYS = ["cpu", "triton"]
FIELDS = {f"POLYHEAD_{name.upper()}" for name in Settings.model_fields}


def _validate_compose(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
    )


def test_compose_validates_against_the_compose_spec(tmp_path):
    ok = _validate_compose(COMPOSE)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    # the validator bites: a service with a misspelt key is refused
    broken = yaml.safe_load(COMPOSE.read_text())
    broken["services"]["gateway-cpu"]["helthcheck"] = broken["services"]["gateway-cpu"].pop(
        "healthcheck", {}
    )
    bad = tmp_path / "docker-compose.yml"
    bad.write_text(yaml.safe_dump(broken))
    assert _validate_compose(bad).returncode != 0


def _services() -> dict:
    doc = yaml.safe_load(COMPOSE.read_text())
    return doc["services"]


def test_compose_rules():
    services = _services()
    assert set(services) == {"triton", "gateway", "gateway-cpu"}
    assert services["triton"]["profiles"] == ["triton"]
    assert services["gateway"]["profiles"] == ["triton"]
    assert services["gateway-cpu"]["profiles"] == ["cpu"]
    for name, s in services.items():
        assert "image" in s or "build" in s, name
        assert "healthcheck" in s and s["healthcheck"]["test"], name
        mounts = [v for v in s.get("volumes", []) if v.endswith(":/models:ro")]
        assert mounts == ["../../model_repo:/models:ro"], name  # relative to deploy/compose/
        assert (COMPOSE.parent / "../../model_repo").resolve() == (ROOT / "model_repo").resolve()
    assert "ports" not in services["triton"]  # Triton stays inside the compose network
    gw = services["gateway"]
    assert gw["depends_on"]["triton"]["condition"] == "service_healthy"
    assert gw["environment"]["POLYHEAD_BACKEND"] == "triton"
    assert gw["environment"]["POLYHEAD_TRITON_URL"] == "triton:8001"
    assert services["gateway-cpu"]["environment"]["POLYHEAD_BACKEND"] == "onnxruntime"
    gpu = services["triton"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["capabilities"] == ["gpu"]
    for name in ("gateway", "gateway-cpu"):
        assert services[name]["build"]["dockerfile"] == "deploy/docker/Dockerfile.cpu"
        assert (COMPOSE.parent / services[name]["build"]["context"]).resolve() == ROOT
        assert services[name]["read_only"] is True


def _settings_from(env: dict[str, str]) -> Settings:
    """Settings as the gateway would build them from these variables alone."""
    import os

    old = {k: v for k, v in os.environ.items() if k.startswith("POLYHEAD_")}
    for k in old:
        del os.environ[k]
    os.environ.update(env)
    try:
        return Settings()
    finally:
        for k in env:
            del os.environ[k]
        os.environ.update(old)


def _k8s(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the overlays cannot be rendered here")
    out = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_every_polyhead_variable_is_a_setting_with_a_valid_value():
    envs = [s.get("environment", {}) for s in _services().values()]
    for f in DOCKERFILES:
        code = "\n".join(x for x in f.read_text().splitlines() if not x.lstrip().startswith("#"))
        envs.append(dict(re.findall(r"(POLYHEAD_[A-Z_]+)=(\S+)", code)))
    named = set().union(*envs)
    text = "\n".join(p.read_text() for p in DEPLOY.rglob("*.yaml"))
    named |= set(re.findall(r"\b(POLYHEAD_[A-Z_]+)\b", text))
    unknown = sorted(named - FIELDS)
    assert not unknown, f"not settings: {unknown}"
    for env in envs:
        _settings_from({k: str(v) for k, v in env.items()})  # raises on a bad value


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_overlays_render(overlay):
    docs = _k8s(overlay)
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "polyhead-gateway") in kinds
    assert ("Service", "polyhead-gateway") in kinds
    assert ("HorizontalPodAutoscaler", "polyhead-gateway") in kinds
    config = next(d for d in docs if d["kind"] == "ConfigMap")
    settings = _settings_from(config["data"])
    gateway = next(
        d for d in docs if d["kind"] == "Deployment" and "gateway" in d["metadata"]["name"]
    )
    pod = gateway["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (c,) = pod["containers"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": settings.port, "grpc": settings.grpc_port}
    if overlay == "triton":
        assert settings.backend == "triton"
        host, port = settings.triton_url.split(":")
        service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == host)
        assert int(port) in [p["port"] for p in service["spec"]["ports"]]
        triton = next(
            d
            for d in docs
            if d["metadata"]["name"] == "polyhead-triton" and d["kind"] == "Deployment"
        )
        limits = triton["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == 1
    else:
        assert settings.backend == "onnxruntime"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles(dockerfile):
    text = dockerfile.read_text()
    assert re.search(r"^USER 10001", text, re.M), "runs as a fixed non-root user"
    assert "HEALTHCHECK" in text and "/v2/health/ready" in text
    assert re.search(r"^EXPOSE 8000 8001$", text, re.M)
    assert "pip install '.[serve]'" in text  # the README's serving install
    readme = (ROOT / "README.md").read_text()
    assert "'.[serve]'" in readme
    if dockerfile.name.endswith("gpu"):
        assert "pip uninstall -y onnxruntime" in text and "pip install '.[gpu]'" in text
    assert 'ENTRYPOINT ["polyhead", "serve"]' in text
    assert "torch" not in text.replace("No torch", "")
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().split()
    assert "**" in ignore and "!serving/" in ignore and "!model_repo/" in ignore
    for copied in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / copied).exists(), copied
