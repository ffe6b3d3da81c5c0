"""Render docs/demo.png: a few test scenes, the bundled model's decoded predictions, and truth.

    python docs/demo_figure.py --data data/scenes [--model model_repo/scenes/1] [--n 4]

Uses the serving code (pre-processing, ONNX Runtime, decoders) exactly as the gateway does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from serving.backends.onnxruntime import OnnxRuntimeBackend
from serving.codecs import decode_array
from serving.decoding import decode_predictions, needed_outputs
from serving.kinds import DecodeOptions
from serving.manifest import Manifest
from serving.preprocess import preprocess

PALETTE = np.array(
    [[30, 30, 30], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200]], np.uint8
)


def colour_depth(d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((d - lo) / max(hi - lo, 1e-6), 0, 1)
    return (np.stack([1 - t, 0.4 + 0 * t, t], -1) * 255).astype(np.uint8)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--model", type=Path, default=Path("model_repo/scenes/1"))
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--out", type=Path, default=Path("docs/demo.png"))
    a = p.parse_args()
    m = Manifest.load(a.model / "manifest.json")
    backend = OnnxRuntimeBackend(a.model / "model.onnx", ["CPUExecutionProvider"])
    ids = (a.data / "splits" / "test.txt").read_text().split()[: a.n]
    rows = []
    for sid in ids:
        data = (a.data / "images" / f"{sid}.png").read_bytes()
        x, g = preprocess(data, m.input, 10**8)
        out = asyncio.run(backend.infer({"image": x[None]}, needed_outputs(m.tasks)))
        t = decode_predictions(out, m.tasks, [g], DecodeOptions(encoding="float16"))[0]["tasks"]
        seg = decode_array(t["semseg"]["map"])
        depth = decode_array(t["depth"]["map"]).astype(np.float32)
        normals = decode_array(t["normals"]["map"]).astype(np.float32)
        edges = decode_array(t["edges"]["probability"]).astype(np.float32)
        true_seg = np.asarray(Image.open(a.data / "semseg" / f"{sid}.png"))
        true_depth = np.load(a.data / "depth" / f"{sid}.npy")
        true_normals = np.asarray(Image.open(a.data / "normals" / f"{sid}.png"))
        lo, hi = float(true_depth.min()), float(true_depth.max())
        tiles = [
            np.asarray(Image.open(a.data / "images" / f"{sid}.png").convert("RGB")),
            PALETTE[seg % len(PALETTE)],
            PALETTE[true_seg % len(PALETTE)],
            colour_depth(depth, lo, hi),
            colour_depth(true_depth, lo, hi),
            ((normals + 1) * 127.5).clip(0, 255).astype(np.uint8),
            true_normals,
            np.repeat((edges * 255).astype(np.uint8)[..., None], 3, -1),
        ]
        row = Image.fromarray(np.concatenate(tiles, 1))
        caption = (
            f"pred: {t['background']['label']}; "
            f"{', '.join(x['label'] for x in t['shapes']['labels']) or '-'}"
        )
        canvas = Image.new("RGB", (row.width, row.height + 14), "white")
        canvas.paste(row, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), caption, fill="black")
        rows.append(np.asarray(canvas))
    header = Image.new("RGB", (rows[0].shape[1], 14), "white")
    names = ["image", "semseg", "truth", "depth", "truth", "normals", "truth", "edges"]
    for i, name in enumerate(names):
        ImageDraw.Draw(header).text((i * 128 + 2, 1), name, fill="black")
    Image.fromarray(np.concatenate([np.asarray(header), *rows], 0)).save(a.out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
