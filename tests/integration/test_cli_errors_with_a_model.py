"""CLI errors that need a trained run or an exported model: one ``error:`` line, exit 2, and
nothing left on disk; and an export whose output is free of the libraries' logs.

One tiny run per image size (32x32 and 16x16, one epoch), shared by the module, and two exports
through the real CLI, run side by side: the 32x32 run, and the 16x16 one with ``-v --force`` next
to a 32x32 version.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polyhead.cli import app
from tests.cli_errors import assert_user_error
from tests.conftest import ROOT, polyhead_cmd

runner = CliRunner()


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (hidden ones included), with each file's bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def start_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*polyhead_cmd(), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def manifest_only_version(run_dir: Path, repo: Path, name: str) -> None:
    """Version 1 of ``repo/name``: the manifest of ``run_dir`` exported, without exporting it."""
    from training.export import build_manifest, exported_tasks, task_spec
    from training.runs import load_run

    run = load_run(run_dir)
    tasks = [task_spec(t) for t in exported_tasks(run.tasks)]
    manifest = build_manifest(run, name, 1, tasks, {}, "0" * 64, 18, {})
    (repo / name / "1").mkdir(parents=True)
    manifest.dump(repo / name / "1" / "manifest.json")


@pytest.fixture(scope="module")
def world(tmp_path_factory, cli_env):
    from training.config import load_config
    from training.data.synth import write_dataset
    from training.trainer import Trainer

    work = tmp_path_factory.mktemp("cli_errors")
    runs = {}
    for size in (32, 16):
        data = write_dataset(work / f"data{size}", n=12, size=size, seed=0)
        cfg = load_config(
            ROOT / "configs" / "smoke.yaml", {"data.root": str(data), "optim.epochs": 1}
        )
        Trainer(cfg, work / f"run{size}").fit()
        runs[size] = work / f"run{size}"
    repo, forced_repo = work / "repo", work / "forced"
    manifest_only_version(runs[32], forced_repo, "tiny")
    plain = start_cli(
        ["export", "--run", str(runs[32]), "--repo", str(repo), "--name", "tiny"], cli_env, work
    )
    forced = start_cli(
        [
            "-v",
            "export",
            "--run",
            str(runs[16]),
            "--repo",
            str(forced_repo),
            "--name",
            "tiny",
            "--force",
        ],
        cli_env,
        work,
    )
    exported, forced_export = finish(plain), finish(forced)
    assert exported.returncode == 0, exported.stderr
    return {
        "work": work,
        "runs": runs,
        "repo": repo,
        "export": exported,
        "forced_repo": forced_repo,
        "forced_export": forced_export,
    }


def test_export_output_is_free_of_library_logs(world):
    out = world["export"]
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert lines[0].startswith("parity vs PyTorch (max abs error): ")
    assert lines[-1] == f"published {world['repo'] / 'tiny' / '1'} (version 1)"
    assert not [line for line in lines if "INFO" in line or "torchvision" in line]


def test_evaluate_an_exported_model_on_another_image_size(world):
    model, data = world["repo"] / "tiny", world["work"] / "data16"
    result = runner.invoke(app, ["evaluate", "--model", str(model), "--data", str(data)])
    assert_user_error(result, f"the model takes 32x32 images, the dataset {data} is 16x16")


def test_evaluate_a_run_on_another_image_size(world, tmp_path):
    data = world["work"] / "data16"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--run",
            str(world["runs"][32]),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "eval.json"),
        ],
    )
    assert_user_error(result, f"the model takes 32x32 images, the dataset {data} is 16x16")
    assert list(tmp_path.iterdir()) == []


def test_compare_on_another_image_size_writes_no_folder(world, tmp_path):
    data = world["work"] / "data16"
    result = runner.invoke(
        app, ["compare", str(world["runs"][32]), "--data", str(data), "--out", str(tmp_path / "c")]
    )
    assert_user_error(result, "the model takes 32x32 images")
    assert list(tmp_path.iterdir()) == []


def test_an_invalid_name_is_refused_before_exporting(world, tmp_path, monkeypatch):
    import training.export

    def never(*args, **kwargs):
        raise AssertionError("exported before checking the name")

    monkeypatch.setattr(training.export, "export_with_decoded", never)
    repo = tmp_path / "repo"
    result = runner.invoke(
        app, ["export", "--run", str(world["runs"][32]), "--repo", str(repo), "--name", "Scenes"]
    )
    assert_user_error(result, "invalid model name 'Scenes'", "'scenes'")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_no_folder_behind(world, tmp_path, monkeypatch):
    import training.export
    from training.errors import ExportError

    def fail(model, names, run, path):
        path.write_bytes(b"half a model")
        raise ExportError("the exporter failed")

    monkeypatch.setattr(training.export, "export_with_decoded", fail)
    repo = tmp_path / "a" / "repo"
    result = runner.invoke(
        app, ["export", "--run", str(world["runs"][32]), "--repo", str(repo), "--name", "m"]
    )
    assert_user_error(result, "the exporter failed")
    assert list(tmp_path.iterdir()) == []
    before = tree(world["repo"])
    result = runner.invoke(
        app,
        ["export", "--run", str(world["runs"][32]), "--repo", str(world["repo"]), "--name", "tiny"],
    )
    assert_user_error(result, "the exporter failed")
    assert tree(world["repo"]) == before


def test_a_version_of_another_input_size_is_refused(world):
    before = tree(world["repo"])
    result = runner.invoke(
        app,
        ["export", "--run", str(world["runs"][16]), "--repo", str(world["repo"]), "--name", "tiny"],
    )
    assert_user_error(
        result,
        "takes 16x16 images, but version 1 takes 32x32",
        "config.pbtxt",
        "under Triton",
        "--force",
    )
    assert tree(world["repo"]) == before


def test_force_publishes_another_size_and_verbose_shows_library_logs(world):
    result, repo = world["forced_export"], world["forced_repo"]
    assert result.returncode == 0, result.stderr
    assert "takes 16x16 images, but version 1 takes 32x32" in result.stderr
    assert "(publishing anyway: --force)" in result.stderr
    assert "onnxscript" in result.stderr or "onnx_ir" in result.stderr
    assert (repo / "tiny" / "2" / "model.onnx").is_file()
