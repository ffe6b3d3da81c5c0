"""Gateway vs raw ONNX Runtime, side by side in one run, on the bundled model and a heavy one.

    python bench/gateway.py [--seconds 6] [--skip-heavy] [--skip-triton]

For each model: raw ``session.run`` throughput at batch 1..16 (best kept) and p50 latency at
batch 1, in process; then ``polyhead serve`` over loopback at concurrency 1, 8, 32, 64 with the
load generator in another process (it shares the two cores, as a real client on the box would):
/v1 with images (three modes), /v2 with a binary FP32 tensor over HTTP and over gRPC, and /v1 in
front of a real Triton (the nvidia-pytriton tritonserver of the tests, its Python backend running
the same ONNX with ONNX Runtime), batching in the gateway or in Triton; and Triton alone over
gRPC for reference. Prints the ratios: throughput / raw at saturation, and the p50 latency added
at concurrency 1. The heavy model (ResNet-50, 256x256, random weights) is exported on the fly
(needs the train extra); the Triton rows need ``make install-triton-test``.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from serving.manifest import Manifest  # noqa: E402
from tests.gateway import free_port, gateway_server  # noqa: E402

CONCURRENCY = (1, 8, 32, 64)
MODES = (
    ("/v1, all tasks decoded, float16 maps (default)", ""),
    ("/v1, all tasks decoded, PNG maps", "?encoding=png"),
    ("/v1, one image-level task", "?tasks=background"),
)
GATEWAY_ENV = {"reload_interval_s": "0", "max_queue_size": "256", "max_batch_size": "16"}


def raw_ort(version_dir: Path, seconds: float) -> dict:
    m = Manifest.load(version_dir / "manifest.json")
    backend = OnnxRuntimeBackend(version_dir / "model.onnx", ["CPUExecutionProvider"])
    shape = (m.input.channels, m.input.height, m.input.width)
    best = {"batch": 0, "throughput": 0.0}
    by_batch = {}
    for b in (1, 2, 4, 8, 16):
        x = np.random.default_rng(0).standard_normal((b, *shape)).astype(np.float32)
        backend.run({"image": x}, m.output_names)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds / 3:
            backend.run({"image": x}, m.output_names)
            n += b
        tput = n / (time.perf_counter() - t0)
        by_batch[b] = round(tput, 1)
        if tput > best["throughput"]:
            best = {"batch": b, "throughput": tput}
    x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
    lat = []
    for _ in range(max(20, int(seconds * 10))):
        t0 = time.perf_counter()
        backend.run({"image": x}, m.output_names)
        lat.append(time.perf_counter() - t0)
    return {**best, "by_batch": by_batch, "p50_ms": statistics.median(lat) * 1000}


def image_for(m: Manifest) -> bytes:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (m.input.height, m.input.width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def v2_body(m: Manifest, path: Path) -> int:
    """A KServe v2 request, JSON header + one FP32 image tensor in binary; returns header size."""
    shape = [1, m.input.channels, m.input.height, m.input.width]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": m.input.name,
                    "datatype": "FP32",
                    "shape": shape,
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    path.write_bytes(header + x.tobytes())
    return len(header)


def load(args: list[str], seconds: float) -> list[dict]:
    """The load generator at each concurrency."""
    results = []
    for c in CONCURRENCY:
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "bench" / "loadgen.py"),
                *args,
                "--concurrency",
                str(c),
                "--seconds",
                str(seconds),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise RuntimeError(f"load generator failed at concurrency {c}:\n{out.stderr}")
        results.append(json.loads(out.stdout))
    return results


def http_args(url: str, body: Path, headers: dict[str, str] | None = None) -> list[str]:
    args = ["--url", url, "--body", str(body)]
    for k, v in (headers or {"content-type": "image/png"}).items():
        args += ["--header", f"{k}: {v}"]
    return args


def grpc_args(target: str, m: Manifest) -> list[str]:
    shape = f"1,{m.input.channels},{m.input.height},{m.input.width}"
    return ["--grpc", target, "--model", m.name, "--shape", shape]


def runs(repo: Path, work: Path, m: Manifest, seconds: float, triton: bool):
    """(label, rows) of every way of serving ``m``."""
    image = work / f"{m.name}.png"
    image.write_bytes(image_for(m))
    body = work / f"{m.name}.v2"
    header_len = v2_body(m, body)
    grpc_port = free_port()
    with gateway_server(repo, grpc_port=str(grpc_port), **GATEWAY_ENV) as (url, _):
        for label, query in MODES:
            yield label, load(http_args(f"{url}/v1/models/{m.name}/predict{query}", image), seconds)
        v2 = {
            "content-type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_len),
        }
        yield (
            "/v2 HTTP, binary FP32 tensor in, raw outputs out",
            load(http_args(f"{url}/v2/models/{m.name}/infer", body, v2), seconds),
        )
        yield (
            "/v2 gRPC, raw FP32 tensor in, raw outputs out",
            load(grpc_args(f"127.0.0.1:{grpc_port}", m), seconds),
        )
    if not triton:
        return
    from tests.tritonserver import triton_server

    version = repo / m.name / str(m.version)
    # a repository with only this model: Triton serves only it, and the gateway must not wait
    # for the other models to appear on Triton
    alone = work / f"only-{m.name}"
    alone.mkdir(exist_ok=True)
    if not (alone / m.name).exists():
        (alone / m.name).symlink_to(repo / m.name, target_is_directory=True)
    with triton_server([version], ort_threads=0) as t:
        yield (
            "Triton alone, gRPC raw tensor (Python backend running ONNX Runtime)",
            load(grpc_args(t.grpc_url, m), seconds),
        )
        for batching in ("gateway", "triton"):
            env = {
                **GATEWAY_ENV,
                "backend": "triton",
                "triton_url": t.grpc_url,
                "triton_batching": batching,
            }
            with gateway_server(alone, **env) as (url, _):
                yield (
                    f"/v1 default, gateway -> Triton gRPC, batching in {batching}",
                    load(http_args(f"{url}/v1/models/{m.name}/predict", image), seconds),
                )


def heavy_model(repo: Path) -> None:
    """ResNet-50 + light FPN + the same six heads at 256x256, random weights."""
    from datetime import UTC, datetime

    import torch

    from serving.manifest import InputSpec, Provenance
    from training.data.synth import dataset_tasks
    from training.export import export_onnx, task_spec
    from training.models import ARCHITECTURES, build_backbone
    from training.publish import publish_version, staging_dir
    from training.tasks import build_task

    torch.manual_seed(0)
    tasks = [
        build_task(n, s["kind"], tuple(s["labels"]) if s.get("labels") else None)
        for n, s in dataset_tasks().items()
    ]
    model = ARCHITECTURES.get("hps")(
        build_backbone("resnet50", 64), tasks, neck_channels=128
    ).eval()
    staged = staging_dir(repo, "heavy")
    export_onnx(model, [t.name for t in tasks], (256, 256), staged / "model.onnx", 18)
    import hashlib

    sha = hashlib.sha256((staged / "model.onnx").read_bytes()).hexdigest()
    publish_version(
        repo,
        "heavy",
        staged,
        lambda v: Manifest(
            name="heavy",
            version=v,
            input=InputSpec(
                height=256, width=256, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
            ),
            tasks=[task_spec(t) for t in tasks],
            max_batch_size=16,
            provenance=Provenance(
                config={"bench": "random weights"},
                data={},
                created_at=datetime.now(UTC),
                onnx_sha256=sha,
                opset=18,
                exporter="torch.onnx (dynamo)",
                framework=f"torch {torch.__version__}",
                polyhead_version="bench",
            ),
        ),
    )


def report(name: str, raw: dict, gw: list[dict], label: str) -> None:
    sat = max(gw, key=lambda r: r["throughput"])
    c1 = next(r for r in gw if r["concurrency"] == 1)
    print(f"\n== {name}: {label} ==", flush=True)
    print(
        f"raw ONNX Runtime: {raw['throughput']:.1f} img/s at batch {raw['batch']} "
        f"(by batch {raw['by_batch']}), p50 {raw['p50_ms']:.2f} ms at batch 1"
    )
    print("concurrency  img/s   p50 ms  p90 ms  p99 ms  errors")
    for r in gw:
        print(
            f"{r['concurrency']:>11}  {r['throughput']:6.1f}  {r['p50_ms']:6.1f}  "
            f"{r['p90_ms']:6.1f}  {r['p99_ms']:6.1f}  {r['errors']} "
            f"{r.get('transport_errors') or ''}"
        )
    print(
        f"throughput / raw at saturation: {sat['throughput'] / raw['throughput']:.2f}x "
        f"(concurrency {sat['concurrency']})"
    )
    print(f"added p50 latency at concurrency 1: {c1['p50_ms'] - raw['p50_ms']:+.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--skip-heavy", action="store_true")
    p.add_argument("--skip-triton", action="store_true", help="no rows with the real Triton")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="polyhead-bench-"))
    try:
        repo = work / "repo"
        shutil.copytree(ROOT / "model_repo" / "scenes", repo / "scenes")
        models = ["scenes"]
        if not args.skip_heavy:
            heavy_model(repo)
            models.append("heavy")
        for name in models:
            version = max(
                (d for d in (repo / name).iterdir() if d.name.isdigit()), key=lambda d: int(d.name)
            )
            m = Manifest.load(version / "manifest.json")
            raw = raw_ort(version, args.seconds)
            for label, rows in runs(repo, work, m, args.seconds, not args.skip_triton):
                report(name, raw, rows, label)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
