"""compare: the constant predictor beside every run, and baselines averaged over seeds."""

import json
import statistics

import numpy as np
import pytest

from tests.conftest import ROOT
from training.baselines import baseline_config
from training.checkpoint import save_weights
from training.compare import compare_runs, constant_lines, markdown_table, seeds_table
from training.config import load_config
from training.data.synth import write_dataset
from training.runs import WEIGHTS_FILE, build_model, write_run_files
from training.setup import check_and_build_tasks


def _row(run, miou, rmse, delta=None, below=(), latency=2.0):
    return {
        "run": run,
        "architecture": "hps",
        "weighting": "equal",
        "primary": {"seg": ["miou", miou], "depth": ["rmse", rmse]},
        "delta_mtl": delta,
        "delta_m": delta,
        "parameters": 1_500_000,
        "latency_ms_per_image": latency,
        "below_constant": list(below),
    }


CONSTANT = {
    "run": "constant",
    "architecture": "constant",
    "weighting": "-",
    "primary": {"seg": ["miou", 0.1234], "depth": ["rmse", 1.5]},
    "delta_mtl": -0.5,
    "delta_m": -0.75,
    "parameters": 0,
    "latency_ms_per_image": None,
}


def test_the_run_table_ends_with_the_constant_row():
    table = markdown_table([_row("runs/a", 0.5, 0.8, 0.1), CONSTANT], "test", "against X")
    assert "Δ against X (higher is better)" in table
    assert "| a | hps | equal | 0.5000 | 0.8000 | +10.00% | +10.00% | 1.50 | 2.0 |" in table
    assert table.rstrip().endswith(
        "| constant | constant | - | 0.1234 | 1.5000 | -50.00% | -75.00% | 0.00 |  |"
    )


def test_a_line_per_run_says_whether_it_beats_the_constant_and_where_not():
    below = {"task": "depth", "metric": "rmse", "value": 1.6, "constant": 1.5}
    lines = constant_lines([_row("runs/a", 0.5, 0.8), _row("runs/b", 0.5, 1.6, below=[below])])
    assert "- a: yes" in lines.splitlines()
    assert "- b: no: depth rmse 1.6000 (constant 1.5000)" in lines.splitlines()
    assert constant_lines([CONSTANT]) == ""  # the constant is not judged against itself


def test_the_seeds_table_shows_the_constant_without_a_spread():
    setup = {
        "runs": ["runs/hps-equal-s0", "runs/hps-equal-s1", "runs/hps-equal-s2"],
        "architecture": "hps",
        "weighting": "equal",
        "seeds": 3,
        "primary": {"seg": "miou", "depth": "rmse"},
        "metrics": {
            "seg": {"miou": {"mean": 0.5, "std": 0.01}},
            "depth": {"rmse": {"mean": 0.8, "std": 0.02}},
        },
        "delta_mtl": {"mean": 0.1, "std": 0.01},
        "delta_m": None,
    }
    table = seeds_table([setup], [CONSTANT])
    assert (
        "| hps-equal-s0 | hps | equal | 3 | 0.5000 ± 0.0100 | 0.8000 ± 0.0200 | +10.00% ± 1.00 |  |"
        in table
    )
    assert "| constant | constant | - | - | 0.1234 | 1.5000 | -50.00% | -75.00% |" in table


TASKS = [{"name": "depth", "kind": "depth"}, {"name": "normals", "kind": "normals"}]


