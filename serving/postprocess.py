"""Raw head outputs -> decoded predictions, one small registered decoder per task kind.

Dense maps are mapped back onto the request image (undoing letterbox or crop) and resized to its
original size unless the request asks for model resolution, then encoded (PNG by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from serving.codecs import encode_json, encode_png, encode_raw
from serving.manifest import TaskSpec
from serving.preprocess import Geometry

Decoded = dict[str, Any]


@dataclass(frozen=True)
class DecodeOptions:
    """Per-request choices: map encoding, output resolution, how many labels."""

    # float16 by default: base64 of the array costs well under 1% of the model's time, where
    # PNG costs 10-25% at 256x256 (measured in bench/); PNG is one query parameter away.
    encoding: str = "float16"  # float16 | png | json
    resolution: str = "original"  # original | model
    top_k: int = 5
    # maps' data as bytes instead of base64 text (batch scoring writes bytes to Parquet)
    binary: bool = False


Decoder = Callable[[np.ndarray, TaskSpec, Geometry, DecodeOptions], Decoded]
DECODERS: dict[str, Decoder] = {}


def register(kind: str) -> Callable[[Decoder], Decoder]:
    """Register the decoder of a task kind (one per kind)."""

    def add(fn: Decoder) -> Decoder:
        if kind in DECODERS:
            raise ValueError(f"a decoder for {kind!r} is already registered")
        DECODERS[kind] = fn
        return fn

    return add


def decode(
    output: np.ndarray, task: TaskSpec, geometry: Geometry, options: DecodeOptions
) -> Decoded:
    """Decode one image's output of ``task``."""
    try:
        decoder = DECODERS[task.kind]
    except KeyError:
        raise ValueError(
            f"no decoder for task kind {task.kind!r}; known: {', '.join(sorted(DECODERS))}"
        ) from None
    return {"kind": task.kind, **decoder(output, task, geometry, options)}


# ---- geometry ------------------------------------------------------------------------------


def _content(channels_first: np.ndarray, g: Geometry) -> np.ndarray:
    """The part of a C×H×W model-resolution map that covers the image (drops letterbox bars)."""
    top, left = g.offset
    h, w = g.resized
    return channels_first[:, top : top + h, left : left + w]


def _target_size(g: Geometry, options: DecodeOptions, model_hw: tuple[int, int]) -> tuple[int, int]:
    if options.resolution == "model":
        return model_hw
    if g.crop is not None:
        return (g.crop[2], g.crop[3])
    return g.original


