"""Weighting strategies and architectures survive a real kill: ``polyhead train`` is SIGKILLed
after a checkpoint, resumed, and must end with the weights of a run never killed.

Killed for real: every strategy with state or randomness of its own (DWA's loss history, FAMO's
logits, GradNorm's, IMTL's and uncertainty's learned weights, GradVac's targets, Nash-MTL's
solver re-solving every 2 steps, the random draws of RLW, PCGrad, GradDrop and GradVac), plus
equal weighting and MGDA, each paired with an architecture in turn so that every architecture is
killed too. The other seven strategies (aligned_mtl, cagrad, dualproj, fixed, gls, imtl_g,
upgrad) keep no state and draw nothing: their resume is the model's, the optimizer's and the
RNG's, exercised here by every run, and each is also checked bit-exact through a checkpoint in
``tests/unit/training/test_weighting_resume_and_scale.py``. The uninterrupted run and the
killed one run side by side (both deterministic on the CPU).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.conftest import ROOT, polyhead_cmd

pytestmark = pytest.mark.slow

KILLED = [
    "dwa", "famo", "gradnorm", "gradvac", "imtl", "nash_mtl", "pcgrad", "graddrop", "rlw",
    "uncertainty", "equal", "mgda",
]  # fmt: skip
STATELESS = ["aligned_mtl", "cagrad", "dualproj", "fixed", "gls", "imtl_g", "upgrad"]
ARCHITECTURES = ["hps", "mtan", "cross_stitch", "nddr", "padnet", "mtinet", "branched"]
PARAMS = {"nash_mtl": "{update_weights_every: 2}"}
KILL_AFTER_STEP = 3  # of 8: 2 epochs of 4 batches


@pytest.fixture(scope="module")
def data(tmp_path_factory, cli_env):
    path = tmp_path_factory.mktemp("resume_all") / "data"
    subprocess.run(
        [*polyhead_cmd(), "data", "synth", "--out", str(path), "--n", "24", "--size", "32"],
        env=cli_env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    return path


def _args(data: Path, out: Path, weighting: str, architecture: str) -> list[str]:
    params = PARAMS.get(weighting, "{}")
    return [
        "train",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--out",
        str(out),
        "--set",
        f"data.root={data}",
        "--set",
        "optim.epochs=2",
        "--set",
        "optim.batch_size=4",
        "--set",
        "run.checkpoint_every_steps=1",
        "--set",
        f"weighting={{name: {weighting}, params: {params}}}",
        "--set",
        f"model.architecture={architecture}",
    ]


def _step(out: Path) -> int:
    try:
        state = json.loads((out / "checkpoints" / "last" / "state.json").read_text())
        return state["progress"]["global_step"]
    except (OSError, ValueError, KeyError):
        return -1


def test_the_pairs_cover_every_registered_method():
    from training.models import ARCHITECTURES as REGISTERED_ARCHITECTURES
    from training.weighting import WEIGHTINGS as REGISTERED
    from training.weighting import build_weighting

    assert sorted(KILLED + STATELESS) == sorted(REGISTERED.names())
    for name in STATELESS:  # no state to carry: a checkpoint holds nothing of theirs
        weighting = build_weighting(name, ["a", "b", "c"])
        assert not weighting.state_dict(), name
    multi = [a for a in REGISTERED_ARCHITECTURES.names() if a != "single_task"]
    assert sorted(ARCHITECTURES) == sorted(multi)
    assert {ARCHITECTURES[i % len(ARCHITECTURES)] for i in range(len(KILLED))} == set(multi)


@pytest.mark.parametrize(
    ("weighting", "architecture"),
    [(w, ARCHITECTURES[i % len(ARCHITECTURES)]) for i, w in enumerate(KILLED)],
)
def test_killed_and_resumed_equals_never_killed(tmp_path, data, cli_env, weighting, architecture):
    args = {name: _args(data, tmp_path / name, weighting, architecture) for name in ("a", "b")}
    straight = subprocess.Popen(
        polyhead_cmd() + args["a"], env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    killed = subprocess.Popen(
        polyhead_cmd() + args["b"], env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 300
        while _step(tmp_path / "b") < KILL_AFTER_STEP:
            assert killed.poll() is None, killed.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.005)
        killed.send_signal(signal.SIGKILL)
        killed.wait(timeout=30)
        assert straight.wait(timeout=300) == 0, straight.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
    finally:
        for proc in (straight, killed):
            if proc.poll() is None:
                proc.kill()
    assert not (tmp_path / "b" / "model.safetensors").exists(), "finished before the kill"
    stopped_at = _step(tmp_path / "b")
    resumed = subprocess.run(
        [*polyhead_cmd(), *args["b"], "--resume"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_file(str(tmp_path / "a" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "model.safetensors"))
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k] == b[k]).all()]
    assert not different, (
        f"{weighting} on {architecture}, resumed from step {stopped_at}: "
        f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"
    )
