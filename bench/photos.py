"""Real-photo inputs: gateway, batch scoring and a Triton peer against raw ONNX Runtime, one run.

    python bench/photos.py [--seconds 6] [--quick] [--skip-triton] [--skip-dense] [--loadgen]

Every row is measured in this run; its ratio is to the same model's raw ONNX Runtime throughput
at its best batch (1..16, in process: ``OnnxRuntimeBackend.run`` of the raw task outputs over
already-normalised tensors). Models: the bundled ``scenes`` (128x128) and ``nyud``, a dense
NYUD-like model exported on the fly (40-class segmentation, depth, normals, edges; ResNet-18 at
width 32, 480x640 stretched, random weights), with its decoded outputs appended to the graph by
``training.graph_decoding`` when that works, else raw only (the output says which). Inputs:
generated photo-like JPEGs (quality 90) from 640x480 to 4032x3024, and a PNG at model size.

- gateway /v1: ``polyhead serve`` as ``make serve`` starts it (defaults, hot reload off), raw
  image bodies, default options and ``resolution=original``;
- gateway /v2: ``image_bytes`` (binary BYTES) in, every decoded output out in binary;
- Triton peer: a real tritonserver (``.venv-triton``) whose Python backend
  (``bench/triton_photo_model.py``) does the same job: decode, stretch, normalise, ONNX Runtime,
  decoded outputs at the model grid; same request body as the /v2 rows;
- ``polyhead score`` over folders of JPEG photos, in process, default options.

Load: ``hey`` (else, or with ``--loadgen``, ``bench/loadgen.py``) at concurrency 8 for img/s
(200 responses only) and 1 for p50; compression off (Triton gzips for hey's default
Accept-Encoding, the gateway never does). A row whose probe request fails (e.g. 413: the
response would exceed the output budget) is not loaded; its status is the row's error.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway import raw_ort  # noqa: E402
from serving.kinds import get_kind  # noqa: E402
from serving.manifest import Manifest  # noqa: E402
from serving.manifest import triton_config as tc  # noqa: E402
from serving.scoring import ScoreJob, score  # noqa: E402
from tests.gateway import free_port, gateway_server  # noqa: E402

HEY = Path("/usr/bin/hey")
PHOTO_SIZES = ((640, 480), (1280, 720), (1920, 1080), (4032, 3024))
PEER_SIZES = ((640, 480), (1920, 1080))  # JPEGs of the Triton and /v2 rows (and the PNG)
PEER_OPTS = "decoded outputs, binary"
DENSE = "nyud"
Input = tuple[str, Path, str, bool]  # label, file, content type, in the Triton and /v2 rows
Row = tuple[str, str, str]  # route, input, options
rows: list[dict] = []
run = {"seconds": 6.0, "hey": HEY.exists()}  # set by main


# ---- inputs ----------------------------------------------------------------------------------


def photo(w: int, h: int, seed: int) -> Image.Image:
    """Photo-like content: smooth gradient and blobs, blurred shapes, texture, sensor noise."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    sky = rng.uniform(30, 220, 3) * (1 - t) + rng.uniform(30, 220, 3) * t
    blobs = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
    blobs = np.asarray(blobs.resize((w, h), Image.Resampling.BICUBIC))
    canvas = Image.fromarray(np.clip(0.7 * sky + 0.3 * blobs, 0, 255).astype(np.uint8))
    draw, s = ImageDraw.Draw(canvas), min(w, h)
    for _ in range(int(rng.integers(8, 16))):
        x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.25) * s
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        shape = int(rng.integers(0, 3))
        if shape == 0:
            draw.ellipse([x - r, y - r * rng.uniform(0.5, 1), x + r, y + r], fill=fill)
        elif shape == 1:
            draw.rectangle([x - r, y - r, x + r * rng.uniform(0.5, 2), y + r], fill=fill)
        else:
            a = np.sort(rng.uniform(0, 2 * np.pi, 5))
            draw.polygon([(x + r * np.cos(q), y + r * np.sin(q)) for q in a], fill=fill)
    px = np.asarray(canvas.filter(ImageFilter.GaussianBlur(max(1.0, s / 400))), np.float32)
    grain = Image.fromarray(rng.integers(0, 255, (h // 8, w // 8), dtype=np.uint8))
    texture = np.asarray(grain.resize((w, h), Image.Resampling.BILINEAR), np.float32)
    px = px * (0.85 + 0.3 * texture[..., None] / 255)
    px += rng.standard_normal((h, w, 1), dtype=np.float32) * 4.0
    return Image.fromarray(np.clip(px, 0, 255).astype(np.uint8))


def encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def inputs_for(m: Manifest, work: Path) -> list[Input]:
    """The model-size PNG, then the JPEG photos (written once, shared by the models)."""
    w, h = m.input.width, m.input.height
    png = work / f"{m.name}-{w}x{h}.png"
    png.write_bytes(encoded(photo(w, h, 7), "PNG"))
    out = [(f"PNG {w}x{h} (model size)", png, "image/png", True)]
    for w, h in PHOTO_SIZES:
        jpg = work / f"photo-{w}x{h}.jpg"
        if not jpg.exists():
            jpg.write_bytes(encoded(photo(w, h, w), "JPEG"))
        label = f"JPEG {w}x{h} {jpg.stat().st_size // 1000} KB"
        out.append((label, jpg, "image/jpeg", (w, h) in PEER_SIZES))
    return out


# ---- the dense model -------------------------------------------------------------------------


def dense_model(repo: Path) -> str:
    """Export ``nyud`` (random weights) into ``repo``; returns how its outputs are decoded."""
    from datetime import UTC, datetime
    from hashlib import sha256

    import torch

    from serving.manifest import InputSpec, Provenance
    from training.data.nyud import NYUD_CLASSES
    from training.export import export_onnx, task_spec
    from training.models import ARCHITECTURES, build_backbone
    from training.publish import publish_version, staging_dir
    from training.tasks import build_task

    logging.getLogger("torch").setLevel(logging.ERROR)
    torch.manual_seed(0)
    tasks = [build_task("semseg", "segmentation", NYUD_CLASSES)]
    tasks += [build_task(k, k) for k in ("depth", "normals", "edges")]
    model = ARCHITECTURES.get("hps")(build_backbone("resnet18", 32), tasks, neck_channels=64)
    staged = staging_dir(repo, DENSE)
    path = staged / "model.onnx"
    export_onnx(model.eval(), [t.name for t in tasks], (480, 640), path, 18)
    specs = [task_spec(t) for t in tasks]
    try:
        import onnx

        from training.graph_decoding import append_decoded_outputs

        proto, specs = append_decoded_outputs(onnx.load(str(path)), specs)
        onnx.save(proto, str(path))
        note = "decoded outputs in the graph (training.graph_decoding)"
    except Exception as e:  # being written in parallel: measure without it rather than fail
        note = f"RAW OUTPUTS ONLY, graph decoding failed ({type(e).__name__}: {e})"
    provenance = Provenance(
        config={"bench": "random weights"},
        data={},
        created_at=datetime.now(UTC),
        onnx_sha256=sha256(path.read_bytes()).hexdigest(),
        opset=18,
        exporter="torch.onnx (dynamo)",
        framework=f"torch {torch.__version__}",
        polyhead_version="bench",
    )
    spec = InputSpec(height=480, width=640, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    manifest = {"name": DENSE, "input": spec, "tasks": specs, "provenance": provenance}
    publish_version(repo, DENSE, staged, lambda v: Manifest(version=v, **manifest))
    return note


def decoded_outputs(m: Manifest) -> list[dict]:
    """Every task's decoded tensors (``TASK.TENSOR``): raw output, ops, dtype, row shape."""
    return [
        {"name": f"{t.name}.{d.name}", "raw": t.output, "ops": list(d.ops), "dtype": d.dtype}
        | {"shape": list(d.row_shape(m.output_shape(t.name)))}
        for t in m.tasks
        for d in get_kind(t.kind).decoded
    ]


# ---- load and rows ---------------------------------------------------------------------------


def parse_hey(text: str) -> dict:
    """img/s (200 responses only), p50 and errors from hey's summary."""
    total = re.search(r"Total:\s+([\d.]+) secs", text)
    status, _, transport = text.partition("Error distribution:")
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", status)}
    p50 = re.search(r"50%+ in ([\d.]+) secs", status)
    ok = codes.pop(200, 0)
    errors = sum(codes.values()) + sum(int(n) for n in re.findall(r"\[(\d+)\]", transport))
    return {
        "ips": ok / float(total.group(1)) if total and ok else 0.0,
        "p50_ms": float(p50.group(1)) * 1000 if p50 else float("nan"),
        "errors": errors,
        "codes": codes,
    }


def drive(url: str, body: Path, headers: dict[str, str], c: int) -> dict:
    """``c`` concurrent clients POST ``body`` for the run's seconds."""
    seconds = run["seconds"]
    if run["hey"]:
        cmd = [str(HEY), "-z", f"{seconds}s", "-c", str(c), "-t", "120", "-m", "POST"]
        cmd += ["-disable-compression", "-D", str(body), "-T", headers["content-type"]]
        for k, v in headers.items():
            cmd += [] if k == "content-type" else ["-H", f"{k}: {v}"]
        return parse_hey(subprocess.run([*cmd, url], capture_output=True, text=True).stdout)
    args = ["--url", url, "--body", str(body), "--concurrency", str(c), "--seconds", str(seconds)]
    for k, v in headers.items():
        args += ["--header", f"{k}: {v}"]
    loadgen = ROOT / "bench" / "loadgen.py"
    out = subprocess.run([sys.executable, str(loadgen), *args], capture_output=True, text=True)
    r = json.loads(out.stdout)
    return {"ips": r["throughput"], "p50_ms": r["p50_ms"], "errors": r["errors"], "codes": {}}


def add(model: str, what: Row, ips: float, raw: float, **more) -> None:
    """Record and print one row; ``what`` is (route, input, options)."""
    route, inp, opts = what
    row = {"model": model, "route": route, "input": inp, "options": opts, "ips": ips}
    row |= {"ratio": ips / raw, "p50": "-", "bytes": "-", "errors": "0", **more}
    rows.append(row)
    print(
        f"{model:<6} {route:<28} {inp:<24} {opts:<23} {ips:7.1f} img/s {row['ratio']:5.2f}x  "
        f"p50 {row['p50']:>6} ms  {row['bytes']:>9} B/resp  errors {row['errors']}",
        flush=True,
    )


def http_row(m: Manifest, raw: float, what: Row, url: str, body: Path, headers: dict) -> None:
    """Probe once (warm-up, response size), then load at concurrency 8 (img/s) and 1 (p50)."""
    probe = {**headers, "accept-encoding": "identity"}
    r = httpx.post(url, content=body.read_bytes(), headers=probe, timeout=300)
    if r.status_code != 200:
        add(m.name, what, 0.0, raw, errors=f"HTTP {r.status_code}, not loaded")
        print(f"       HTTP {r.status_code}: {r.text[:200]}", flush=True)
        return
    hi, lo = drive(url, body, headers, 8), drive(url, body, headers, 1)
    codes = {k: hi["codes"].get(k, 0) + lo["codes"].get(k, 0) for k in {*hi["codes"], *lo["codes"]}}
    errors = str(hi["errors"] + lo["errors"]) + (f" {codes}" if codes else "")
    p50 = f"{lo['p50_ms']:.1f}"
    add(m.name, what, hi["ips"], raw, p50=p50, bytes=len(r.content), errors=errors)


def v2_body(image: bytes, outputs: list[str], path: Path) -> dict[str, str]:
    """A v2 request: JSON header, then one BYTES element (4-byte length + bytes); its headers."""
    blob = struct.pack("<I", len(image)) + image
    inp = {"name": "image_bytes", "datatype": "BYTES", "shape": [1, 1]}
    inp["parameters"] = {"binary_data_size": len(blob)}
    wanted = [{"name": n, "parameters": {"binary_data": True}} for n in outputs]
    header = json.dumps({"inputs": [inp], "outputs": wanted}).encode()
    path.write_bytes(header + blob)
    ctype = "application/octet-stream"
    return {"content-type": ctype, "Inference-Header-Content-Length": str(len(header))}


def peer_rows(route: str, base: str, m: Manifest, raw: float, inputs: list[Input]) -> None:
    """The Triton-peer or gateway /v2 rows: every decoded output in binary, model-grid maps."""
    names = [o["name"] for o in decoded_outputs(m)]
    for label, path, _, peer in inputs:
        if peer:
            body = path.with_name(f"{m.name}-{path.stem}.v2")
            headers = v2_body(path.read_bytes(), names, body)
            url = f"{base}/v2/models/{m.name}/infer"
            http_row(m, raw, (route, label, PEER_OPTS), url, body, headers)


# ---- the runs --------------------------------------------------------------------------------


def gateway_rows(repo: Path, models: dict[str, tuple[Manifest, float, list[Input]]]) -> None:
    with gateway_server(repo, reload_interval_s="0") as (url, _):
        for m, raw, inputs in models.values():
            for label, path, ctype, _ in inputs:
                for opts in ("default", "resolution=original"):
                    query = "" if opts == "default" else f"?{opts}"
                    target = f"{url}/v1/models/{m.name}/predict{query}"
                    headers = {"content-type": ctype}
                    http_row(m, raw, ("gateway /v1 raw body", label, opts), target, path, headers)
            peer_rows("gateway /v2 image_bytes", url, m, raw, inputs)


def triton_repo(versions: list[Path], dest: Path) -> None:
    """A Python-backend repository doing the gateway's job with ``triton_photo_model.py``."""
    for vd in versions:
        m = Manifest.load(vd / "manifest.json")
        outs = decoded_outputs(m)
        base = tc.config_from_manifest(m, instance_kind="KIND_CPU", warmup=False)
        config = replace(
            base,
            inputs=(tc.TensorConfig("image_bytes", "TYPE_STRING", (1,)),),
            outputs=tuple(
                tc.TensorConfig(o["name"], tc.TRITON_DTYPES[o["dtype"]], tuple(o["shape"]))
                for o in outs
            ),
        )
        text = tc.to_pbtxt(config).replace(f'platform: "{base.platform}"', 'backend: "python"')
        version = dest / m.name / str(m.version)
        version.mkdir(parents=True)
        (dest / m.name / "config.pbtxt").write_text(text)
        shutil.copy(ROOT / "bench" / "triton_photo_model.py", version / "model.py")
        shutil.copy(vd / "model.onnx", version / "model.onnx")
        i = m.input
        spec = {"height": i.height, "width": i.width, "scale": i.scale, "mean": i.mean}
        (version / "photo.json").write_text(json.dumps({**spec, "std": i.std, "outputs": outs}))


def triton_rows(work: Path, models: dict, versions: list[Path]) -> None:
    from tests.tritonserver import Triton

    triton_repo(versions, work / "triton-repo")
    t = Triton(work / "triton-repo", work, free_port(), free_port(), free_port(), ort_threads=0)
    try:
        t.start(timeout=180)
    except (RuntimeError, TimeoutError, OSError) as e:
        print(f"\nTriton rows skipped: {str(e).splitlines()[0]}", flush=True)
        t.stop()
        return
    try:
        for m, raw, inputs in models.values():
            peer_rows("Triton peer (Python backend)", f"http://{t.http_url}", m, raw, inputs)
    finally:
        t.stop()


def scoring_rows(repo: Path, work: Path, models: dict, counts: dict) -> None:
    for (w, h), n in counts.items():
        folder = work / f"score-{w}x{h}"
        folder.mkdir()
        for i in range(n):
            (folder / f"p{i:05d}.jpg").write_bytes(encoded(photo(w, h, 1000 + i), "JPEG"))
        for m, raw, _ in models.values():
            out = work / f"score-out-{m.name}-{w}x{h}"
            with open(os.devnull, "w") as devnull:
                job = ScoreJob(repo=repo, model=m.name, source=str(folder), output=out)
                summary = score(job, progress_stream=devnull)
            written = sum(f.stat().st_size for f in out.rglob("*.parquet"))
            more = {"bytes": f"{written // max(1, summary['scored'])} parquet"}
            what = ("polyhead score (batch 16)", f"{n} JPEG {w}x{h}", "default")
            ips = summary["images_per_second_this_run"]
            add(m.name, what, ips, raw, errors=str(summary["errors"]), **more)
            shutil.rmtree(out)


def table(raws: dict[str, float]) -> None:
    """Every row; ratios to ``raws``: each model's raw throughput, the mean of before and after."""
    order = list(dict.fromkeys(r["model"] for r in rows))
    for r in rows:
        r["ratio"] = r["ips"] / raws[r["model"]]
    print(
        "\n| model | route | input | options | img/s | ratio to raw | p50 ms (c=1) "
        "| bytes/response | errors |\n|---|---|---|---|---:|---:|---:|---:|---|"
    )
    for r in sorted(rows, key=lambda r: order.index(r["model"])):
        print(
            f"| {r['model']} | {r['route']} | {r['input']} | {r['options']} | {r['ips']:.1f} "
            f"| {r['ratio']:.2f}x | {r['p50']} | {r['bytes']} | {r['errors']} |"
        )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=6.0, help="per load run and raw batch size")
    p.add_argument("--quick", action="store_true", help="1.5 s runs, few scoring images")
    p.add_argument("--skip-triton", action="store_true", help="no rows with the real Triton")
    p.add_argument("--skip-dense", action="store_true", help="only the bundled model")
    p.add_argument("--loadgen", action="store_true", help="bench/loadgen.py even if hey exists")
    args = p.parse_args()
    run["seconds"] = 1.5 if args.quick else args.seconds
    run["hey"] = run["hey"] and not args.loadgen
    counts = {(640, 480): 300, (1920, 1080): 100}  # photos scored
    if args.quick:
        counts = {(640, 480): 24, (1920, 1080): 8}
    started = time.perf_counter()
    tool = "hey" if run["hey"] else "bench/loadgen.py"
    print(f"load: {tool}, {run['seconds']:g} s per run; {os.cpu_count()} cores", flush=True)
    work = Path(tempfile.mkdtemp(prefix="polyhead-photos-"))
    try:
        repo = work / "repo"
        shutil.copytree(ROOT / "model_repo" / "scenes", repo / "scenes")
        names = ["scenes"]
        if not args.skip_dense:
            t0 = time.perf_counter()
            try:
                note = dense_model(repo)
                names.append(DENSE)
            except Exception as e:  # training is being edited in parallel too
                note = f"NOT BENCHMARKED, export failed: {type(e).__name__}: {e}"
                shutil.rmtree(repo / DENSE, ignore_errors=True)
            print(f"{DENSE}: {time.perf_counter() - t0:.0f} s to export; {note}", flush=True)
        models, versions = {}, [repo / n / "1" for n in names]  # a fresh repo: version 1 each
        for version in versions:
            m = Manifest.load(version / "manifest.json")
            raw = raw_ort(version, run["seconds"])
            models[m.name] = (m, raw["throughput"], inputs_for(m, work))
            what = ("raw ONNX Runtime", "normalised tensor", f"best batch {raw['batch']}")
            add(m.name, what, raw["throughput"], raw["throughput"], p50=f"{raw['p50_ms']:.1f}")
            print(f"       by batch: {raw['by_batch']}", flush=True)
        gateway_rows(repo, models)
        if args.skip_triton:
            print("\nTriton rows skipped (--skip-triton)", flush=True)
        else:
            triton_rows(work, models, versions)
        scoring_rows(repo, work, models, counts)
        # the machine's speed drifts over a long run: measure raw again, ratios to the mean
        raws = {}
        for version in versions:
            m = models[version.parent.name][0]
            before = models[m.name][1]
            after = raw_ort(version, run["seconds"])["throughput"]
            raws[m.name] = (before + after) / 2
            print(f"{m.name}: raw {before:.1f} img/s before, {after:.1f} after", flush=True)
        table(raws)
        print(f"\ntotal {time.perf_counter() - started:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
