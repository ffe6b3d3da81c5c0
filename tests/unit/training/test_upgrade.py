"""Upgrading a version exported without decoded outputs: same weights, decoded outputs added."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from polyhead.cli import app
from serving.manifest import InputSpec, Manifest, Provenance
from serving.manifest.triton_config import config_from_manifest, load_config
from training.errors import ExportError
from training.export import export_onnx, task_spec
from training.models import ARCHITECTURES, build_backbone
from training.tasks import build_task
from training.upgrade import check_inputs, publish_upgrade, upgrade_version

SIZE = (32, 32)
KINDS = ["segmentation", "depth", "normals", "edges", "multilabel", "classification"]


@pytest.fixture(scope="module")
def old_version(tmp_path_factory) -> Path:
    """``repo/tiny/1``: a small model exported as before graph decoding, and its manifest."""
    labelled = {"segmentation", "classification", "multilabel"}
    tasks = [build_task(f"t_{k}", k, ("a", "b", "c") if k in labelled else None) for k in KINDS]
    torch.manual_seed(0)
    model = ARCHITECTURES.get("hps")(build_backbone("resnet18", width=4), tasks, neck_channels=8)
    version = tmp_path_factory.mktemp("repo") / "tiny" / "1"
    version.mkdir(parents=True)
    export_onnx(model.eval(), [t.name for t in tasks], SIZE, version / "model.onnx", 18)
    manifest = Manifest(
        name="tiny",
        version=1,
        input=InputSpec(height=SIZE[0], width=SIZE[1], mean=(0.5,) * 3, std=(0.25,) * 3),
        tasks=[task_spec(t) for t in tasks],
        max_batch_size=4,
        provenance=Provenance(
            config={"export": {"opset": 18, "max_queue_delay_microseconds": 700}},
            data={"root": "nowhere"},
            created_at=datetime(2026, 1, 2, tzinfo=UTC),
            onnx_sha256=hashlib.sha256((version / "model.onnx").read_bytes()).hexdigest(),
            opset=18,
            exporter="torch.onnx (dynamo)",
            framework=f"torch {torch.__version__}",
            polyhead_version="test",
        ),
    )
    manifest.dump(version / "manifest.json")
    return version


def copy_repo(version: Path, tmp_path: Path) -> Path:
    shutil.copytree(version.parent.parent, tmp_path / "repo")
    return tmp_path / "repo" / "tiny" / "1"


def test_upgrade_keeps_raw_outputs_bit_identical_and_adds_decoded(old_version, tmp_path):
    result = upgrade_version(old_version, tmp_path / "up")
    old = Manifest.load(old_version / "manifest.json")
    new = Manifest.load(tmp_path / "up" / "manifest.json")
    assert new == result.manifest
    assert sorted(p.name for p in (tmp_path / "up").iterdir()) == ["manifest.json", "model.onnx"]
    assert result.raw_max_abs_diff == dict.fromkeys(old.output_names, 0.0)
    assert all(a.max_abs_error <= 1e-3 for a in result.decoded.values())

    # the same manifest but for the decoded outputs and the file's hash
    assert [t.model_copy(update={"decoded": []}) for t in new.tasks] == old.tasks
    assert (
        [d.output for t in new.tasks for d in t.decoded]
        == list(result.decoded)
        == [
            "t_segmentation.classes",
            "t_depth.depth",
            "t_normals.normals",
            "t_edges.probability",
            "t_multilabel.probabilities",
            "t_classification.probabilities",
        ]
    )
    sha = hashlib.sha256((tmp_path / "up" / "model.onnx").read_bytes()).hexdigest()
    assert new.provenance == old.provenance.model_copy(update={"onnx_sha256": sha})
    assert new.model_copy(update={"tasks": old.tasks, "provenance": old.provenance}) == old

    before = ort.InferenceSession(str(old_version / "model.onnx"))
    after = ort.InferenceSession(str(tmp_path / "up" / "model.onnx"))
    assert [o.name for o in after.get_outputs()] == [n for n, _, _ in new.graph_outputs]
    for batch in (1, 3):
        x = np.random.default_rng(batch + 10).standard_normal((batch, 3, *SIZE), np.float32)
        old_out = before.run(None, {"image": x})
        new_out = after.run(None, {"image": x})
        for a, b in zip(old_out, new_out[: len(old_out)], strict=True):
            assert a.tobytes() == b.tobytes()
        for out, (_, dtype, shape) in zip(new_out, new.graph_outputs, strict=True):
            assert out.dtype == np.dtype(dtype) and out.shape == (batch, *shape)


def test_check_inputs_are_at_batch_1_and_3(old_version):
    batches = check_inputs(Manifest.load(old_version / "manifest.json"))
    assert sorted({b.shape[0] for b in batches}) == [1, 3]
    assert all(b.dtype == np.float32 and b.shape[1:] == (3, *SIZE) for b in batches)


def test_a_version_with_decoded_outputs_is_refused(old_version, tmp_path):
    upgrade_version(old_version, tmp_path / "up")
    with pytest.raises(ExportError, match="already has decoded outputs"):
        upgrade_version(tmp_path / "up", tmp_path / "again")
    assert not (tmp_path / "again").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("no model", r"is not a model version: model\.onnx is missing"),
        ("no manifest", r"is not a model version: manifest\.json is missing"),
        ("other model", r"does not match the sha256 in its manifest"),
        ("not a dir", r"model version not found"),
    ],
)
def test_a_broken_version_is_refused(old_version, tmp_path, damage, message):
    version = copy_repo(old_version, tmp_path)
    if damage == "no model":
        (version / "model.onnx").unlink()
    elif damage == "no manifest":
        (version / "manifest.json").unlink()
    elif damage == "other model":
        with open(version / "model.onnx", "ab") as f:
            f.write(b"\0")
    else:
        version = version / "missing"
    with pytest.raises(ExportError, match=message):
        upgrade_version(version, tmp_path / "up")


def test_a_non_empty_destination_is_refused(old_version, tmp_path):
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="must be an empty or missing directory"):
        upgrade_version(old_version, tmp_path / "up")
    assert [p.name for p in (tmp_path / "up").iterdir()] == ["notes.txt"]


def test_publish_upgrade_adds_the_next_version_and_its_triton_config(old_version, tmp_path):
    version = copy_repo(old_version, tmp_path)
    number, path, result = publish_upgrade(version)
    assert (number, path) == (2, version.parent / "2")
    m = Manifest.load(path / "manifest.json")
    assert (
        m.version == 2
        and m.name == "tiny"
        and m == result.manifest.model_copy(update={"version": 2})
    )
    config = load_config(version.parent / "config.pbtxt")
    assert config == config_from_manifest(m, max_queue_delay_microseconds=700)
    types = {o.name: o.data_type for o in config.outputs}
    assert types["t_segmentation"] == "TYPE_FP32"
    assert types["t_segmentation.classes"] == "TYPE_UINT8"
    assert types["t_normals.normals"] == "TYPE_FP16"
    assert types["t_classification.probabilities"] == "TYPE_FP32"
    assert not [p for p in version.parent.iterdir() if p.name.startswith(".")], "staging left"


def test_cli_upgrade_publishes_and_user_errors_exit_2(old_version, tmp_path):
    version = copy_repo(old_version, tmp_path)
    runner = CliRunner()
    ok = runner.invoke(app, ["export", "--upgrade", str(version)])
    assert ok.exit_code == 0, ok.output
    assert "published" in ok.output and "t_depth=0.00e+00" in ok.output
    assert json.loads((version.parent / "2" / "manifest.json").read_text())["version"] == 2

    for args, message in [
        (["--upgrade", str(version.parent / "2")], "already has decoded outputs"),
        (["--upgrade", str(version.parent / "7")], "model version not found"),
        (["--upgrade", str(version.parent)], "VERSION a number >= 1"),
        (["--upgrade", str(version), "--name", "x"], "drop --name"),
        ([], "give --run RUN_DIR"),
    ]:
        result = runner.invoke(app, ["export", *args])
        assert result.exit_code == 2, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert sorted(p.name for p in version.parent.iterdir()) == ["1", "2", "config.pbtxt"]
