"""Decoding in the graph: append each task kind's decoded outputs to an exported ONNX model.

Every serving task kind lists decoded tensors (``serving.kinds``); one with ops is a short
sequence of ops from ``serving.kinds.ops`` applied to the task's raw output. Here each op maps to
ONNX nodes, so the graph computes, beside each raw output ``TASK``, the outputs ``TASK.TENSOR``
(a uint8 class map instead of C float32 logits, float16 maps instead of float32): the server
then sends less over the wire and decodes nothing on the CPU. Raw outputs stay first, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from serving.kinds import get_kind, ops
from serving.kinds.base import DecodedTensor
from serving.manifest import DecodedOutput, TaskSpec
from training.errors import ExportError

#: Oldest default-domain opset decoded outputs can be built for: Softmax works on one axis
#: (instead of flattening every axis after it) and Squeeze takes its axes as an input from 13.
MIN_OPSET = 13

#: ONNX element type of each dtype a decoded output may have.
ELEM_TYPES = {
    "uint8": TensorProto.UINT8,
    "float16": TensorProto.FLOAT16,
    "float32": TensorProto.FLOAT,
}


class _Chain:
    """The nodes and initializers computing one decoded output, with graph-unique names."""

    def __init__(self, used: set[str], prefix: str, opset: int) -> None:
        self.used, self.prefix, self.opset = used, prefix, opset
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.rank = 0  # rank of the op's input, batch axis included
        self.dtype = "float32"  # NumPy dtype of the op's input

    def fresh(self, hint: str) -> str:
        """A name no node, value or initializer of the graph has yet (and now reserved)."""
        name, i = f"{self.prefix}/{hint}", 1
        while name in self.used:
            i += 1
            name = f"{self.prefix}/{hint}_{i}"
        self.used.add(name)
        return name

    def node(
        self, op_type: str, inputs: list[str], output: str | None = None, **attrs: object
    ) -> str:
        """Append a node; returns its output (a fresh name unless ``output`` is given)."""
        out = output or self.fresh(f"{op_type}_out")
        self.nodes.append(
            helper.make_node(op_type, inputs, [out], name=self.fresh(op_type), **attrs)
        )
        return out

    def const(self, hint: str, value: np.ndarray) -> str:
        """Append an initializer holding ``value``; returns its name."""
        name = self.fresh(hint)
        self.initializers.append(numpy_helper.from_array(value, name))
        return name


# ---- one builder per op: nodes computing ``y`` from ``x`` (batch axis 0, channels axis 1) -----


def _argmax(c: _Chain, x: str, y: str) -> None:
    # ArgMax gives int64; the first index wins a tie, as NumPy's argmax does
    index = c.node("ArgMax", [x], axis=1, keepdims=0, select_last_index=0)
    c.node("Cast", [index], y, to=TensorProto.UINT8)


def _sigmoid(c: _Chain, x: str, y: str) -> None:
    c.node("Sigmoid", [x], y)


def _softmax(c: _Chain, x: str, y: str) -> None:
    c.node("Softmax", [x], y, axis=1)


def _l2_normalize(c: _Chain, x: str, y: str) -> None:
    if c.opset >= 18:  # axes moved from an attribute to an input
        norm = c.node("ReduceL2", [x, c.const("axes", np.array([1], np.int64))], keepdims=1)
    else:
        norm = c.node("ReduceL2", [x], axes=[1], keepdims=1)
    eps = c.const("eps", np.array(ops.L2_EPS, dtype=c.dtype))
    c.node("Div", [x, c.node("Max", [norm, eps])], y)


def _squeeze_channel(c: _Chain, x: str, y: str) -> None:
    c.node("Squeeze", [x, c.const("axes", np.array([1], np.int64))], y)


def _channels_last(c: _Chain, x: str, y: str) -> None:
    c.node("Transpose", [x], y, perm=[0, *range(2, c.rank), 1])


def _float16(c: _Chain, x: str, y: str) -> None:
    c.node("Cast", [x], y, to=TensorProto.FLOAT16)


#: op name (``serving.kinds.ops``) -> builder of its ONNX nodes.
ONNX_OPS: dict[str, Callable[[_Chain, str, str], None]] = {
    "argmax": _argmax,
    "sigmoid": _sigmoid,
    "softmax": _softmax,
    "l2_normalize": _l2_normalize,
    "squeeze_channel": _squeeze_channel,
    "channels_last": _channels_last,
    "float16": _float16,
}


def append_decoded_outputs(
    model: onnx.ModelProto, tasks: Sequence[TaskSpec]
) -> tuple[onnx.ModelProto, list[TaskSpec]]:
    """``model`` with every task's decoded outputs appended, and the tasks that list them.

    For each task and each decoded tensor of its kind that has ops, nodes applying the ops to
    the task's raw output (float32, batch axis first) and a graph output ``TASK.TENSOR`` are
    added after every existing output. ``model`` itself is not modified.

    Args:
        model: an exported model, e.g. as ``training.export.export_onnx`` writes it.
        tasks: the model's tasks, as in its manifest (without decoded outputs).

    Returns:
        The new model, and the tasks with ``decoded`` filled in.

    Raises:
        ExportError: the opset is too old, a raw output is missing or not float32 with a
            static per-row shape, a task already has decoded outputs, or its ops cannot apply.
    """
    opset = _opset(model)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    outputs = {o.name: o for o in graph.output}
    used = _names(graph)
    new_tasks = []
    for task in tasks:
        raw = _raw_output(task, outputs)
        decoded = []
        for tensor in get_kind(task.kind).decoded:
            if not tensor.ops:
                continue  # the raw output itself
            name = f"{task.name}.{tensor.name}"
            if name in used:
                raise ExportError(
                    f"the graph already has a value named {name!r}: does it have its decoded "
                    "outputs already?"
                )
            used.add(name)
            chain, info = _build(model, raw, tensor, name, opset, used)
            graph.node.extend(chain.nodes)
            graph.initializer.extend(chain.initializers)
            graph.output.append(info)
            shape = tuple(d.dim_value for d in info.type.tensor_type.shape.dim[1:])
            decoded.append(
                DecodedOutput(name=tensor.name, output=name, dtype=tensor.dtype, shape=shape)
            )
        new_tasks.append(TaskSpec.model_validate({**task.model_dump(), "decoded": decoded}))
    return out, new_tasks


def append_decoded_outputs_file(src: Path, dest: Path, tasks: Sequence[TaskSpec]) -> list[TaskSpec]:
    """:func:`append_decoded_outputs` from file ``src`` to one self-contained file ``dest``."""
    model, new_tasks = append_decoded_outputs(onnx.load(str(src)), tasks)
    onnx.save_model(model, str(dest), save_as_external_data=False)
    return new_tasks


def decoded_names(tasks: Sequence[TaskSpec]) -> list[str]:
    """The ONNX names of the tasks' decoded outputs, in graph order."""
    return [d.output for t in tasks for d in t.decoded]


