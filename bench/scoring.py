"""Batch scoring vs raw ONNX Runtime at the same batch size, side by side in one run.

    python bench/scoring.py [--images 2000] [--batch-size 16] [--heavy 0]

Writes a folder of generated scene images (PNG and JPEG, five sizes), then measures:
raw ONNX Runtime over the same images already decoded and pre-processed in memory (decode
excluded), batches of B; and ``polyhead score`` over the folder (reading, decoding, inference,
decoding every task, Parquet shards with fsync), in process, in several modes. Prints images/s
and the ratio scoring / raw. ``--heavy N`` adds the ResNet-50 256x256 model (random weights,
exported on the fly; needs the train extra) on the first N images.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.backends.onnxruntime import OnnxRuntimeBackend  # noqa: E402
from serving.manifest import Manifest  # noqa: E402
from serving.scoring import ScoreJob, ScoreOptions, list_inputs, score  # noqa: E402
from serving.service import RequestLimits, prepare_image  # noqa: E402

MODES = (
    ("all tasks, float16 maps (default)", ScoreOptions()),
    ("all tasks, PNG maps", ScoreOptions(encoding="png")),
    ("image-level tasks only", ScoreOptions(tasks=("shapes", "background"))),
)


def raw_ort(version_dir: Path, paths: list[str], batch_size: int) -> float:
    """img/s of session.run over pre-decoded inputs, batches of ``batch_size``."""
    m = Manifest.load(version_dir / "manifest.json")
    backend = OnnxRuntimeBackend(version_dir / "model.onnx", ["CPUExecutionProvider"])
    limits = RequestLimits()
    xs = []
    for p in paths:
        try:
            xs.append(prepare_image(Path(p).read_bytes(), m.input, limits)[0])
        except Exception:  # corrupt files have no model input
            continue
    batches = [np.stack(xs[i : i + batch_size]) for i in range(0, len(xs), batch_size)]
    backend.run({m.input.name: batches[0]}, m.output_names)  # warm
    t0 = time.perf_counter()
    for b in batches:
        backend.run({m.input.name: b}, m.output_names)
    return len(xs) / (time.perf_counter() - t0)


def scored(repo: Path, model: str, source: str, out: Path, options: ScoreOptions, b: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    summary = score(
        ScoreJob(repo=repo, model=model, source=source, output=out, options=options, batch_size=b),
        progress_stream=open("/dev/null", "w"),  # noqa: SIM115 - closed at exit
    )
    return summary["images_per_second_this_run"]


def bench_model(repo: Path, model: str, source: str, work: Path, n: int, b: int) -> None:
    version = max(
        (d for d in (repo / model).iterdir() if d.name.isdigit()), key=lambda d: int(d.name)
    )
    paths = list_inputs(source).paths[:n]
    listing = work / f"{model}.txt"
    listing.write_text("\n".join(paths))
    raw = raw_ort(version, paths, b)
    print(f"\n== {model}: {len(paths)} images, batch {b} ==", flush=True)
    print(f"raw ONNX Runtime (decode excluded): {raw:7.1f} img/s")
    for label, options in MODES:
        rate = scored(repo, model, str(listing), work / "out", options, b)
        print(f"polyhead score, {label:<36} {rate:7.1f} img/s  ratio {rate / raw:.2f}x", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--heavy", type=int, default=0, help="also the heavy model on N images")
    args = p.parse_args()
    from tests.images import write_collection

    work = Path(tempfile.mkdtemp(prefix="polyhead-score-bench-"))
    try:
        images = work / "images"
        t0 = time.perf_counter()
        write_collection(images, args.images)
        print(f"wrote {args.images} images in {time.perf_counter() - t0:.0f} s", flush=True)
        repo = work / "repo"
        shutil.copytree(ROOT / "model_repo" / "scenes", repo / "scenes")
        bench_model(repo, "scenes", str(images), work, args.images, args.batch_size)
        if args.heavy:
            from bench.gateway import heavy_model

            heavy_model(repo)
            bench_model(repo, "heavy", str(images), work, args.heavy, args.batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
