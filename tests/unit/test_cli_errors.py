"""Errors a user can cause print one ``error: ...`` line and exit 2; help pages read cleanly.

The cases that need a trained run or an exported model are in
``tests/integration/test_cli_errors_with_a_model.py``.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from polyhead.cli import app
from tests.cli_errors import assert_user_error, one_error_line
from tests.conftest import ROOT

runner = CliRunner()

#: Typer's artefacts that must not reach a help page: value types on flags and lists, Rich
#: markup eating a "[default: ...]" (leaving a dangling " ."), RST literals from docstrings.
HELP_ARTEFACTS = {
    "a flag's or a list's type": re.compile(r"<bool>|<list\["),
    "a dangling ' .' or ' ,'": re.compile(r" [.,](?=\s|$)", re.MULTILINE),
    "RST double backticks": re.compile(r"``"),
}

#: Every command that needs the training extra, with arguments that get it past parsing.
TRAINING_COMMANDS = {
    ("train",): ["--config", "c.yaml", "--out", "run"],
    ("evaluate",): ["--run", "run"],
    ("export",): ["--run", "run"],
    ("compare",): ["run"],
    ("affinity",): ["run"],
    ("group",): ["run", "--budget", "2"],
    ("list",): ["tasks"],
    ("data", "synth"): ["--out", "data"],
    ("data", "convert"): ["--format", "nyud", "--src", "src", "--out", "data"],
}
#: Commands that run on a serving host, without torch.
SERVING_COMMANDS = {("serve",), ("score",)}

#: ``python -c`` this, then the CLI's arguments: the real CLI where ``import torch`` fails.
WITHOUT_TORCH = """
import runpy, sys
from importlib.abc import MetaPathFinder

class NoTorch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTorch())
sys.argv = ["polyhead", *sys.argv[1:]]
runpy.run_module("polyhead", run_name="__main__", alter_sys=True)
"""


def commands(group: typer.core.TyperGroup, path: tuple[str, ...] = ()):
    """Every command path of the CLI, groups included: (), ("train",), ("data", "synth"), ..."""
    yield path
    for name, cmd in group.commands.items():
        if isinstance(cmd, typer.core.TyperGroup):
            yield from commands(cmd, (*path, name))
        else:
            yield (*path, name)


ALL_COMMANDS = list(commands(typer.main.get_command(app)))


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "polyhead")
def test_help_pages_show_no_typer_or_rst_artefacts(path):
    result = runner.invoke(app, [*path, "--help"], prog_name="polyhead")
    assert result.exit_code == 0, result.output
    assert "Usage: polyhead" in result.output
    found = [what for what, pattern in HELP_ARTEFACTS.items() if pattern.search(result.output)]
    assert not found, f"{found} in\n{result.output}"


def test_every_command_is_classified_as_training_or_serving():
    leaves = {p for p in ALL_COMMANDS if p and p != ("data",)}
    assert leaves == set(TRAINING_COMMANDS) | SERVING_COMMANDS


@pytest.mark.parametrize("path", list(TRAINING_COMMANDS), ids=" ".join)
def test_a_training_command_without_torch_names_the_extra(path, tmp_path, cli_env):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, *path, *TRAINING_COMMANDS[path]],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert line == (
        f"error: `polyhead {' '.join(path)}` needs the training extra (No module named 'torch'): "
        "pip install 'polyhead[train]' (torch==2.13.0)"
    )
    assert list(tmp_path.iterdir()) == []


def test_score_runs_without_torch(tmp_path, cli_env):
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, "score", "--input", ".", "--output", "out"],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "model repository not found" in one_error_line(result.stderr)


def test_synth_into_a_dataset_suggests_overwrite(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = runner.invoke(app, ["data", "synth", "--out", str(out), "--n", "2"])
    assert_user_error(result, f"{out} exists and is not empty", "--overwrite")
    assert [p.name for p in tmp_path.iterdir()] == ["data"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_score_without_a_repository_says_so_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "images").mkdir()
    result = runner.invoke(app, ["score", "--input", "images", "--output", "scored"])
    line = assert_user_error(result, "model repository not found: model_repo", "--repo")
    assert "unknown model" not in line
    assert [p.name for p in tmp_path.iterdir()] == ["images"]


def test_score_of_an_unknown_model_leaves_no_output_folder(tmp_path):
    (tmp_path / "repo").mkdir()
    result = runner.invoke(
        app,
        [
            "score",
            "--input",
            str(ROOT),
            "--output",
            str(tmp_path / "scored"),
            "--repo",
            str(tmp_path / "repo"),
            "--model",
            "nothere",
        ],
    )
    assert_user_error(result, "unknown model 'nothere'")
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]


def test_serve_a_missing_repository_says_how_to_pass_one(tmp_path, monkeypatch):
    import uvicorn

    def never(*args, **kwargs):
        raise AssertionError("the server must not start")

    monkeypatch.setattr(uvicorn, "run", never)
    result = runner.invoke(app, ["serve", "--repo", str(tmp_path / "missing")])
    assert_user_error(result, f"model repository not found: {tmp_path / 'missing'}", "--repo")
    assert list(tmp_path.iterdir()) == []
