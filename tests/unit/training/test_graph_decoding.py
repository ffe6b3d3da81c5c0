"""Decoded outputs in the graph: every registered serving kind, ONNX Runtime against the NumPy ops.

Parametrised over ``serving.kinds.KINDS``: a new kind with decoded tensors is tested here with no
new test code. The graphs are tiny onnx.helper models whose raw outputs come from the input
through random weights, with a zero patch in the image (zero vectors for l2_normalize, exact
ties for argmax).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from serving.kinds import KINDS, get_kind, ops
from serving.manifest import InputSpec, Manifest, TaskSpec
from training.errors import ExportError
from training.graph_decoding import ONNX_OPS, append_decoded_outputs, decoded_names
from training.onnx_checks import check_decoded

H, W = 32, 48
DECODING_KINDS = sorted(n for n, k in KINDS.items() if any(d.ops for d in k.decoded))
DTYPES = {"uint8": np.uint8, "float16": np.float16, "float32": np.float32}


def channel_counts(kind: str) -> list[int]:
    fixed = KINDS[kind].channels
    return [fixed] if fixed is not None else [5, 40]


CASES = [
    pytest.param(kind, c, opset, id=f"{kind}-{c}ch-opset{opset}")
    for kind in DECODING_KINDS
    for c in channel_counts(kind)
    for opset in (17, 18)
]


def spec(name: str, kind: str, channels: int) -> TaskSpec:
    labels = [f"l{i}" for i in range(channels)] if KINDS[kind].labelled else None
    return TaskSpec(name=name, kind=kind, output=name, channels=channels, labels=labels)


def head(name: str, kind: str, channels: int, rng: np.random.Generator):
    """Nodes, initializers and the raw output of one task, computed from ``image``."""
    w = (4 * rng.standard_normal((channels, 3, 1, 1))).astype(np.float32)
    if KINDS[kind].dense:
        nodes = [helper.make_node("Conv", ["image", f"{name}_w"], [name], name=f"{name}_conv")]
        inits = [numpy_helper.from_array(w, f"{name}_w")]
        shape = ["batch", channels, H, W]
    else:
        nodes = [
            helper.make_node("GlobalAveragePool", ["image"], [f"{name}_pool"], name=f"{name}_gap"),
            helper.make_node("Flatten", [f"{name}_pool"], [f"{name}_flat"], name=f"{name}_flat"),
            helper.make_node("MatMul", [f"{name}_flat", f"{name}_w"], [name], name=f"{name}_mm"),
        ]
        inits = [numpy_helper.from_array(w[:, :, 0, 0].T.copy(), f"{name}_w")]
        shape = ["batch", channels]
    return nodes, inits, helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def tiny_model(tasks: list[TaskSpec], opset: int, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits, outputs = [], [], []
    for t in tasks:
        n, i, o = head(t.name, t.kind, t.channels, rng)
        nodes += n
        inits += i
        outputs.append(o)
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, H, W])
    graph = helper.make_graph(nodes, "tiny", [image], outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def images(batch: int, seed: int = 1) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((batch, 3, H, W)).astype(np.float32)
    x[:, :, 4:12, 8:20] = 0.0  # raw outputs are exactly zero there: all channels tie
    return x


def run(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {"image": x}), strict=True))


def test_every_op_has_an_onnx_builder():
    assert set(ONNX_OPS) == set(ops.OPS)


@pytest.mark.parametrize(("kind", "channels", "opset"), CASES)
def test_graph_decoding_matches_the_cpu_decoder(kind, channels, opset, tmp_path):
    task = spec("t", kind, channels)
    model = tiny_model([task], opset)
    new, (decoded_task,) = append_decoded_outputs(model, [task])
    onnx.checker.check_model(new, full_check=True)

    tensors = [d for d in get_kind(kind).decoded if d.ops]
    assert [o.name for o in new.graph.output] == ["t", *(f"t.{d.name}" for d in tensors)]
    assert [(d.name, d.output, d.dtype) for d in decoded_task.decoded] == [
        (d.name, f"t.{d.name}", d.dtype) for d in tensors
    ]
    raw_row = (channels, H, W) if get_kind(kind).dense else (channels,)
    for batch in (1, 3):
        out = run(new, images(batch))
        raw = out["t"]
        assert np.array_equal(raw, run(model, images(batch))["t"])
        for tensor, d in zip(tensors, decoded_task.decoded, strict=True):
            got, want = out[d.output], ops.apply(tensor.ops, raw)
            assert got.dtype == DTYPES[tensor.dtype] == want.dtype
            assert got.shape == (batch, *tensor.row_shape(raw_row)) == (batch, *d.shape)
            if tensor.dtype == "uint8":
                top = np.sort(ops.apply(tensor.ops[: tensor.ops.index("argmax")], raw), axis=1)
                ties = top[:, -1] == top[:, -2]
                assert ties.any()  # the zero patch
                assert np.array_equal(got[~ties], want[~ties])
            else:
                np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=1e-3)
                assert np.isfinite(got).all()
    onnx.save_model(new, str(tmp_path / "model.onnx"))
    agreement = check_decoded(tmp_path / "model.onnx", [decoded_task], [images(1), images(3)])
    assert set(agreement) == set(decoded_names([decoded_task]))


def every_kind() -> list[TaskSpec]:
    return [spec(f"t_{k}", k, channel_counts(k)[0]) for k in sorted(KINDS)]


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_all_kinds_in_one_graph_raw_first_then_decoded_and_the_manifest_validates(opset):
    tasks = every_kind()
    model = tiny_model(tasks, opset)
    before = model.SerializeToString()
    new, decoded = append_decoded_outputs(model, tasks)
    assert model.SerializeToString() == before, "the input model is left as it was"
    onnx.checker.check_model(new, full_check=True)

    raw = [t.name for t in tasks]
    expected = raw + [
        f"{t.name}.{d.name}" for t in tasks for d in get_kind(t.kind).decoded if d.ops
    ]
    assert [o.name for o in new.graph.output] == expected == raw + decoded_names(decoded)
    assert not [t for t in decoded if t.kind == "regression" and t.decoded]
    nodes = [n.name for n in new.graph.node]
    assert len(set(nodes)) == len(nodes) and all(nodes)
    values = [i.name for i in new.graph.initializer] + [o for n in new.graph.node for o in n.output]
    assert len(set(values)) == len(values)

    manifest = Manifest(
        name="tiny",
        version=1,
        input=InputSpec(height=H, width=W, mean=(0.5,) * 3, std=(0.25,) * 3),
        tasks=decoded,
        provenance={
            "config": {},
            "data": {},
            "created_at": "2026-01-01T00:00:00+00:00",
            "onnx_sha256": "0" * 64,
            "opset": opset,
            "exporter": "test",
            "framework": "onnx",
            "polyhead_version": "test",
        },
    )
    sess = ort.InferenceSession(new.SerializeToString(), providers=["CPUExecutionProvider"])
    got = [(o.name, o.type, tuple(o.shape[1:])) for o in sess.get_outputs()]
    ort_types = {"float32": "tensor(float)", "float16": "tensor(float16)", "uint8": "tensor(uint8)"}
    assert got == [(n, ort_types[dt], shape) for n, dt, shape in manifest.graph_outputs]
    assert all(o.shape[0] == "batch" for o in sess.get_outputs())


def test_reduce_l2_takes_axes_the_way_the_opset_says():
    task = spec("n", "normals", 3)
    for opset, as_input in ((17, False), (18, True)):
        new, _ = append_decoded_outputs(tiny_model([task], opset), [task])
        (node,) = [n for n in new.graph.node if n.op_type == "ReduceL2"]
        assert (len(node.input) == 2) is as_input
        assert any(a.name == "axes" for a in node.attribute) is not as_input


def test_names_already_in_the_graph_are_not_reused():
    task = spec("s", "segmentation", 5)
    model = tiny_model([task], 18)
    # an unrelated node and value already use the names the decoder would pick first
    model.graph.node.append(
        helper.make_node("Identity", ["s"], ["s.classes/ArgMax_out"], name="s.classes/ArgMax")
    )
    new, _ = append_decoded_outputs(model, [task])
    names = [n.name for n in new.graph.node]
    assert len(set(names)) == len(names)
    onnx.checker.check_model(new, full_check=True)
    out = run(new, images(2))
    assert np.array_equal(out["s.classes"], ops.apply(("argmax",), out["s"]))


def test_opset_older_than_13_is_refused():
    task = spec("c", "classification", 5)
    with pytest.raises(ExportError, match=r"opset >= 13.*has opset 12"):
        append_decoded_outputs(tiny_model([task], 12), [task])


def test_raw_output_that_is_not_float32_is_refused():
    task = spec("c", "classification", 5)
    model = tiny_model([task], 18)
    model.graph.node[-1].output[0] = "c_float"
    model.graph.node.append(
        helper.make_node("Cast", ["c_float"], ["c"], name="to_double", to=TensorProto.DOUBLE)
    )
    model.graph.output[0].type.tensor_type.elem_type = TensorProto.DOUBLE
    with pytest.raises(
        ExportError, match=r"task 'c': raw output 'c' is DOUBLE; decoding needs FLOAT"
    ):
        append_decoded_outputs(model, [task])


def test_ops_that_cannot_apply_are_refused():
    # squeeze_channel of a 2-channel map (a task the manifest itself would refuse)
    task = TaskSpec.model_construct(**{**spec("d", "depth", 1).model_dump(), "channels": 2})
    model = tiny_model([spec("d", "segmentation", 2)], 18)
    with pytest.raises(ExportError, match=r"cannot decode d\.depth .*squeeze_channel needs one"):
        append_decoded_outputs(model, [task])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", r"the graph has no output 'x'"),
        ("channels", r"has 5 channels, the task has 4"),
        ("decoded", r"already has decoded outputs"),
        ("dynamic", r"every axis but the batch static"),
    ],
)
def test_tasks_that_do_not_fit_the_graph_are_refused(change, message):
    task = spec("c", "classification", 5)
    model = tiny_model([task], 18)
    if change == "missing":
        task = spec("x", "classification", 5)
    elif change == "channels":
        task = spec("c", "classification", 4)
    elif change == "decoded":
        (task,) = append_decoded_outputs(model, [task])[1]
    else:
        model.graph.output[0].type.tensor_type.shape.dim[1].dim_param = "classes"
    with pytest.raises(ExportError, match=message):
        append_decoded_outputs(model, [task])


def test_a_graph_that_already_has_decoded_outputs_is_refused():
    task = spec("e", "edges", 1)
    new, _ = append_decoded_outputs(tiny_model([task], 18), [task])
    with pytest.raises(ExportError, match=r"already has a value named 'e\.probability'"):
        append_decoded_outputs(new, [task])


def test_check_decoded_catches_a_graph_that_decodes_differently(tmp_path):
    task = spec("c", "classification", 5)
    new, tasks = append_decoded_outputs(tiny_model([task], 18), [task])
    (softmax,) = [n for n in new.graph.node if n.op_type == "Softmax"]
    softmax.op_type = "Sigmoid"
    del softmax.attribute[:]
    path = tmp_path / "model.onnx"
    onnx.save_model(new, str(path))
    with pytest.raises(ExportError, match=r"'c\.probabilities' disagrees with the CPU decoder"):
        check_decoded(path, tasks, [images(2)])
