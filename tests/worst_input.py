"""The worst legal input on every route and encoding: a tiny PNG at the pixel limit.

A black 8000x5000 PNG (40 megapixels, the default limit; 117 KB on the wire) costs little to
send and a lot to decode, and at the image's resolution its maps would be hundreds of MB.
Each case says what it sends and which statuses are right: 200 where the response fits the
output budget, 413 where it would not. ``run`` sends one case to a gateway and measures the
time and the gateway's peak memory during it (Linux: ``/proc/PID/clear_refs`` resets the peak).
"""

from __future__ import annotations

import base64
import io
import json
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

PIXEL_LIMIT = (8000, 5000)


@cache
def worst_png() -> bytes:
    """A black PNG exactly at the default pixel limit."""
    buf = io.BytesIO()
    Image.new("RGB", PIXEL_LIMIT).save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


@dataclass(frozen=True)
class Case:
    """One request: what it is, how it is sent, which statuses are right."""

    name: str
    send: Callable[[str, str], int]  # (http base URL, gRPC target) -> status
    ok: tuple[int, ...]


def _v1(query: str, images: int = 1) -> Callable[[str, str], int]:
    def send(url: str, grpc: str) -> int:
        files = [("files", (f"{i}.png", worst_png(), "image/png")) for i in range(images)]
        r = httpx.post(f"{url}/v1/models/scenes/predict{query}", files=files, timeout=300)
        return r.status_code

    return send


def _v2_http(outputs: list[str], binary: bool, params: dict) -> Callable[[str, str], int]:
    def send(url: str, grpc: str) -> int:
        data = worst_png()
        head = {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [1],
                    "parameters": {"binary_data_size": len(data) + 4},
                }
            ],
            "outputs": [{"name": n, "parameters": {"binary_data": binary}} for n in outputs],
            "parameters": params,
        }
        header = json.dumps(head).encode()
        body = header + struct.pack("<I", len(data)) + data
        r = httpx.post(
            f"{url}/v2/models/scenes/infer",
            content=body,
            headers={
                "Inference-Header-Content-Length": str(len(header)),
                "content-type": "application/octet-stream",
            },
            timeout=300,
        )
        return r.status_code

    return send


def _v2_grpc(outputs: list[str], params: dict) -> Callable[[str, str], int]:
    def send(url: str, grpc: str) -> int:
        import grpc as grpclib
        from tritonclient.grpc import service_pb2 as pb
        from tritonclient.grpc import service_pb2_grpc as pb_grpc

        req = pb.ModelInferRequest(model_name="scenes")
        req.inputs.add(name="image_bytes", datatype="BYTES", shape=[1])
        data = worst_png()
        req.raw_input_contents.append(struct.pack("<I", len(data)) + data)
        for n in outputs:
            req.outputs.add(name=n)
        for k, v in params.items():
            req.parameters[k].string_param = v
        options = [("grpc.max_receive_message_length", 1 << 30)]
        with grpclib.insecure_channel(grpc, options=options) as channel:
            try:
                pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=300)
            except grpclib.RpcError as e:
                return {"RESOURCE_EXHAUSTED": 413, "INVALID_ARGUMENT": 400}.get(e.code().name, 500)
        return 200

    return send


def _v2_json_base64(outputs: list[str], params: dict) -> Callable[[str, str], int]:
    """Pure JSON: the image as base64 text (input parameter content_type=base64)."""

    def send(url: str, grpc: str) -> int:
        body = {
            "inputs": [
                {
                    "name": "image_bytes",
                    "datatype": "BYTES",
                    "shape": [1, 1],
                    "parameters": {"content_type": "base64"},
                    "data": [base64.b64encode(worst_png()).decode()],
                }
            ],
            "outputs": [{"name": n} for n in outputs],
            "parameters": params,
        }
        r = httpx.post(f"{url}/v2/models/scenes/infer", json=body, timeout=300)
        return r.status_code

    return send


def _v2_tensor_json(rows: int) -> Callable[[str, str], int]:
    """The most rows of FP32 tensor a request may carry, every raw output back as JSON."""

    def send(url: str, grpc: str) -> int:
        x = np.zeros((rows, 3, 128, 128), np.float32)
        head = {
            "inputs": [
                {
                    "name": "image",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": False},
        }
        header = json.dumps(head).encode()
        r = httpx.post(
            f"{url}/v2/models/scenes/infer",
            content=header + x.tobytes(),
            headers={"Inference-Header-Content-Length": str(len(header))},
            timeout=300,
        )
        return r.status_code

    return send


DENSE_JSON = ["semseg.json", "depth.json", "normals.json", "edges.json"]
DENSE = ["semseg.classes", "depth.depth", "normals.normals", "edges.probability"]
ORIGINAL = {"resolution": "original"}

CASES = [
    Case("/v1 default (model grid, float16)", _v1(""), (200,)),
    Case("/v1 8 images in one request", _v1("", images=8), (200,)),
    Case("/v1 resolution=original float16", _v1("?resolution=original"), (413,)),
    Case("/v1 resolution=original png", _v1("?resolution=original&encoding=png"), (413,)),
    Case("/v1 resolution=original json", _v1("?resolution=original&encoding=json"), (413,)),
    Case("/v1 max_side=4096 float16", _v1("?max_side=4096"), (413,)),
    Case(
        "/v1 segmentation only, resolution=original",
        _v1("?tasks=semseg&resolution=original"),
        (200,),
    ),
    Case(
        "v2 HTTP JSON, dense TASK.json at original", _v2_http(DENSE_JSON, False, ORIGINAL), (413,)
    ),
    Case("v2 HTTP JSON, dense tensors at original", _v2_http(DENSE, False, ORIGINAL), (413,)),
    Case("v2 HTTP binary, dense tensors at original", _v2_http(DENSE, True, ORIGINAL), (413,)),
    Case("v2 HTTP binary, class map at original", _v2_http(DENSE[:1], True, ORIGINAL), (200,)),
    Case("v2 HTTP JSON, dense tensors (model grid)", _v2_http(DENSE, False, {}), (200,)),
    Case("v2 gRPC, dense tensors at original", _v2_grpc(DENSE, ORIGINAL), (413,)),
    Case("v2 gRPC, class map at original", _v2_grpc(DENSE[:1], ORIGINAL), (200,)),
    Case("v2 gRPC, dense TASK.json (model grid)", _v2_grpc(DENSE_JSON, {}), (200,)),
    Case(
        "v2 pure JSON (base64 image), dense TASK.json at original",
        _v2_json_base64(DENSE_JSON, ORIGINAL),
        (413,),
    ),
    Case("v2 pure JSON (base64 image), every raw output", _v2_json_base64([], {}), (200,)),
    Case("v2 HTTP, 64 FP32 rows, raw outputs as JSON", _v2_tensor_json(64), (413,)),
    Case("v2 HTTP, 8 FP32 rows, raw outputs as JSON", _v2_tensor_json(8), (200,)),
]


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory since the last reset, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def reset_peak(pid: int) -> None:
    """Start measuring the peak anew (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


def run(case: Case, url: str, grpc: str, pid: int) -> tuple[int, float, float]:
    """(status, seconds, peak MiB of the gateway) of one case."""
    reset_peak(pid)
    started = time.perf_counter()
    status = case.send(url, grpc)
    return status, time.perf_counter() - started, peak_rss_mb(pid)