def _opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ExportError("the model imports no default-domain ONNX opset")
    if versions[0] < MIN_OPSET:
        raise ExportError(
            f"decoded outputs need opset >= {MIN_OPSET} (Softmax over one axis, Squeeze with "
            f"axes as an input); the model has opset {versions[0]}: re-export it with a newer one"
        )
    return versions[0]


def _names(graph: onnx.GraphProto) -> set[str]:
    """Every node, value and initializer name of the graph (new names must avoid them)."""
    values: Iterable[str] = (
        *(n.name for n in graph.node),
        *(v for n in graph.node for v in (*n.input, *n.output)),
        *(v.name for v in (*graph.input, *graph.output, *graph.value_info)),
        *(t.name for t in graph.initializer),
        *(t.values.name for t in graph.sparse_initializer),
    )
    return {v for v in values if v}


def _raw_output(task: TaskSpec, outputs: dict[str, onnx.ValueInfoProto]) -> onnx.ValueInfoProto:
    """The task's raw output, checked: present, float32, batch axis then static dimensions."""
    if task.decoded:
        raise ExportError(f"task {task.name!r} already has decoded outputs")
    raw = outputs.get(task.output)
    if raw is None:
        raise ExportError(
            f"task {task.name!r}: the graph has no output {task.output!r}; it has {list(outputs)}"
        )
    t = raw.type.tensor_type
    if not raw.type.HasField("tensor_type") or t.elem_type != TensorProto.FLOAT:
        kind = TensorProto.DataType.Name(t.elem_type) if t.elem_type else "not a tensor"
        raise ExportError(
            f"task {task.name!r}: raw output {task.output!r} is {kind}; decoding needs FLOAT"
        )
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    if len(dims) < 2 or any(d is None or d < 1 for d in dims[1:]):
        shape = [d.dim_param or d.dim_value for d in t.shape.dim]
        raise ExportError(
            f"task {task.name!r}: raw output {task.output!r} has shape {shape}; decoding needs "
            "[batch, channels, ...] with every axis but the batch static"
        )
    if dims[1] != task.channels:
        raise ExportError(
            f"task {task.name!r}: raw output {task.output!r} has {dims[1]} channels, "
            f"the task has {task.channels}"
        )
    return raw


def _build(
    model: onnx.ModelProto,
    raw: onnx.ValueInfoProto,
    tensor: DecodedTensor,
    name: str,
    opset: int,
    used: set[str],
) -> tuple[_Chain, onnx.ValueInfoProto]:
    """The nodes computing decoded output ``name`` from ``raw``, checked on their own."""
    dims = raw.type.tensor_type.shape.dim
    raw_row = [d.dim_value for d in dims[1:]]
    what = f"cannot decode {name} ({' -> '.join(tensor.ops)}) in the graph"
    try:
        row = tensor.row_shape(raw_row)
    except ValueError as e:
        raise ExportError(f"{what}: {e}") from e
    if "argmax" in tensor.ops:
        channels = ops.row_shape(tensor.ops[: tensor.ops.index("argmax")], raw_row)[0]
        if channels > 256:
            raise ExportError(
                f"{what}: a uint8 class map takes at most 256 classes, got {channels}"
            )
    chain = _Chain(used, name, opset)
    x = raw.name
    for i, op in enumerate(tensor.ops):
        chain.rank = 1 + len(ops.row_shape(tensor.ops[:i], raw_row))
        chain.dtype = ops.dtype(tensor.ops[:i])
        y = name if i == len(tensor.ops) - 1 else chain.fresh(op)
        ONNX_OPS[op](chain, x, y)
        x = y
    info = helper.make_tensor_value_info(name, ELEM_TYPES[tensor.dtype], [None, *row])
    info.type.tensor_type.shape.dim[0].CopyFrom(dims[0])  # the raw output's batch axis
    _check_alone(model, raw, chain, info, what)
    return chain, info


def _check_alone(
    model: onnx.ModelProto,
    raw: onnx.ValueInfoProto,
    chain: _Chain,
    out: onnx.ValueInfoProto,
    what: str,
) -> None:
    """Run the checker on the chain as a model of its own: errors then name the output."""
    graph = helper.make_graph(chain.nodes, "decoding", [raw], [out], chain.initializers)
    alone = helper.make_model(graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    try:
        onnx.checker.check_model(alone, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"{what}: {e}") from e
