"""The v2 outputs of a model: what a client may ask for, what each costs, and how it is made.

The raw task outputs (logits, as the graph computes them) come first; then, per task, its
kind's decoded tensors named ``TASK.WHAT`` (``semseg.classes`` UINT8 H×W, ``depth.depth`` FP16,
``normals.normals`` FP16 H×W×3, ...; see ``serving.kinds``), its extra outputs
(``background.label``) and ``TASK.json`` (the very JSON ``/v1`` returns for that task); and
``image.box`` / ``image.size`` (where dense maps lie on each image). Dense decoded outputs
follow the request's ``resolution`` (``model`` by default) and ``max_side``, as in ``/v1``.

An output may also be asked for through Triton's classification extension (the output
parameter ``classification: K``): it then comes back as BYTES ``[N, K]``, each element
``"value:index:label"`` for the K largest values of that output's row.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import orjson

from serving.api.v2.wire import Tensor
from serving.decoding import decode_task, laid_back, task_bytes, task_outputs, task_tensors
from serving.errors import BadRequest
from serving.geometry import Geometry
from serving.kinds import DecodeOptions, get_kind
from serving.kinds.base import Maps, labels_of
from serving.kinds.maps import target_size
from serving.manifest import InputSpec, Manifest, TaskSpec
from serving.repository import DATATYPES

BOX_OUTPUT = "image.box"  # INT32 [N, 4]: left, top, width, height in the image's pixels
SIZE_OUTPUT = "image.size"  # INT32 [N, 2]: width, height of the image
MAX_CLASSIFICATION = 1000

_NUMPY = {"FP32": "float32", "FP16": "float16", "UINT8": "uint8", "INT32": "int32"}
#: JSON bytes of one element at most, by datatype (a float repr, with its comma)
_JSON_ELEMENT = {"UINT8": 4, "INT32": 12, "BYTES": 0}

PlanKind = Literal["raw", "tensor", "extra", "json", "box", "size"]


@dataclass(frozen=True)
class OutputPlan:
    """How to produce one v2 output: a raw task output, a decoded one, or a placement."""

    name: str
    datatype: str
    shape: list[int]  # per row; -1 for a dimension that follows the image
    kind: PlanKind
    task: TaskSpec | None = None
    tensor: str = ""  # the decoded tensor (tensor plans)
    fn: Callable[[Maps, TaskSpec], np.ndarray] | None = None  # extra plans

    @property
    def dense(self) -> bool:
        """True when the output is a map that follows the image size."""
        return -1 in self.shape

    @property
    def graph_outputs(self) -> list[str]:
        """The graph outputs it is made from."""
        if self.kind == "raw":
            return [self.name]
        return task_outputs(self.task) if self.task is not None else []


def output_plans(manifest: Manifest) -> dict[str, OutputPlan]:
    """Every output a v2 client may ask for, by name, raw outputs first."""
    plans: dict[str, OutputPlan] = {}
    for t in manifest.tasks:
        plans[t.output] = OutputPlan(
            t.output, "FP32", list(manifest.output_shape(t.name)), "raw", t
        )
    for t in manifest.tasks:
        kind = get_kind(t.kind)
        raw_row = manifest.output_shape(t.name)
        for d in kind.decoded:
            shape = list(d.row_shape(raw_row))
            if d.resample is not None:
                shape[:2] = [-1, -1]
            name = f"{t.name}.{d.name}"
            plans[name] = OutputPlan(name, DATATYPES[d.dtype], shape, "tensor", t, tensor=d.name)
        for x in kind.v2_extra(t):
            name = f"{t.name}.{x.suffix}"
            plans[name] = OutputPlan(name, x.datatype, x.shape(t), "extra", t, fn=x.fn)
        plans[f"{t.name}.json"] = OutputPlan(f"{t.name}.json", "BYTES", [1], "json", t)
    plans[BOX_OUTPUT] = OutputPlan(BOX_OUTPUT, "INT32", [4], "box")
    plans[SIZE_OUTPUT] = OutputPlan(SIZE_OUTPUT, "INT32", [2], "size")
    return plans


def classification_count(plan: OutputPlan, value: Any) -> int:
    """The K of a classification request on ``plan``, checked."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BadRequest(f"output {plan.name!r}: classification must be a positive integer")
    if plan.task is None or plan.datatype == "BYTES" or plan.dense or len(plan.shape) != 1:
        raise BadRequest(
            f"output {plan.name!r}: classification takes an output with one value per class "
            f"(shape [N, C]); this one is {plan.datatype} {['N', *plan.shape]}"
        )
    return min(value, plan.shape[0], MAX_CLASSIFICATION)


