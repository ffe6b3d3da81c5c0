"""The worst legal input on every route and encoding leaves the gateway alive and bounded.

See ``tests/worst_input.py``: a 117 KB PNG at the 40-megapixel limit. Every case answers 200
or 413 as its response fits the output budget or not; the process stays alive, answers a good
request afterwards, and its peak memory during each case stays under a fixed bound (the
figures themselves are printed by ``python bench/worst_input.py``).
"""

from __future__ import annotations

import httpx
import pytest

from tests.gateway import ROOT, free_port, gateway_server
from tests.worst_input import CASES, run

# one 40-megapixel image decoded per codec thread (2), plus the model and the interpreter
PEAK_BOUND_MB = 2048


@pytest.fixture(scope="module")
def gateway():
    grpc_port = free_port()
    with gateway_server(ROOT / "model_repo", grpc_port=str(grpc_port), reload_interval_s="0") as (
        url,
        proc,
    ):
        yield url, f"127.0.0.1:{grpc_port}", proc


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_worst_legal_input(gateway, case):
    url, grpc, proc = gateway
    status, _, peak = run(case, url, grpc, proc.pid)
    assert status in case.ok, case.name
    assert proc.poll() is None, "the gateway died"
    assert peak < PEAK_BOUND_MB, f"{case.name}: peak {peak:.0f} MiB"
    r = httpx.get(f"{url}/v2/health/ready", timeout=10)
    assert r.status_code == 200
