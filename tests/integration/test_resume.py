"""A training run killed at any moment and resumed reaches the same weights as one never killed."""

import json
import signal
import subprocess
import time

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT, polyhead_cmd

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(tmp_path_factory, cli_env):
    path = tmp_path_factory.mktemp("resume") / "data"
    subprocess.run(
        [*polyhead_cmd(), "data", "synth", "--out", str(path), "--n", "56", "--size", "32"],
        env=cli_env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return path


def train_args(data, out):
    return [
        "train",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--out",
        str(out),
        "--set",
        f"data.root={data}",
        "--set",
        "optim.epochs=4",
        "--set",
        "run.checkpoint_every_steps=2",
        # uncertainty has learned state of its own: it must survive the kill too
        "--set",
        "weighting={name: uncertainty}",
    ]


def checkpoint_step(out):
    state = out / "checkpoints" / "last" / "state.json"
    try:
        return json.loads(state.read_text())["progress"]["global_step"]
    except (OSError, ValueError, KeyError):
        return -1


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data, cli_env):
    """The same run, never interrupted."""
    out = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(
        [*polyhead_cmd(), *train_args(data, out)],
        env=cli_env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return out


@pytest.mark.parametrize("kill_after_step", [3, 7])
def test_killed_run_resumes_to_identical_weights(
    tmp_path, data, cli_env, straight, kill_after_step
):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        polyhead_cmd() + train_args(data, killed),
        env=cli_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while checkpoint_step(killed) < kill_after_step:
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (killed / "model.safetensors").exists(), "the run finished instead of being killed"
    stopped_at = checkpoint_step(killed)
    assert stopped_at < 20  # 4 epochs x 5 batches: it really stopped early

    resumed = subprocess.run(
        [*polyhead_cmd(), *train_args(data, killed), "--resume"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr

    a = load_file(str(straight / "model.safetensors"))
    b = load_file(str(killed / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert not different, (
        f"resumed from step {stopped_at}: {len(different)} tensors differ, e.g. {different[:3]}"
    )

    log = [json.loads(line) for line in (killed / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in log if "val" not in r]
    assert steps == sorted(set(steps)), "metrics.jsonl has duplicated steps after resume"


def test_resume_refuses_a_changed_config(tmp_path, data, cli_env, straight):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(straight, out)
    changed = subprocess.run(
        [*polyhead_cmd(), *train_args(data, out), "--set", "optim.lr=0.1", "--resume"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert changed.returncode == 2
    assert "config differs" in changed.stderr


def test_starting_over_an_existing_run_is_refused(tmp_path, data, cli_env):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("name: x\n")
    again = subprocess.run(
        polyhead_cmd() + train_args(data, out),
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert again.returncode == 2
    assert "--resume" in again.stderr
