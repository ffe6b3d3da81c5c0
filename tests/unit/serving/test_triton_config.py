import pytest

from serving.kinds import get_kind
from serving.manifest import Manifest
from serving.manifest.triton_config import (
    DynamicBatching,
    InstanceGroup,
    ModelConfig,
    PbtxtError,
    TensorConfig,
    config_from_manifest,
    parse_pbtxt,
    to_pbtxt,
)
from tests.unit.serving.test_manifest import valid


def test_config_from_manifest_dims_per_kind():
    c = config_from_manifest(Manifest.parse(valid()), max_queue_delay_microseconds=500)
    assert c.platform == "onnxruntime_onnx" and c.name == "scenes" and c.max_batch_size == 8
    assert c.inputs == (TensorConfig("image", "TYPE_FP32", (3, 64, 96)),)
    assert c.outputs == (
        TensorConfig("semseg", "TYPE_FP32", (3, 64, 96)),
        TensorConfig("depth", "TYPE_FP32", (1, 64, 96)),
        TensorConfig("tags", "TYPE_FP32", (2,)),
    )
    assert c.dynamic_batching == DynamicBatching((4, 8), 500)


def with_decoded(raw: dict) -> dict:
    """``raw`` with every decoded output an export appends to the graph listed in its tasks."""
    m = Manifest.parse(raw)
    for t in raw["tasks"]:
        row = m.output_shape(t["name"])
        t["decoded"] = [
            {
                "name": d.name,
                "output": f"{t['name']}.{d.name}",
                "dtype": d.dtype,
                "shape": list(d.row_shape(row)),
            }
            for d in get_kind(t["kind"]).decoded
            if d.ops
        ]
    return raw


def test_decoded_outputs_follow_the_raw_ones_with_their_types():
    c = config_from_manifest(Manifest.parse(with_decoded(valid())))
    assert c.outputs == (
        TensorConfig("semseg", "TYPE_FP32", (3, 64, 96)),
        TensorConfig("depth", "TYPE_FP32", (1, 64, 96)),
        TensorConfig("tags", "TYPE_FP32", (2,)),
        TensorConfig("semseg.classes", "TYPE_UINT8", (64, 96)),
        TensorConfig("depth.depth", "TYPE_FP16", (64, 96)),
        TensorConfig("tags.probabilities", "TYPE_FP32", (2,)),
    )
    assert parse_pbtxt(to_pbtxt(c)) == c


def test_round_trip_field_by_field():
    c = config_from_manifest(Manifest.parse(valid()))
    back = parse_pbtxt(to_pbtxt(c))
    for field in (
        "name",
        "platform",
        "max_batch_size",
        "inputs",
        "outputs",
        "dynamic_batching",
        "instance_groups",
        "warmup_batch_sizes",
        "tensorrt_precision",
    ):
        assert getattr(back, field) == getattr(c, field), field
    assert back == c
    assert c.warmup_batch_sizes == (1, 8) and c.tensorrt_precision is None


def test_tensorrt_and_warmup_round_trip():
    m = Manifest.parse(valid())
    c = config_from_manifest(m, tensorrt_precision="FP16")
    text = to_pbtxt(c)
    assert 'name: "tensorrt"' in text and 'value: "FP16"' in text
    assert text.count("zero_data: true") == 2
    assert parse_pbtxt(text) == c
    plain = config_from_manifest(m, warmup=False)
    assert "model_warmup" not in to_pbtxt(plain) and "optimization" not in to_pbtxt(plain)
    assert parse_pbtxt(to_pbtxt(plain)) == plain
    with pytest.raises(ValueError, match="tensorrt_precision"):
        config_from_manifest(m, tensorrt_precision="INT4")


def test_round_trip_without_batching_and_several_groups():
    c = ModelConfig(
        name="m",
        platform="onnxruntime_onnx",
        max_batch_size=0,
        inputs=(TensorConfig("x", "TYPE_FP16", (1,)),),
        outputs=(TensorConfig("y", "TYPE_INT64", (-1, 4)),),
        dynamic_batching=None,
        instance_groups=(InstanceGroup(2, "KIND_CPU"), InstanceGroup(1, "KIND_GPU")),
    )
    assert parse_pbtxt(to_pbtxt(c)) == c


def test_hand_written_config_with_comments_and_extra_fields():
    text = """
    # a hand-edited config
    name: "scenes"   # trailing comment
    backend: "onnxruntime"
    max_batch_size: 16
    input [ { name: "image", data_type: TYPE_FP32, dims: [3, 128, 128] } ]
    output { name: "depth" data_type: TYPE_FP32 dims: [ 1, 128, 128 ] }
    output { name: "tags" data_type: TYPE_FP32 dims: 4 }
    version_policy: { latest { num_versions: 2 } }
    optimization { execution_accelerators { gpu_execution_accelerator : [ { name : "tensorrt" } ] } }
    dynamic_batching { max_queue_delay_microseconds: 100 }
    parameters { key: "x" value: { string_value: "a \\"quoted\\" value" } }
    """
    c = parse_pbtxt(text)
    assert c.platform == "onnxruntime" and c.max_batch_size == 16
    assert [o.name for o in c.outputs] == ["depth", "tags"]
    assert c.outputs[1].dims == (4,)
    assert c.dynamic_batching == DynamicBatching((), 100)
    assert c.extra["version_policy"][0]["latest"][0]["num_versions"] == [2]
    assert "optimization" in c.extra


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('name: "x"\nmax_batch_size: 4\ninput [ { name: "a" ', 3),
        ('name: "x"\n\n  max_batch_size: @', 3),
        ('name: "x"\ninput { name: "a" }\n}', 3),
    ],
)
def test_malformed_text_names_the_line(text, line):
    with pytest.raises(PbtxtError, match=f"line {line}"):
        parse_pbtxt(text)
