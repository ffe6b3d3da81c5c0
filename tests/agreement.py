"""How closely predictions from the fast JPEG path agree with a full-size decode of the photo.

Photos are the demo model's own domain (rendered scenes), enlarged to photo sizes with a little
sensor noise and saved as JPEG (quality 90). Each is pre-processed three ways: the fast path
(DCT-scaled decode, then OpenCV), the same resize after a full-size decode, and the reference of
before (full-size decode, Pillow's bilinear resize); the bundled model runs on each, and the
decoded predictions are compared.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from serving.backends.onnxruntime import OnnxRuntimeBackend
from serving.decoding import needed_outputs, task_tensors
from serving.manifest import Manifest
from serving.preprocess import normalise
from serving.service import RequestLimits, prepare_image
from tests.gateway import ROOT
from tests.images import scene_image

VERSION = ROOT / "model_repo" / "scenes" / "1"


def photo_jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A rendered scene enlarged to ``size`` (w, h), with noise, as a quality-90 JPEG."""
    img = np.asarray(scene_image(seed, size)).astype(np.int16)
    img += np.random.default_rng(seed).integers(-6, 7, img.shape, dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@dataclass
class Agreement:
    """Agreement of the fast path's predictions with another path's, over a set of photos."""

    photos: int
    class_pixels: float  # share of class-map pixels with the same class
    background_label: float  # share of photos with the same classification label
    shapes_labels: float  # share of (photo, label) multi-label decisions that agree
    depth_mean_abs_m: float  # mean |depth difference|, metres
    depth_rel: float  # that, relative to the mean depth
    edges_mean_abs: float  # mean |edge probability difference|


def reference_input(data: bytes, m: Manifest) -> np.ndarray:
    """The pre-processing before the fast path: full-size decode, Pillow bilinear (stretch)."""
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((m.input.width, m.input.height), Image.Resampling.BILINEAR)
    return normalise(np.asarray(img), m.input)


def measure(sizes: list[tuple[int, int]], per_size: int) -> dict[str, Agreement]:
    """The fast path against ``full`` (same resize) and ``reference`` (Pillow), per the above."""
    m = Manifest.load(VERSION / "manifest.json")
    backend = OnnxRuntimeBackend(VERSION / "model.onnx", ["CPUExecutionProvider"])
    outputs = needed_outputs(m.tasks)
    batches: dict[str, list[np.ndarray]] = {"fast": [], "full": [], "reference": []}
    seed = 0
    for size in sizes:
        for _ in range(per_size):
            data = photo_jpeg(seed, size)
            seed += 1
            batches["fast"].append(prepare_image(data, m.input, RequestLimits())[0])
            batches["full"].append(prepare_image(data, m.input, RequestLimits(), fast=False)[0])
            batches["reference"].append(reference_input(data, m))

    def predict(xs: list[np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        out = {}
        for i in range(0, len(xs), 16):
            part = backend.run({"image": np.stack(xs[i : i + 16])}, outputs)
            for t in m.tasks:
                for k, v in task_tensors(t, part).items():
                    out.setdefault(t.name, {}).setdefault(k, []).append(v)
        return {t: {k: np.concatenate(v) for k, v in d.items()} for t, d in out.items()}

    fast = predict(batches["fast"])
    result = {}
    for other in ("full", "reference"):
        o = predict(batches[other])
        depth_f = fast["depth"]["depth"].astype(np.float32)
        depth_o = o["depth"]["depth"].astype(np.float32)
        shapes = m.task("shapes").threshold or 0.5
        result[other] = Agreement(
            photos=len(batches["fast"]),
            class_pixels=float((fast["semseg"]["classes"] == o["semseg"]["classes"]).mean()),
            background_label=float(
                (
                    fast["background"]["probabilities"].argmax(1)
                    == o["background"]["probabilities"].argmax(1)
                ).mean()
            ),
            shapes_labels=float(
                (
                    (fast["shapes"]["probabilities"] > shapes)
                    == (o["shapes"]["probabilities"] > shapes)
                ).mean()
            ),
            depth_mean_abs_m=float(np.abs(depth_f - depth_o).mean()),
            depth_rel=float(np.abs(depth_f - depth_o).mean() / np.abs(depth_o).mean()),
            edges_mean_abs=float(
                np.abs(
                    fast["edges"]["probability"].astype(np.float32)
                    - o["edges"]["probability"].astype(np.float32)
                ).mean()
            ),
        )
    return result
