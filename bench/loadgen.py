"""Load generator, run as its own process: N concurrent clients send one request for a while.

HTTP: POST a file (an image for /v1, or a prepared KServe v2 body) with the given headers.
gRPC: ``--grpc HOST:PORT --model NAME --shape 1,3,H,W`` sends KServe v2 ModelInfer calls with a
random FP32 tensor in raw contents. Prints one JSON line: requests, errors, seconds, throughput
(requests/s; one image per request) and latency percentiles (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable

import httpx

Call = Callable[[], Awaitable[bool]]
kinds: dict[str, int] = {}  # transport errors by exception type, reported in the summary


async def drive(call: Call, concurrency: int, seconds: float, warmup: float) -> dict:
    """``concurrency`` workers repeat ``call`` (True = success) for ``warmup`` + ``seconds``."""
    latencies: list[float] = []
    errors = 0
    measure_from = time.perf_counter() + warmup
    stop_at = measure_from + seconds

    async def worker() -> None:
        nonlocal errors
        while (t0 := time.perf_counter()) < stop_at:
            ok = await call()
            t1 = time.perf_counter()
            if t0 >= measure_from:
                if ok:
                    latencies.append(t1 - t0)
                else:
                    errors += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return summary(latencies, errors, concurrency, seconds)


async def run_http(
    url: str, body: bytes, headers: dict[str, str], concurrency: int, seconds: float, warmup: float
) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def call() -> bool:
            try:
                r = await client.post(url, content=body, headers=headers)
            except httpx.HTTPError as e:  # refused or timed out: an error, not a crash
                kinds[type(e).__name__] = kinds.get(type(e).__name__, 0) + 1
                return False
            return r.status_code == 200

        return await drive(call, concurrency, seconds, warmup)


async def run_grpc(
    target: str, model: str, shape: list[int], concurrency: int, seconds: float, warmup: float
) -> dict:
    import grpc
    import numpy as np
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name="image", datatype="FP32", shape=shape)
    request.raw_input_contents.append(x.tobytes())
    options = [("grpc.max_receive_message_length", 1 << 30)]
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)

        async def call() -> bool:
            try:
                await stub.ModelInfer(request, timeout=60)
            except grpc.aio.AioRpcError:
                return False
            return True

        return await drive(call, concurrency, seconds, warmup)


def summary(latencies: list[float], errors: int, concurrency: int, seconds: float) -> dict:
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
        "transport_errors": dict(kinds),
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", help="HTTP: where to POST")
    p.add_argument("--body", help="HTTP: file to POST")
    p.add_argument("--header", action="append", default=[], help="HTTP: 'Name: value'")
    p.add_argument("--grpc", help="gRPC: host:port of a KServe v2 server")
    p.add_argument("--model", help="gRPC: model name")
    p.add_argument("--shape", help="gRPC: input shape, e.g. 1,3,128,128")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=1.0)
    a = p.parse_args()
    if a.grpc:
        shape = [int(d) for d in a.shape.split(",")]
        result = asyncio.run(run_grpc(a.grpc, a.model, shape, a.concurrency, a.seconds, a.warmup))
    else:
        with open(a.body, "rb") as f:
            data = f.read()
        headers = dict(h.split(": ", 1) for h in a.header) or {"content-type": "image/png"}
        result = asyncio.run(run_http(a.url, data, headers, a.concurrency, a.seconds, a.warmup))
    sys.stdout.write(json.dumps(result) + "\n")
