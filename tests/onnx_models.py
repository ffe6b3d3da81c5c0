"""Small ONNX models for serving tests, built with onnx.helper: any task kinds, no training.

Dense heads are a 1x1 convolution of the input (random weights: varied maps), image-level heads
a global average pool then a matrix product. ``colour_segmentation`` makes a segmentation head
whose classes are exactly the input's pure colours (black, red, green, blue), so a test can
draw a scene and know the true class map. Versions are written as ``polyhead export`` writes
them, with or without the decoded outputs in the graph.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serving.kinds import get_kind
from serving.manifest import InputSpec, Manifest, Provenance, TaskSpec

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def task_of(kind: str, name: str | None = None, channels: int | None = None) -> TaskSpec:
    """A task of ``kind`` (fixed channels where the kind has them, else ``channels`` or 4)."""
    k = get_kind(kind)
    c = k.channels or channels or 4
    labels = [f"{kind} {i}" for i in range(c)] if k.labelled else None
    name = name or kind
    return TaskSpec(name=name, kind=kind, output=name, channels=c, labels=labels)


def colour_weights() -> tuple[np.ndarray, np.ndarray]:
    """1x1 conv weights: logit_k = pixel_k for red, green, blue (in [0, 1]); black = 0.5."""
    w = np.zeros((4, 3, 1, 1), np.float32)
    b = np.array([0.5, 0, 0, 0], np.float32)
    for k in range(3):  # x is normalised: pixel = x * std + mean
        w[k + 1, k, 0, 0] = STD[k]
        b[k + 1] = MEAN[k]
    return w, b


def build(
    tasks: list[TaskSpec],
    hw: tuple[int, int],
    seed: int = 0,
    weights: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
    opset: int = 18,
) -> onnx.ModelProto:
    """A model with input ``image`` [N,3,H,W] and one raw float32 output per task."""
    rng = np.random.default_rng(seed)
    h, w = hw
    nodes, inits, outputs = [], [], []
    pooled = False
    for t in tasks:
        wb = (weights or {}).get(t.name)
        if t.dense:
            wt, bt = wb or (
                (rng.standard_normal((t.channels, 3, 1, 1)) * 2).astype(np.float32),
                rng.standard_normal(t.channels).astype(np.float32),
            )
            inits += [
                numpy_helper.from_array(wt, f"{t.name}_w"),
                numpy_helper.from_array(bt, f"{t.name}_b"),
            ]
            nodes.append(
                helper.make_node("Conv", ["image", f"{t.name}_w", f"{t.name}_b"], [t.output])
            )
            shape = ["batch", t.channels, h, w]
        else:
            if not pooled:
                nodes += [
                    helper.make_node("GlobalAveragePool", ["image"], ["pool"]),
                    helper.make_node("Flatten", ["pool"], ["flat"], axis=1),
                ]
                pooled = True
            wt, bt = wb or (
                (rng.standard_normal((3, t.channels)) * 3).astype(np.float32),
                rng.standard_normal(t.channels).astype(np.float32),
            )
            inits += [
                numpy_helper.from_array(wt, f"{t.name}_w"),
                numpy_helper.from_array(bt, f"{t.name}_b"),
            ]
            nodes.append(
                helper.make_node("Gemm", ["flat", f"{t.name}_w", f"{t.name}_b"], [t.output])
            )
            shape = ["batch", t.channels]
        outputs.append(helper.make_tensor_value_info(t.output, TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes,
        "test",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, h, w])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def write_version(
    repo: Path,
    name: str,
    version: int,
    tasks: list[TaskSpec],
    hw: tuple[int, int],
    *,
    decoded: bool = True,
    resize: str = "stretch",
    seed: int = 0,
    weights: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> Path:
    """``repo/name/version/{model.onnx, manifest.json}``; ``decoded`` appends graph decoding."""
    model = build(tasks, hw, seed, weights)
    if decoded:
        from training.graph_decoding import append_decoded_outputs

        model, tasks = append_decoded_outputs(model, tasks)
    d = repo / name / str(version)
    d.mkdir(parents=True)
    onnx.save_model(model, str(d / "model.onnx"))
    manifest = Manifest(
        name=name,
        version=version,
        input=InputSpec(height=hw[0], width=hw[1], mean=MEAN, std=STD, resize=resize),
        tasks=tasks,
        max_batch_size=8,
        provenance=Provenance(
            config={"test": True},
            data={},
            created_at=datetime.now(UTC),
            onnx_sha256=hashlib.sha256((d / "model.onnx").read_bytes()).hexdigest(),
            opset=18,
            exporter="onnx.helper",
            framework="tests",
            polyhead_version="test",
        ),
    )
    manifest.dump(d / "manifest.json")
    return d