def _untrained_run(cfg, out):
    """A run directory as the trainer leaves it, with freshly initialised weights."""
    tasks, size = check_and_build_tasks(cfg)
    write_run_files(out, cfg.model_dump(mode="json"), tasks, size, {})
    save_weights(build_model(cfg, tasks, load_weights=False), out / WEIGHTS_FILE)
    return out


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    data = write_dataset(tmp / "data", n=12, size=16, seed=0)
    runs, roots = [], []
    for seed in (0, 1):
        overrides = {"data.root": str(data), "tasks": TASKS, "run.seed": seed}
        cfg = load_config(ROOT / "configs" / "smoke.yaml", overrides)
        runs.append(_untrained_run(cfg, tmp / f"mtl-s{seed}"))
        for task in ("depth", "normals"):
            _untrained_run(baseline_config(cfg, task), tmp / f"base-s{seed}" / task)
        roots.append(tmp / f"base-s{seed}")
    out = tmp / "cmp"
    compare_runs(runs, out, baselines=roots, batch_size=4)
    return (
        data,
        out,
        json.loads((out / "compare.json").read_text()),
        (out / "compare.md").read_text(),
    )


def test_the_constant_is_fit_on_the_training_split_and_reported(compared):
    data, _, doc, table = compared
    ids = (data / "splits" / "train.txt").read_text().split()
    depths = np.concatenate([np.load(data / "depth" / f"{i}.npy").ravel() for i in ids])
    (constant,) = doc["constants"]
    assert constant["fit_split"] == "train"
    assert constant["outputs"]["depth"] == pytest.approx([float(depths.astype(float).mean())])
    assert set(constant["metrics"]) == {"depth", "normals"}
    assert "| constant | constant | - |" in table


def test_runs_are_compared_with_the_mean_of_the_baseline_seeds(compared):
    _, _, doc, table = compared
    singles = doc["single_task"]
    assert [s["seed"] for s in singles] == [0, 1]
    for task, metric in (("depth", "rmse"), ("normals", "mean_angle")):
        mean = statistics.fmean(s["metrics"][task][metric] for s in singles)
        for r in doc["runs"]:
            assert r["baselines"][task][metric] == pytest.approx(mean)
    # each baseline seed against the mean of both: the two deltas cancel out
    assert singles[0]["delta_mtl"] == pytest.approx(-singles[1]["delta_mtl"])
    assert "mean of the single-task baselines over their 2 seeds" in table


def test_every_run_and_baseline_seed_gets_a_constant_verdict_that_matches_the_json(compared):
    _, _, doc, table = compared
    lines = table.split("Beats the constant predictor")[1].split("\n\n")[1].splitlines()
    judged = doc["runs"] + doc["single_task"]
    assert len(lines) == len(judged)
    for line, r in zip(lines, judged, strict=True):
        name = r["run"].rsplit("/", 1)[-1]
        assert line.startswith(f"- {name}: ")
        assert line.endswith(": yes") == (r["below_constant"] == [])
        for b in r["below_constant"]:
            assert f"{b['task']} {b['metric']}" in line


def test_the_seeds_table_has_the_single_task_setup_and_the_constant(compared):
    _, _, doc, table = compared
    seeds = table.split("Mean ± sample standard deviation over seeds")[1]
    assert "| mtl-s0 | hps | dwa" in seeds
    assert "| base-s0 | single_task | one model per task | 2 |" in seeds
    assert "| constant | constant | - | - |" in seeds
    setups = {s["architecture"]: s for s in doc["setups"]}
    assert setups["single_task"]["delta_mtl"]["mean"] == pytest.approx(0.0, abs=1e-12)


def test_the_deltas_leave_auxiliary_tasks_out():
    from training.compare import _deltas
    from training.tasks.base import build_task

    depth = build_task("depth", "depth")
    edges = build_task("edges", "edges", auxiliary=True)
    multi = {"depth": {"rmse": 0.9}, "edges": {"ods_f": 0.1}}
    base = {"depth": {"rmse": 1.0}, "edges": {"ods_f": 0.5}}
    delta, per_task, _ = _deltas(multi, base, [depth, edges])
    assert per_task == {"depth": pytest.approx(0.1)}  # edges' -80% helps training, is not served
    assert delta == pytest.approx(0.1)
    with_edges, _, _ = _deltas(multi, base, [depth, build_task("edges", "edges")])
    assert with_edges == pytest.approx((0.1 - 0.8) / 2)
