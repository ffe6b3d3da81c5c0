import copy
import json

import pytest

from serving.kinds import KINDS
from serving.manifest import Manifest, ManifestError


def valid() -> dict:
    return {
        "format_version": 1,
        "name": "scenes",
        "version": 3,
        "input": {"height": 64, "width": 96, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "tasks": [
            {
                "name": "semseg",
                "kind": "segmentation",
                "output": "semseg",
                "channels": 3,
                "labels": ["bg", "a", "b"],
            },
            {"name": "depth", "kind": "depth", "output": "depth", "channels": 1, "units": "m"},
            {
                "name": "tags",
                "kind": "multilabel",
                "output": "tags",
                "channels": 2,
                "labels": ["x", "y"],
            },
        ],
        "metrics": {"semseg": {"miou": 0.5}, "depth": {"rmse": 0.1}},
        "provenance": {
            "config": {"a": 1},
            "data": {"root": "data"},
            "git_commit": None,
            "created_at": "2026-11-22T10:00:00+00:00",
            "onnx_sha256": "a" * 64,
            "opset": 18,
            "exporter": "torch.onnx",
            "framework": "torch 2.13.0",
            "polyhead_version": "0.1.0",
        },
    }


def mutate(path: str, value):
    raw = copy.deepcopy(valid())
    node = raw
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    last = keys[-1]
    if value is DELETE:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return raw


DELETE = object()


def test_valid_manifest_round_trips(tmp_path):
    m = Manifest.parse(valid())
    m.dump(tmp_path / "manifest.json")
    again = Manifest.load(tmp_path / "manifest.json")
    assert again == m
    assert again.task_names == ["semseg", "depth", "tags"]
    assert again.output_shape("semseg") == (3, 64, 96)
    assert again.output_shape("tags") == (2,)
    assert again.task("tags").threshold == 0.5  # default filled for thresholded kinds
    assert again.task("depth").threshold is None


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            "tasks.0.kind",
            "segmantation",
            r"tasks\.0\.kind: unknown task kind 'segmantation'; valid: classification",
        ),
        ("tasks.0.labels", ["bg", "a"], r"tasks\.0: .*labels: 2 labels for 3 channels"),
        ("tasks.0.labels", DELETE, r"tasks\.0: .*labels: required for a segmentation task"),
        ("tasks.0.labels", ["bg", "a", "a"], r"labels: duplicates \['a'\]"),
        ("tasks.1.name", "semseg", r"duplicate task names \['semseg'\]"),
        ("tasks.1.output", "semseg", r"duplicate task outputs \['semseg'\]"),
        ("tasks.1.output", "image", r"named like the input 'image'"),
        ("tasks.1.channels", 2, r"channels: a depth task has 1, got 2"),
        ("tasks.2.threshold", 1.5, r"tasks\.2\.threshold: Input should be less than 1"),
        ("metrics", {"nope": {"x": 1.0}}, r"metrics: for unknown tasks \['nope'\]"),
        ("metrics", {"depth": {"rmse": float("nan")}}, r"metrics\.depth: non-finite"),
        ("provenance.onnx_sha256", "abc", r"provenance\.onnx_sha256: String should match pattern"),
        (
            "provenance.created_at",
            "2026-11-22T10:00:00",
            r"provenance\.created_at: Input should have timezone info",
        ),
        ("input.std", [0.2, 0.0, 0.2], r"input\.std: every std must be > 0"),
        ("input.height", 0, r"input\.height: Input should be greater than 0"),
        ("name", "Bad Name", r"name: String should match pattern"),
        ("version", 0, r"version: Input should be greater than or equal to 1"),
        ("tasks", [], r"tasks: List should have at least 1 item"),
        ("format_version", 2, r"format_version: Input should be 1"),
        ("surprise", 1, r"surprise: Extra inputs are not permitted"),
    ],
)
def test_inconsistent_manifest_is_rejected_naming_the_field(path, value, message):
    with pytest.raises(ManifestError, match=message):
        Manifest.parse(mutate(path, value))


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ManifestError, match="manifest not found"):
        Manifest.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        Manifest.load(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps(mutate("version", -1)))
    with pytest.raises(ManifestError, match=str(wrong)):
        Manifest.load(wrong)


def test_unknown_task_lists_tasks():
    with pytest.raises(ManifestError, match="unknown task 'x'; tasks: semseg, depth, tags"):
        Manifest.parse(valid()).task("x")


def test_every_training_kind_has_a_serving_kind():
    pytest.importorskip("torch")
    from training.tasks import TASK_KINDS as TRAINED

    for kind in TRAINED.names():
        assert kind in KINDS, f"training kind {kind} has no module in serving/kinds"
        assert KINDS[kind].dense == TRAINED.get(kind).dense


def test_decoded_outputs_are_checked_against_the_kind():
    raw = valid()
    seg = raw["tasks"][0]
    assert seg["kind"] == "segmentation"
    seg["decoded"] = [
        {"name": "classes", "output": "semseg.classes", "dtype": "uint8", "shape": [64, 96]}
    ]
    m = Manifest.parse(raw)
    assert m.tasks[0].decoded_output("classes") == "semseg.classes"
    assert ("semseg.classes", "uint8", (64, 96)) in m.graph_outputs
    for bad, message in [
        ({"dtype": "float16"}, "dtype is uint8"),
        ({"shape": [64, 95]}, "expected \\[64, 96\\]"),
        ({"name": "depth"}, "no decoded output 'depth'"),
        ({"output": raw["tasks"][1]["output"]}, "duplicate task outputs"),
    ]:
        broken = valid()
        broken["tasks"][0]["decoded"] = [{**seg["decoded"][0], **bad}]
        with pytest.raises(ManifestError, match=message):
            Manifest.parse(broken)
