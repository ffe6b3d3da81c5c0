"""`polyhead evaluate --run` reports the deltas over the served tasks, not the auxiliary ones."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import training.baselines
import training.cli
import training.evaluate
from training.tasks import build_task

TASKS = [build_task("depth", "depth"), build_task("edges", "edges", auxiliary=True)]
MULTI = {"depth": {"rmse": 0.9}, "edges": {"ods_f": 0.9}}
SINGLE = {"depth": {"rmse": 1.0}, "edges": {"ods_f": 0.3}}


@pytest.fixture
def evaluate(monkeypatch, tmp_path):
    """training.cli.evaluate with the run, the data and the models replaced by fixed metrics."""

    def run_and_data(run_dir: Path, data, split):
        name = run_dir.name
        tasks = TASKS if name == "run" else [t for t in TASKS if t.name == name]
        return SimpleNamespace(tasks=tasks, model=lambda: name), None

    def evaluate_model(model, tasks, dataset, batch_size):
        source = MULTI if model == "run" else SINGLE
        return {t.name: source[t.name] for t in tasks}

    monkeypatch.setattr(training.cli, "_run_and_data", run_and_data)
    monkeypatch.setattr(training.evaluate, "evaluate_model", evaluate_model)
    monkeypatch.setattr(
        training.baselines,
        "find_baselines",
        lambda run, tasks, also=None: {t: tmp_path / t for t in tasks},
    )

    def call(out: Path) -> dict:
        training.cli.evaluate(tmp_path / "run", None, None, "test", [], 8, out)
        return json.loads(out.read_text())

    return call


def test_the_auxiliary_task_is_shown_but_left_out_of_the_deltas(evaluate, tmp_path, capsys):
    record = evaluate(tmp_path / "eval.json")
    # depth: RMSE 0.9 against 1.0 is +10%; edges (+200%) would have made it +105%
    assert record["delta_mtl"] == pytest.approx(0.1)
    assert record["delta_m"] == pytest.approx(0.1)
    assert set(record["delta_per_task"]) == {"depth"}
    assert "edges" in record["metrics"] and "edges" in record["baselines"]
    assert "+10.00%" in capsys.readouterr().out
