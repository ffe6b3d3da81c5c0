"""polyhead affinity and polyhead group on a tiny run: RSA from its baselines, TAG from training."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from polyhead.cli import app
from tests.cli_errors import assert_user_error
from tests.conftest import ROOT, polyhead_cmd

runner = CliRunner()

TASKS = (
    "tasks=[{name: semseg, kind: segmentation}, {name: depth, kind: depth}, "
    "{name: background, kind: classification}, {name: edges, kind: edges, auxiliary: true}]"
)
NAMES = ["semseg", "depth", "background", "edges"]
SERVED = ["semseg", "depth", "background"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cli_env) -> Path:
    from training.data.synth import write_dataset

    root = tmp_path_factory.mktemp("affinity")
    data = write_dataset(root / "data", n=50, size=32, seed=0)
    run = root / "run"
    args = [
        *("train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(run)),
        *("--set", f"data.root={data}", "--set", TASKS, "--set", "optim.epochs=1"),
        *("--set", "run.limit_train_batches=2", "--set", "analysis={affinity: {every_steps: 1}}"),
        "--baselines",  # one single-task run per task, the auxiliary one too, without affinity
    ]
    proc = subprocess.run(
        [*polyhead_cmd(), *args], env=cli_env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "affinity_tag.json").is_file()  # measured by the trainer
    assert all((run / "baselines" / t / "model.safetensors").is_file() for t in NAMES)
    return run


def bare_copy(run: Path, to: Path) -> Path:
    """The run without its baselines, its TAG file or anything the commands wrote."""
    skip = shutil.ignore_patterns("baselines", "affinity_tag.*", "affinity", "grouping")
    shutil.copytree(run, to, ignore=skip)
    return to


def invoke(*args: str):
    result = runner.invoke(app, list(args), prog_name="polyhead")
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def test_affinity_prints_and_writes_rsa_per_stage_and_tag(tiny_run):
    result = invoke("affinity", str(tiny_run))
    out = result.stdout
    assert "RSA affinity" in out and "stage 3" in out and "TAG affinity" in out
    assert "auxiliary edges: TAG onto semseg" in out and "RSA similarity" in out

    record = json.loads((tiny_run / "affinity" / "affinity.json").read_text())
    assert record["tasks"] == NAMES and record["auxiliary"] == ["edges"]
    rsa = record["rsa"]
    assert rsa["tasks"] == NAMES and rsa["split"] == "val" and rsa["images"] >= 3
    assert len(rsa["image_ids"]) == rsa["images"]
    assert [s["stage"] for s in rsa["stages"]] == [0, 1, 2, 3]
    for stage in rsa["stages"]:
        m = np.array(stage["matrix"])
        assert m.shape == (4, 4)
        np.testing.assert_array_equal(m, m.T)
        np.testing.assert_array_equal(np.diag(m), 1.0)
        assert np.all(np.abs(m) <= 1.0)
    tag = record["tag"]
    assert tag["tasks"] == NAMES and tag["measurements"] == 2 and tag["every_steps"] == 1
    assert np.array(tag["matrix"]).shape == (4, 4)
    helps = record["auxiliary_help"]["edges"]
    assert set(helps["tag"]) == set(SERVED) and set(helps["rsa_mean_over_stages"]) == set(SERVED)
    assert helps["helps"] == (helps["tag_mean"] > 0)

    assert record["figures"] == [f"rsa_stage{s}.png" for s in range(4)] + ["tag.png"]
    for name in record["figures"]:
        with Image.open(tiny_run / "affinity" / name) as im:
            assert im.format == "PNG" and im.width > 0 and im.height > 0
            im.load()


def test_affinity_without_baselines_reports_tag_alone(tiny_run, tmp_path):
    run = bare_copy(tiny_run, tmp_path / "tag_only")
    shutil.copy(tiny_run / "affinity_tag.json", run / "affinity_tag.json")
    result = invoke("affinity", str(run))
    assert "TAG affinity" in result.stdout and "RSA affinity" not in result.stdout
    record = json.loads((run / "affinity" / "affinity.json").read_text())
    assert record["rsa"] is None and record["figures"] == ["tag.png"]
    assert "rsa_mean_over_stages" not in record["auxiliary_help"]["edges"]


def check_configs(run: Path, out: Path, grouping: dict) -> None:
    """Every written config parses and builds; each served task is served by one group."""
    from training.config import load_config
    from training.runs import build_model, load_run

    tasks = {t.name: t for t in load_run(run).tasks}
    chosen = grouping["chosen"]
    paths = sorted(out.glob("group_*.yaml"))
    assert len(paths) == chosen["trunks"] == len(chosen["groups"])
    served = []
    for path, group in zip(paths, chosen["groups"], strict=True):
        cfg = load_config(path)
        assert cfg.task_names == group["tasks"]
        assert cfg.model.architecture == "hps"  # as in the run
        served += [t.name for t in cfg.tasks if not t.auxiliary]
        assert [t.name for t in cfg.tasks if not t.auxiliary] == group["serves"]
    assert sorted(served) == sorted(SERVED)
    branched = load_config(out / "branched.yaml")
    assert branched.model.architecture == "branched"
    assert [
        list(e) for e in yaml.safe_load((out / "branched.yaml").read_text())["model"]["branches"]
    ] == grouping["branched"]["branches"]
    assert set(SERVED) <= set(branched.task_names)
    kinds = [tasks[n] for n in branched.task_names]
    model = build_model(branched, kinds, load_weights=False)
    assert sum(p.numel() for p in model.parameters()) == grouping["branched"]["cost"]["params"]


def test_group_by_tag_proposes_groups_and_writes_configs(tiny_run, tmp_path):
    out = tmp_path / "by_tag"
    result = invoke("group", str(tiny_run), "--budget", "2", "--out", str(out))
    text = result.stdout
    assert "grouping by TAG" in text and "partition:" in text and "selection:" in text
    assert "wrote" in text and "branched.yaml" in text
    grouping = json.loads((out / "grouping.json").read_text())
    assert grouping["method"] == "tag" and grouping["budget"] == 2
    assert [s["criterion"] for s in grouping["searches"]] == ["partition", "selection"]
    assert grouping["searches"][0]["visited"] == 4  # 3 served tasks: S(3,1) + S(3,2)
    for s in grouping["searches"]:
        assert set(s["best"]) <= {"1", "2"}
        for proposal in s["best"].values():
            assert set(proposal["predicted"]) == set(SERVED)
            assert proposal["cost"]["params"] > 0 and proposal["relative_to_hps"]["macs"] > 0
    one = grouping["searches"][0]["best"]["1"]
    assert one["trunks"] == 1 and one["relative_to_hps"]["params"] == pytest.approx(1.0, abs=0.05)
    # RSA is there (baselines): the branched config's split points come from it
    assert "RSA" in grouping["branched"]["how"]
    assert grouping["branched"]["relative_to_hps"]["macs"] <= 2.0 + 1e-9
    check_configs(tiny_run, out, grouping)


def test_group_by_rsa_with_a_baselines_folder(tiny_run, tmp_path):
    bare = bare_copy(tiny_run, tmp_path / "bare")
    out = tmp_path / "by_rsa"
    args = ["--budget", "2", "--method", "rsa", "--criterion", "partition", "--out", str(out)]
    result = invoke("group", str(bare), *args, "--baselines", str(tiny_run / "baselines"))
    assert "grouping by RSA" in result.stdout
    grouping = json.loads((out / "grouping.json").read_text())
    assert grouping["method"] == "rsa" and grouping["chosen"]["criterion"] == "partition"
    assert grouping["layerwise_tree"] is not None  # every task has a baseline
    check_configs(bare, out, grouping)


def test_what_a_user_can_get_wrong_is_one_line(tiny_run, tmp_path):
    bare = bare_copy(tiny_run, tmp_path / "bare")
    cases = [
        (["group", str(tiny_run), "--budget", "0"], "at least 1"),
        (["group", str(bare), "--budget", "2", "--method", "tag"], "no affinity_tag.json"),
        (["group", str(bare), "--budget", "2", "--method", "rsa"], "no single-task baselines"),
        (["affinity", str(bare)], "train the run with --baselines"),
        (["group", str(tiny_run), "--budget", "2", "--method", "cka"], "unknown --method"),
        (["affinity", str(tiny_run), "--images", "2"], "--images must be at least 3"),
        (["affinity", str(tmp_path / "nothing")], "is not a run directory"),
    ]
    for args, fragment in cases:
        assert_user_error(runner.invoke(app, args, prog_name="polyhead"), fragment)
    assert not (bare / "grouping").exists() and not (bare / "affinity").exists()


def test_more_tasks_than_the_exact_search_handles_is_one_line(tmp_path):
    run = tmp_path / "wide"
    run.mkdir()
    tasks = [{"name": f"e{i}", "kind": "edges"} for i in range(11)]
    config = {"data": {"root": str(tmp_path / "data")}, "tasks": tasks}
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    meta = {"tasks": [{**t, "labels": None} for t in tasks], "input_size": [32, 32]}
    (run / "run.json").write_text(json.dumps(meta))
    result = runner.invoke(app, ["group", str(run), "--budget", "2"], prog_name="polyhead")
    assert_user_error(result, "at most 10 tasks", "has 11")