def _resize_float(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of C×h×w float maps to C×H×W."""
    h, w = size
    if maps.shape[1:] == (h, w):
        return maps.astype(np.float32, copy=False)
    return np.stack(
        [
            np.asarray(
                Image.fromarray(np.ascontiguousarray(m, dtype=np.float32)).resize(
                    (w, h), Image.Resampling.BILINEAR
                )
            )
            for m in maps
        ]
    )


def _resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if labels.shape == (h, w):
        return labels
    return np.asarray(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))


def _dense(
    output: np.ndarray, g: Geometry, options: DecodeOptions
) -> tuple[np.ndarray, tuple[int, int]]:
    model_hw = (output.shape[-2], output.shape[-1])
    return _content(output, g), _target_size(g, options, model_hw)


def _encode_map(array: np.ndarray, options: DecodeOptions, **extra: Any) -> dict[str, Any]:
    if options.encoding == "json":
        return encode_json(array, **extra)
    if options.encoding == "float16":
        return encode_raw(array, binary=options.binary, **extra)
    return encode_png(array, binary=options.binary, **extra)


# ---- decoders ------------------------------------------------------------------------------


# ---- task outputs as arrays (shared by the JSON decoders and the v2 tensor outputs) ----------


def class_map(output: np.ndarray, g: Geometry, o: DecodeOptions) -> np.ndarray:
    """H×W uint8 class indices of a segmentation output, on the requested grid."""
    logits, size = _dense(output, g, o)
    return _resize_nearest(logits.argmax(axis=0).astype(np.uint8), size)


def depth_map(output: np.ndarray, g: Geometry, o: DecodeOptions) -> np.ndarray:
    """H×W float32 depth on the requested grid."""
    maps, size = _dense(output, g, o)
    return _resize_float(maps, size)[0]


def normal_map(output: np.ndarray, g: Geometry, o: DecodeOptions) -> np.ndarray:
    """H×W×3 float32 unit normals on the requested grid."""
    maps, size = _dense(output, g, o)
    n = _resize_float(maps, size)
    n = n / np.maximum(np.linalg.norm(n, axis=0, keepdims=True), 1e-6)  # n may be read-only
    return np.ascontiguousarray(n.transpose(1, 2, 0))


def probability_map(output: np.ndarray, g: Geometry, o: DecodeOptions) -> np.ndarray:
    """H×W float32 per-pixel probability (sigmoid of the logit) on the requested grid."""
    maps, size = _dense(output, g, o)
    return (1.0 / (1.0 + np.exp(-_resize_float(maps, size)[0]))).astype(np.float32)


def softmax(x: np.ndarray) -> np.ndarray:
    """Class probabilities of one logit vector (float64)."""
    x = x.astype(np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Independent label probabilities of one logit vector (float64)."""
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


def _threshold(task: TaskSpec) -> float:
    return task.threshold if task.threshold is not None else 0.5


# ---- decoders ------------------------------------------------------------------------------


@register("segmentation")
def _segmentation(output: np.ndarray, task: TaskSpec, g: Geometry, o: DecodeOptions) -> Decoded:
    classes = class_map(output, g, o)
    labels = task.labels or [str(i) for i in range(task.channels)]
    counts = np.bincount(classes.ravel(), minlength=len(labels))
    total = classes.size
    present = [
        {"index": int(i), "label": labels[i], "share": round(float(counts[i]) / total, 6)}
        for i in np.argsort(-counts)
        if counts[i] > 0
    ]
    return {"classes": present, "map": _encode_map(classes, o, labels=labels)}


@register("depth")
def _depth(output: np.ndarray, task: TaskSpec, g: Geometry, o: DecodeOptions) -> Decoded:
    depth = depth_map(output, g, o)
    lo, hi = float(depth.min()), float(depth.max())
    stats = {"min": lo, "max": hi, "mean": float(depth.mean()), "units": task.units}
    if o.encoding == "png":
        # 16-bit PNG over [min, max]: depth = min + value / 65535 * (max - min)
        span = hi - lo if hi > lo else 1.0
        q = np.round((depth - lo) / span * 65535).astype(np.uint16)
        encoded = encode_png(q, o.binary, value_min=lo, value_max=lo + span)
    else:
        encoded = _encode_map(depth, o)
    return {**stats, "map": encoded}


@register("normals")
def _normals(output: np.ndarray, task: TaskSpec, g: Geometry, o: DecodeOptions) -> Decoded:
    hwc = normal_map(output, g, o)
    if o.encoding == "png":
        # RGB = (n + 1) * 127.5
        encoded = encode_png(np.round((hwc + 1.0) * 127.5).clip(0, 255).astype(np.uint8), o.binary)
    else:
        encoded = _encode_map(hwc, o)
    return {"map": encoded}


def _probability_map(output: np.ndarray, task: TaskSpec, g: Geometry, o: DecodeOptions) -> Decoded:
    prob = probability_map(output, g, o)
    threshold = _threshold(task)
    fraction = float((prob > threshold).mean())
    if o.encoding == "png":
        encoded = encode_png(np.round(prob * 255).astype(np.uint8), o.binary, scale=1 / 255)
    else:
        encoded = _encode_map(prob, o)
    return {"threshold": threshold, "fraction_above_threshold": fraction, "probability": encoded}


register("edges")(_probability_map)
register("saliency")(_probability_map)


@register("classification")
def _classification(output: np.ndarray, task: TaskSpec, g: Geometry, o: DecodeOptions) -> Decoded:
    p = softmax(output)
    labels = task.labels or [str(i) for i in range(task.channels)]
    top = np.argsort(-p)[: max(1, min(o.top_k, len(p)))]
    ranked = [{"label": labels[i], "index": int(i), "probability": float(p[i])} for i in top]
    return {"label": ranked[0]["label"], "probability": ranked[0]["probability"], "top_k": ranked}


@register("multilabel")
def _multilabel(output: np.ndarray, task: TaskSpec, g: Geometry, o: DecodeOptions) -> Decoded:
    p = sigmoid(output)
    labels = task.labels or [str(i) for i in range(task.channels)]
    threshold = _threshold(task)
    order = np.argsort(-p)
    present = [{"label": labels[i], "probability": float(p[i])} for i in order if p[i] > threshold]
    return {
        "threshold": threshold,
        "labels": present,
        "scores": {labels[i]: float(p[i]) for i in range(len(p))},
    }


@register("regression")
def _regression(output: np.ndarray, task: TaskSpec, g: Geometry, o: DecodeOptions) -> Decoded:
    return {"values": [float(v) for v in output], "units": task.units}
