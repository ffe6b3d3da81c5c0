"""The demo model shipped in model_repo/ is valid, loadable and honest about its metrics."""

import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from serving.kinds import get_kind, ops
from serving.manifest import Manifest
from serving.manifest.triton_config import config_from_manifest, load_config
from tests.conftest import ROOT, polyhead_cmd

VERSION = ROOT / "model_repo" / "scenes" / "1"


@pytest.fixture(scope="module")
def manifest():
    return Manifest.load(VERSION / "manifest.json")


def test_bundled_model_is_small_and_self_contained():
    assert sorted(p.name for p in VERSION.iterdir()) == ["manifest.json", "model.onnx"]
    assert (VERSION / "model.onnx").stat().st_size < 10 * 1024 * 1024


def test_bundled_model_loads_and_outputs_are_the_manifest_tasks(manifest):
    onnx.checker.check_model(str(VERSION / "model.onnx"), full_check=True)
    sess = ort.InferenceSession(str(VERSION / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == [manifest.input.name]
    names = [o.name for o in sess.get_outputs()]
    # raw outputs first, in task order, then the decoded outputs the manifest lists
    assert names[: len(manifest.tasks)] == manifest.output_names
    assert names == [name for name, _, _ in manifest.graph_outputs]
    assert manifest.task_names == ["semseg", "depth", "normals", "edges", "shapes", "background"]
    x = np.zeros((2, 3, manifest.input.height, manifest.input.width), np.float32)
    outs = dict(zip(names, sess.run(None, {"image": x}), strict=True))
    for name, dtype, shape in manifest.graph_outputs:
        assert outs[name].dtype == np.dtype(dtype) and outs[name].shape == (2, *shape), name


def test_bundled_model_decodes_in_the_graph_as_the_cpu_decoders_do(manifest):
    for task in manifest.tasks:  # every decoded tensor with ops is in the graph
        tensors = [d.name for d in get_kind(task.kind).decoded if d.ops]
        assert [d.name for d in task.decoded] == tensors, task.name
    sess = ort.InferenceSession(str(VERSION / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    x = np.random.default_rng(0).standard_normal(
        (3, 3, manifest.input.height, manifest.input.width), dtype=np.float32
    )
    outs = dict(zip(names, sess.run(None, {"image": x}), strict=True))
    for task in manifest.tasks:
        for d in task.decoded:
            want = ops.apply(get_kind(task.kind).tensor(d.name).ops, outs[task.output])
            got = outs[d.output]
            if got.dtype == np.uint8:  # no exact ties in a trained model's logits here
                assert np.array_equal(got, want), d.output
            else:
                np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=1e-3)


def test_bundled_config_pbtxt_is_generated_from_the_manifest(manifest):
    on_disk = load_config(ROOT / "model_repo" / "scenes" / "config.pbtxt")
    expected = config_from_manifest(manifest)
    assert on_disk.name == "scenes" and on_disk.platform == "onnxruntime_onnx"
    assert on_disk.inputs == expected.inputs
    assert on_disk.outputs == expected.outputs
    assert on_disk.max_batch_size == manifest.max_batch_size


def test_bundled_sha256_matches_the_file(manifest):
    import hashlib

    assert (
        hashlib.sha256((VERSION / "model.onnx").read_bytes()).hexdigest()
        == manifest.provenance.onnx_sha256
    )


@pytest.mark.slow
def test_bundled_metrics_match_a_fresh_evaluate(manifest, tmp_path, cli_env):
    data = manifest.provenance.data
    root = tmp_path / "scenes"
    synth = [
        "data",
        "synth",
        "--out",
        str(root),
        "--n",
        str(data["count"]),
        "--size",
        str(data["image_size"][0]),
        "--seed",
        str(data["seed"]),
    ]
    subprocess.run(
        polyhead_cmd() + synth, env=cli_env, check=True, capture_output=True, timeout=600
    )
    out = tmp_path / "eval.json"
    result = subprocess.run(
        [
            *polyhead_cmd(),
            "evaluate",
            "--model",
            str(VERSION),
            "--data",
            str(root),
            "--split",
            data["split"],
            "--out",
            str(out),
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    fresh = json.loads(out.read_text())["metrics"]
    for task, metrics in manifest.metrics.items():
        for name, value in metrics.items():
            # a CPU with other SIMD kernels may round differently: agree to 1e-3
            assert fresh[task][name] == pytest.approx(value, rel=1e-3, abs=1e-4), (task, name)


def test_bundled_model_is_well_above_chance(manifest):
    m = manifest.metrics
    assert m["semseg"]["miou"] > 0.5  # chance (uniform over 5 classes) is well under 0.2
    assert m["background"]["top1"] > 0.7  # chance is 0.25
    assert m["shapes"]["map"] > 0.7
    assert m["edges"]["f1"] > 0.4
    assert m["normals"]["mean_angle"] < 20.0  # the mean normal everywhere scores ~33 degrees
    assert m["depth"]["abs_rel"] < 0.12  # the mean depth everywhere scores ~0.22