def plan_bytes(
    p: OutputPlan,
    geometries: list[Geometry],
    options: DecodeOptions,
    binary: bool,
    classification: int | None = None,
) -> int:
    """An upper bound on one output's bytes in the response (binary, or JSON ``data``)."""
    if classification is not None:
        return len(geometries) * classification * (4 + 2 * 64) + 200
    if p.kind == "json":
        assert p.task is not None
        body = sum(task_bytes(p.task, g, options) for g in geometries)
        return body + 4 * len(geometries) if binary else 2 * body + 4 * len(geometries)
    total = 0
    for g in geometries:
        shape = list(p.shape)
        if p.dense:
            shape[:2] = target_size(g, options.resolution, options.max_side)
        elements = math.prod(shape)
        if p.datatype == "BYTES":
            total += 4 + 1024 if binary else 2 * 1024
        elif binary:
            total += elements * (np.dtype(_NUMPY[p.datatype]).itemsize)
        else:
            total += elements * _JSON_ELEMENT.get(p.datatype, 24)
    return total + 200


def classify(tensor: Tensor, k: int, labels: list[str]) -> Tensor:
    """Triton's classification form of an [N, C] output: the top ``k`` as "value:index:label"."""
    values = tensor.array.astype(np.float32, copy=False)
    top = np.argsort(-values, axis=1, kind="stable")[:, :k]
    rows = [
        [f"{values[r, i]:f}:{i}:{labels[i]}".encode() for i in top[r]] for r in range(len(values))
    ]
    out = np.empty((len(values), k), dtype=object)
    for r, row in enumerate(rows):
        out[r, :] = row
    return Tensor(tensor.name, "BYTES", out)


def decode_outputs(
    plans: list[OutputPlan],
    raw: dict[str, np.ndarray],
    spec: InputSpec,
    geometries: list[Geometry],
    options: DecodeOptions,
    classification: dict[str, int],
) -> list[Tensor]:
    """The requested outputs of one forward pass, in request order."""
    tensors: dict[str, Maps] = {}
    rows: dict[str, list[tuple[Maps, dict[str, Any] | None]]] = {}

    def batch_of(task: TaskSpec) -> Maps:
        if task.name not in tensors:
            tensors[task.name] = task_tensors(task, raw)
        return tensors[task.name]

    def laid(task: TaskSpec) -> list[tuple[Maps, dict[str, Any] | None]]:
        if task.name not in rows:
            batch = batch_of(task)
            rows[task.name] = [
                laid_back(task, {k: v[i] for k, v in batch.items()}, g, options)
                for i, g in enumerate(geometries)
            ]
        return rows[task.name]

    grid = (spec.height, spec.width)
    whole_grid = options.resolution == "model" and all(
        g.resized == grid and g.offset == (0, 0) for g in geometries
    )
    out = []
    for p in plans:
        if p.kind == "raw":
            t = Tensor(p.name, "FP32", raw[p.name])
        elif p.kind == "box":
            t = Tensor(p.name, "INT32", np.array([g.box for g in geometries], dtype=np.int32))
        elif p.kind == "size":
            sizes = [(g.original[1], g.original[0]) for g in geometries]
            t = Tensor(p.name, "INT32", np.array(sizes, dtype=np.int32))
        else:
            task = p.task
            assert task is not None
            if p.kind == "tensor" and (whole_grid or not p.dense):
                t = Tensor(p.name, p.datatype, batch_of(task)[p.tensor])
            elif p.kind == "json":
                batch = batch_of(task)
                values = [
                    orjson.dumps(decode_task(task, {k: v[i] for k, v in batch.items()}, g, options))
                    for i, g in enumerate(geometries)
                ]
                t = Tensor(p.name, "BYTES", np.array(values, dtype=object).reshape(-1, 1))
            else:
                if p.kind == "extra":
                    assert p.fn is not None
                    fn = p.fn
                    arrays = [fn(maps, task) for maps, _ in laid(task)]
                else:
                    arrays = [maps[p.tensor] for maps, _ in laid(task)]
                if len({a.shape for a in arrays}) > 1:
                    raise BadRequest(
                        f"output {p.name!r} follows each image's size and the images differ in "
                        "size: send images of one size, or set the request parameter "
                        "resolution=model"
                    )
                array = np.stack(arrays)
                if p.datatype in _NUMPY:
                    array = array.astype(_NUMPY[p.datatype], copy=False)
                t = Tensor(p.name, p.datatype, array)
        if p.name in classification:
            assert p.task is not None
            t = classify(t, classification[p.name], labels_of(p.task))
        out.append(t)
    return out
