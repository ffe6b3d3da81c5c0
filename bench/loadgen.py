"""Load generator, run as its own process: N concurrent clients POST one image for a while.

Prints one JSON line: requests, errors, seconds, throughput (img/s) and latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time

import httpx


async def main(url: str, image: bytes, concurrency: int, seconds: float, warmup: float) -> dict:
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        start = time.perf_counter()
        measure_from = start + warmup
        stop_at = measure_from + seconds

        async def worker() -> None:
            nonlocal errors
            while True:
                t0 = time.perf_counter()
                if t0 >= stop_at:
                    return
                r = await client.post(url, content=image, headers={"content-type": "image/png"})
                t1 = time.perf_counter()
                if t0 >= measure_from:
                    if r.status_code == 200:
                        latencies.append(t1 - t0)
                    else:
                        errors += 1

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    lat = sorted(latencies)
    q = (
        statistics.quantiles(lat, n=100)
        if len(lat) >= 2
        else [lat[0] * 1] * 99
        if lat
        else [0.0] * 99
    )
    return {
        "concurrency": concurrency,
        "requests": len(lat),
        "errors": errors,
        "throughput": len(lat) / seconds,
        "p50_ms": q[49] * 1000,
        "p90_ms": q[89] * 1000,
        "p99_ms": q[98] * 1000,
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--image", required=True)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    a = p.parse_args()
    with open(a.image, "rb") as f:
        data = f.read()
    result = asyncio.run(main(a.url, data, a.concurrency, a.seconds, a.warmup))
    sys.stdout.write(json.dumps(result) + "\n")
