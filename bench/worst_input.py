"""The worst legal input on every route and encoding: status, time and the gateway's peak memory.

    python bench/worst_input.py

Starts ``polyhead serve`` on the bundled model (HTTP and gRPC on loopback) and sends each case
of ``tests/worst_input.py`` once: a 117 KB PNG of 8000x5000 pixels (the default limit).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.gateway import free_port, gateway_server  # noqa: E402
from tests.worst_input import CASES, peak_rss_mb, run, worst_png  # noqa: E402


def main() -> None:
    grpc_port = free_port()
    print(f"input: PNG {len(worst_png())} bytes, 8000x5000 pixels")
    with gateway_server(ROOT / "model_repo", grpc_port=str(grpc_port), reload_interval_s="0") as (
        url,
        proc,
    ):
        idle = peak_rss_mb(proc.pid)
        print(f"gateway resident after start: {idle:.0f} MiB\n")
        print("| case | status | seconds | peak MiB |")
        print("|---|---|---|---|")
        for case in CASES:
            status, seconds, peak = run(case, url, f"127.0.0.1:{grpc_port}", proc.pid)
            alive = "" if proc.poll() is None else " (DIED)"
            print(f"| {case.name} | {status}{alive} | {seconds:.2f} | {peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
