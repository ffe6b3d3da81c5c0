"""Gateway vs raw ONNX Runtime, side by side in one run, on the bundled model and a heavy one.

    python bench/gateway.py [--seconds 6] [--skip-heavy]

For each model: raw ``session.run`` throughput at batch 1..16 (best kept) and p50 latency at
batch 1, in process; then ``polyhead serve`` over loopback at concurrency 1, 8, 32, 64 with the
load generator in another process (it shares the two cores, as a real client on the box would).
Prints the ratios: gateway / raw throughput at saturation, and the p50 latency the gateway adds
at concurrency 1. The heavy model (ResNet-50, 256x256, random weights) is exported on the fly
(needs the train extra).
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
from tests.gateway import gateway_process  # noqa: E402

CONCURRENCY = (1, 8, 32, 64)
MODES = (
    ("all tasks decoded, float16 maps (default)", ""),
    ("all tasks decoded, PNG maps", "?encoding=png"),
    ("one image-level task", "?tasks=background"),
)


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


def gateway(repo: Path, name: str, image: Path, seconds: float, query: str) -> list[dict]:
    results = []
    with gateway_process(
        repo, reload_interval_s="0", max_queue_size="256", max_batch_size="16"
    ) as url:
        for c in CONCURRENCY:
            out = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "bench" / "loadgen.py"),
                    "--url",
                    f"{url}/v1/models/{name}/predict{query}",
                    "--image",
                    str(image),
                    "--concurrency",
                    str(c),
                    "--seconds",
                    str(seconds),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            results.append(json.loads(out.stdout))
    return results


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
    print(f"\n== {name} ({label}) ==")
    print(
        f"raw ONNX Runtime: {raw['throughput']:.1f} img/s at batch {raw['batch']} "
        f"(by batch {raw['by_batch']}), p50 {raw['p50_ms']:.2f} ms at batch 1"
    )
    print("concurrency  img/s   p50 ms  p90 ms  p99 ms  errors")
    for r in gw:
        print(
            f"{r['concurrency']:>11}  {r['throughput']:6.1f}  {r['p50_ms']:6.1f}  "
            f"{r['p90_ms']:6.1f}  {r['p99_ms']:6.1f}  {r['errors']}"
        )
    print(
        f"gateway/raw throughput at saturation: {sat['throughput'] / raw['throughput']:.2f}x "
        f"(concurrency {sat['concurrency']})"
    )
    print(f"added p50 latency at concurrency 1: {c1['p50_ms'] - raw['p50_ms']:+.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--skip-heavy", action="store_true")
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
            image = work / f"{name}.png"
            image.write_bytes(image_for(m))
            raw = raw_ort(version, args.seconds)
            for label, query in MODES:
                report(name, raw, gateway(repo, name, image, args.seconds, query), label)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
