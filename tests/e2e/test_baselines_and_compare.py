"""train --baselines, the automatic multi-task delta in evaluate, and polyhead compare."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import ROOT, polyhead_cmd

TASKS = "tasks=[{name: depth, kind: depth}, {name: background, kind: classification}]"


def run(cli_env, *args):
    proc = subprocess.run(
        [*polyhead_cmd(), *args], env=cli_env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_baselines_delta_and_comparison(cli_env, tmp_path):
    data = tmp_path / "data"
    run(cli_env, "data", "synth", "--out", str(data), "--n", "40", "--size", "32")
    common = [
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--set",
        f"data.root={data}",
        "--set",
        TASKS,
    ]
    mtl = tmp_path / "runs" / "uncertainty"
    run(
        cli_env,
        "train",
        *common,
        "--out",
        str(mtl),
        "--baselines",
        "--set",
        "weighting={name: uncertainty}",
    )
    for task in ("depth", "background"):
        base = json.loads((mtl / "baselines" / task / "run.json").read_text())
        assert [t["name"] for t in base["tasks"]] == [task]
        assert "single_task" in (mtl / "baselines" / task / "config.yaml").read_text()
    other = tmp_path / "runs" / "pcgrad"
    run(cli_env, "train", *common, "--out", str(other), "--set", "weighting={name: pcgrad}")

    evaluated = run(cli_env, "evaluate", "--run", str(mtl))
    assert "multi-task delta" in evaluated.stdout
    record = json.loads((mtl / "eval_test.json").read_text())
    assert set(record["baselines"]) == {"depth", "background"}

    out = tmp_path / "cmp"
    run(
        cli_env,
        "compare",
        str(mtl),
        str(other),
        "--out",
        str(out),
        "--baselines",
        str(mtl / "baselines"),
    )
    table = (out / "compare.md").read_text()
    assert "| uncertainty | hps | uncertainty |" in table and "| pcgrad | hps | pcgrad |" in table
    rows = json.loads((out / "compare.json").read_text())["runs"]
    assert all(r["delta_mtl"] is not None and r["parameters"] > 0 for r in rows)
    assert all(r["delta_m"] is not None for r in rows)
    assert rows[0]["delta_mtl"] == record["delta_mtl"]
    for png in ("losses.png", "weights.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
