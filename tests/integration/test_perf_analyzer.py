"""Triton's perf_analyzer, unmodified, against the gateway over HTTP and gRPC.

perf_analyzer builds its requests from the model's metadata and config alone: with its default
(random) input generation it fills every input the metadata lists, both ``image`` (random bits,
NaN and infinities among them) and ``image_bytes`` (random strings), so it only runs when the
shapes follow Triton's batching conventions and both inputs are optional. With ``--input-data``
it sends only the inputs the file gives, here one encoded image, which only works when the
config marks ``image`` optional. The binary is the one in the tritonclient 2.51.0 wheel
(``make install-perf-analyzer-test``; PyPI's perf-analyzer wheel needs a newer glibc).
Measurements use fixed request counts so a run is short; its figures are not asserted.
"""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.gateway import ROOT, free_port, gateway_server
from tests.images import encode, scene_image

PERF_VENV = Path(os.environ.get("POLYHEAD_TEST_PERF_VENV", ROOT / ".venv-perf"))
PERF_ANALYZER = PERF_VENV / "bin" / "perf_analyzer"
# short, bounded runs: a fixed number of requests per measurement, and any spread between
# windows accepted as stable (the figures are not asserted; a loaded machine varies by 2x)
BOUNDED = [
    "--measurement-mode",
    "count_windows",
    "--measurement-request-count",
    "40",
    "--stability-percentage",
    "100000",
    "--max-trials",
    "3",
]


@pytest.fixture(scope="module")
def server():
    if not PERF_ANALYZER.exists():
        raise RuntimeError(f"no {PERF_ANALYZER}: run `make install-perf-analyzer-test`")
    grpc_port = free_port()
    with gateway_server(ROOT / "model_repo", grpc_port=str(grpc_port), reload_interval_s="0") as (
        url,
        _,
    ):
        yield url, f"127.0.0.1:{grpc_port}"


def _run(args: list[str]) -> str:
    lib = next(PERF_VENV.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib"))
    env = {**os.environ, "LD_LIBRARY_PATH": str(lib)}
    proc = subprocess.run(
        [str(PERF_ANALYZER), "-m", "scenes", *args, *BOUNDED],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    return out


def _successes(url: str) -> int:
    stats = httpx.get(f"{url}/v2/models/scenes/stats").json()["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def _throughput(out: str) -> float:
    match = re.search(r"throughput: ([0-9.]+) infer/sec", out)
    assert match, out
    return float(match.group(1))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_default_input_generation(server, protocol):
    """Random data for every input, batch 1 and 4: it runs, the gateway counts each request."""
    url, grpc_target = server
    target = url.removeprefix("http://") if protocol == "http" else grpc_target
    for batch in ("1", "4"):
        before = _successes(url)
        out = _run(["-u", target, "-i", protocol, "-b", batch])
        assert _throughput(out) > 0
        served = int(re.search(r"Successful request count: (\d+)", out).group(1))  # type: ignore[union-attr]
        assert served > 0
        assert _successes(url) - before >= served, out


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_encoded_image_from_input_data(server, protocol, tmp_path):
    """Only image_bytes, from an --input-data file: image is optional, so it is left out."""
    url, grpc_target = server
    target = url.removeprefix("http://") if protocol == "http" else grpc_target
    jpeg = encode(scene_image(3, (160, 120)), "JPEG")
    framed = struct.pack("<I", len(jpeg)) + jpeg  # perf_analyzer's b64 BYTES are length-framed
    data = {"data": [{"image_bytes": {"b64": base64.b64encode(framed).decode(), "shape": [1]}}]}
    path = tmp_path / "image.json"
    path.write_text(json.dumps(data))
    before = _successes(url)
    out = _run(["-u", target, "-i", protocol, "--input-data", str(path)])
    assert _throughput(out) > 0
    assert _successes(url) > before
