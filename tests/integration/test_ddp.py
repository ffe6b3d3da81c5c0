"""DistributedDataParallel: 2 CPU processes under torchrun (gloo) = 1 process on the same batch."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.conftest import ROOT, polyhead_cmd
from tests.gateway import free_port


@pytest.fixture(scope="module")
def data(tmp_path_factory, cli_env):
    path = tmp_path_factory.mktemp("ddp") / "data"
    subprocess.run(
        [*polyhead_cmd(), "data", "synth", "--out", str(path), "--n", "40", "--size", "32"],
        env=cli_env,
        check=True,
        capture_output=True,
    )
    return path


def train(cli_env, data, out, weighting: str, processes: int, *sets: str) -> None:
    args = [
        "train",
        "--config",
        str(ROOT / "configs" / "smoke.yaml"),
        "--out",
        str(out),
        "--set",
        f"data.root={data}",
        "--set",
        f"weighting={weighting}",
        "--set",
        "data.augment.hflip=false",
        *(x for value in sets for x in ("--set", value)),
    ]
    if processes == 1:
        cmd = [*polyhead_cmd(), *args]
    else:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc-per-node",
            str(processes),
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port()),
            "-m",
            "polyhead",
            *args,
        ]
    env = {**cli_env, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


# Not PCGrad: it projects onto each other task's gradient, and while the depth head starts at
# the mean depth its gradient is nearly zero, so the projection's direction is float noise: one
# process and two drift apart (1e-7 after the first step, 1e-1 after four), as two runs with
# differently summed gradients would on one process. UPGrad takes the same Gramian path
# (averaged Jacobian, weights on its rows) continuously.
@pytest.mark.parametrize(
    "weighting",
    ["{name: uncertainty}", "{name: upgrad}", "{name: famo}"],
    ids=["uncertainty", "upgrad", "famo"],
)
def test_two_gloo_processes_reach_the_weights_of_one_process(cli_env, data, tmp_path, weighting):
    train(cli_env, data, tmp_path / "one", weighting, 1)
    train(cli_env, data, tmp_path / "two", weighting, 2)
    one = load_file(str(tmp_path / "one" / "model.safetensors"))
    two = load_file(str(tmp_path / "two" / "model.safetensors"))
    assert one.keys() == two.keys()
    worst = max((one[k].float() - two[k].float()).abs().max().item() for k in one)
    assert worst < 1e-4, worst
    # rank 0 alone wrote the log: the same steps once each, and the same task weights
    lines = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if "weights" in x]
    assert steps == sorted(set(steps)) and steps
    ref = [json.loads(x) for x in (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(
        (x for x in ref if "weights" in x), (x for x in lines if "weights" in x), strict=True
    ):
        for t, w in a["weights"].items():
            assert b["weights"][t] == pytest.approx(w, rel=1e-3, abs=1e-5), (a["step"], t)


def test_two_processes_measure_the_tag_affinity_of_one(cli_env, data, tmp_path):
    """TAG through torchrun: the same measurements, logged once, summarised by rank 0."""
    every = "analysis.affinity.every_steps=3"
    train(cli_env, data, tmp_path / "one", "{name: equal}", 1, every)
    train(cli_env, data, tmp_path / "two", "{name: equal}", 2, every)

    def affinity(run):
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        logged = [x for x in lines if "affinity" in x]
        return logged, json.loads((run / "affinity_tag.json").read_text())

    (one_log, one), (two_log, two) = affinity(tmp_path / "one"), affinity(tmp_path / "two")
    assert [x["step"] for x in two_log] == [x["step"] for x in one_log] == one["steps"]
    assert two["measurements"] == one["measurements"] == len(one_log) > 0
    assert two["tasks"] == one["tasks"]
    for key in ("mean", "mean_over_lr"):
        for src, row in one[key].items():
            for dst, value in row.items():
                got = two[key][src][dst]
                assert got == pytest.approx(value, rel=1e-3, abs=1e-6), (key, src, dst)


def test_batch_not_divisible_by_the_processes_is_refused(cli_env, data, tmp_path):
    with pytest.raises(AssertionError, match="must be divisible by the 3 processes"):
        train(cli_env, data, tmp_path / "three", "{name: equal}", 3)


def test_global_batchnorm_is_plain_batchnorm_alone():
    from training.distributed import GlobalBatchNorm2d

    torch.manual_seed(0)
    bn, ref = GlobalBatchNorm2d(4), torch.nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5)
    assert torch.allclose(bn(x), ref(x))
