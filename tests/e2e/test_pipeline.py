"""The whole training-to-deployment journey through the real CLI, on a tiny dataset."""

import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from serving.kinds import get_kind, ops
from serving.manifest import Manifest
from serving.manifest.triton_config import TRITON_DTYPES, load_config
from tests.conftest import ROOT, polyhead_cmd

pytestmark = pytest.mark.slow


def run(args, env, cwd):
    result = subprocess.run(
        polyhead_cmd() + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, cli_env):
    work = tmp_path_factory.mktemp("pipeline")
    data, repo = work / "data", work / "repo"
    out = {}
    out["synth"] = run(
        ["data", "synth", "--out", str(data), "--n", "40", "--size", "32"], cli_env, work
    )
    common = ["--config", str(ROOT / "configs" / "smoke.yaml"), "--set", f"data.root={data}"]
    out["train"] = run(["train", *common, "--out", str(work / "runs" / "mt")], cli_env, work)
    out["baseline"] = run(
        [
            "train",
            *common,
            "--set",
            "tasks=[{name: depth, kind: depth}]",
            "--set",
            "weighting={name: equal}",
            "--out",
            str(work / "runs" / "depth"),
        ],
        cli_env,
        work,
    )
    out["evaluate"] = run(
        [
            "evaluate",
            "--run",
            str(work / "runs" / "mt"),
            "--baseline",
            f"depth={work / 'runs' / 'depth'}",
        ],
        cli_env,
        work,
    )
    out["export"] = run(
        ["export", "--run", str(work / "runs" / "mt"), "--repo", str(repo), "--name", "smoke"],
        cli_env,
        work,
    )
    out["export2"] = run(
        ["export", "--run", str(work / "runs" / "mt"), "--repo", str(repo), "--name", "smoke"],
        cli_env,
        work,
    )
    return work, data, repo, out


def test_synth_writes_dataset(pipeline):
    _, data, _, _ = pipeline
    meta = json.loads((data / "dataset.json").read_text())
    assert meta["count"] == 40
    assert len(list((data / "images").glob("*.png"))) == 40


def test_train_writes_run_directory(pipeline):
    work, *_ = pipeline
    run_dir = work / "runs" / "mt"
    for name in ("config.yaml", "run.json", "model.safetensors", "metrics.jsonl"):
        assert (run_dir / name).is_file(), name
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if "val" in r]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert set(epochs[-1]["val"]) == {"semseg", "depth", "normals", "edges", "shapes", "background"}


def test_evaluate_prints_table_and_delta(pipeline):
    work, _, _, out = pipeline
    assert "multi-task delta" in out["evaluate"]
    record = json.loads((work / "runs" / "mt" / "eval_test.json").read_text())
    base = record["baselines"]["depth"]["rmse"]
    mt = record["metrics"]["depth"]["rmse"]
    assert record["delta_mtl"] == pytest.approx(-(mt - base) / base)


def test_export_publishes_versions_with_contract(pipeline):
    _, _, repo, out = pipeline
    assert "published" in out["export"]
    assert sorted(p.name for p in (repo / "smoke").iterdir()) == ["1", "2", "config.pbtxt"]
    for version in (1, 2):
        m = Manifest.load(repo / "smoke" / str(version) / "manifest.json")
        assert m.version == version
        assert m.task_names == ["semseg", "depth", "normals", "edges", "shapes", "background"]
        assert set(m.metrics) == set(m.task_names)
        assert len(m.provenance.onnx_sha256) == 64
        for t in m.tasks:  # every decoded tensor with ops is in the graph
            tensors = [d.name for d in get_kind(t.kind).decoded if d.ops]
            assert [(d.name, d.output) for d in t.decoded] == [
                (n, f"{t.name}.{n}") for n in tensors
            ]
    config = load_config(repo / "smoke" / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx"
    # raw outputs first, in task order, then the decoded ones
    assert [o.name for o in config.outputs[: len(m.tasks)]] == m.output_names
    assert [(o.name, o.data_type, o.dims) for o in config.outputs] == [
        (name, TRITON_DTYPES[dtype], shape) for name, dtype, shape in m.graph_outputs
    ]
    assert {o.data_type for o in config.outputs} == {"TYPE_FP32", "TYPE_FP16", "TYPE_UINT8"}
    # readable by a server running as another user (Triton containers, non-root gateways)
    for path in (
        repo / "smoke" / "1",
        repo / "smoke" / "1" / "model.onnx",
        repo / "smoke" / "config.pbtxt",
    ):
        assert path.stat().st_mode & 0o004, path
    assert not [p for p in (repo / "smoke").iterdir() if p.name.startswith(".")], (
        "staging left behind"
    )


def test_exported_onnx_matches_manifest_and_runs_any_batch(pipeline):
    _, _, repo, _ = pipeline
    version = repo / "smoke" / "1"
    m = Manifest.load(version / "manifest.json")
    model = onnx.load(str(version / "model.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [f.name for f in version.iterdir()] == sorted([f.name for f in version.iterdir()])
    assert sorted(f.name for f in version.iterdir()) == ["manifest.json", "model.onnx"]
    sess = ort.InferenceSession(str(version / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    assert names[: len(m.tasks)] == m.output_names  # raw first, then decoded
    assert names == [name for name, _, _ in m.graph_outputs]
    for batch in (1, 3, 5):
        x = np.random.default_rng(batch).standard_normal((batch, 3, 32, 32)).astype(np.float32)
        outs = dict(zip(names, sess.run(None, {"image": x}), strict=True))
        for name, dtype, shape in m.graph_outputs:
            assert outs[name].dtype == np.dtype(dtype) and outs[name].shape == (batch, *shape)
        for task in m.tasks:
            for d in task.decoded:
                steps = get_kind(task.kind).tensor(d.name).ops
                want = ops.apply(steps, outs[task.output])
                if want.dtype == np.uint8:  # class maps: identical except at exact ties
                    scores = ops.apply(steps[: steps.index("argmax")], outs[task.output])
                    top = np.sort(scores, axis=1)
                    free = top[:, -1] == top[:, -2]
                    assert np.array_equal(outs[d.output][~free], want[~free]), d.output
                else:
                    np.testing.assert_allclose(
                        outs[d.output].astype(np.float32), want, rtol=0, atol=1e-3
                    )


def test_upgrading_a_version_that_has_decoded_outputs_is_refused(pipeline, cli_env):
    work, _, repo, _ = pipeline
    result = subprocess.run(
        [*polyhead_cmd(), "export", "--upgrade", str(repo / "smoke" / "1")],
        cwd=work,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {repo / 'smoke' / '1'} already has decoded outputs "
        "(tasks ['semseg', 'depth', 'normals', 'edges', 'shapes', 'background']): "
        "nothing to upgrade"
    ]
    assert sorted(p.name for p in (repo / "smoke").iterdir()) == ["1", "2", "config.pbtxt"]


def test_evaluate_exported_model_reproduces_manifest_metrics(pipeline, cli_env):
    work, data, repo, _ = pipeline
    target = work / "eval_onnx.json"
    run(
        [
            "evaluate",
            "--model",
            str(repo / "smoke" / "1"),
            "--data",
            str(data),
            "--out",
            str(target),
        ],
        cli_env,
        work,
    )
    fresh = json.loads(target.read_text())["metrics"]
    manifest = Manifest.load(repo / "smoke" / "1" / "manifest.json")
    for task, metrics in manifest.metrics.items():
        for name, value in metrics.items():
            assert fresh[task][name] == pytest.approx(value, rel=1e-6, abs=1e-9), (task, name)
