"""Inter-task affinity (TAG): what it measures, that measuring leaves training alone, resume, DDP."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from training import distributed
from training.analysis.tag import AffinityMean, AffinityTracker, inter_task_affinity, task_loss_fn
from training.config import load_config, parse_config
from training.errors import ConfigError
from training.models import ARCHITECTURES, MultiTaskModel, MultiTaskOutput, build_backbone
from training.tasks import build_task

ROOT = Path(__file__).resolve().parents[3]


# --- a constructed problem: a and b regress the same target, c its negative -----------------


class Offset(nn.Module):
    """A task's own parameter: an offset, so no head can flip the sign of the shared prediction."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.bias


class SharedRegressor(MultiTaskModel):
    """One shared scalar prediction (conv, BatchNorm, pooling, linear) plus each task's offset."""

    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.tasks = {n: build_task(n, "depth") for n in names}
        self.trunk = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, 1),
        )
        self.heads = nn.ModuleDict({n: Offset() for n in names})

    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        h = self.trunk(x)
        out = MultiTaskOutput()
        for n in self.tasks:
            out[n] = self.heads[n](h)
        out.shared = [h]
        return out


def mse(out: MultiTaskOutput, targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {t: ((out[t] - y) ** 2).mean() for t, y in targets.items()}


def regression_problem(n: int = 32) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = (x[:, 0].mean((1, 2)) - x[:, 1].mean((1, 2))).unsqueeze(1)
    y = y / y.std()
    return x, {"a": y, "b": y.clone(), "c": -y}


def test_tasks_sharing_a_target_help_each_other_and_a_conflicting_one_hurts():
    torch.manual_seed(0)
    model = SharedRegressor(["a", "b", "c"]).train()
    x, targets = regression_problem()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    mean = AffinityMean(["a", "b", "c"])
    for _ in range(5):
        mean.add(inter_task_affinity(model, x, targets, mse, model.shared_parameters(), 0.05))
        optimizer.zero_grad()
        sum(mse(model(x), targets).values()).backward()
        optimizer.step()
    z = mean.mean().to_dict()
    assert z["a"]["b"] > 0.01 and z["b"]["a"] > 0.01
    assert z["a"]["c"] < -0.01 and z["c"]["a"] < -0.01
    assert min(z["a"]["b"], z["b"]["a"]) > max(z["a"]["c"], z["c"]["a"])
    assert z["a"]["b"] == pytest.approx(z["a"]["a"], rel=1e-5)  # b is a: a helps it as itself


# --- every registered architecture: the definition, computed from scratch ---------------------

MULTI_TASK = [a for a in ARCHITECTURES.names() if a != "single_task"]


def tiny_tasks() -> list:
    return [
        build_task("seg", "segmentation", ("x", "y", "z")),
        build_task("depth", "depth"),
        build_task("edges", "edges", auxiliary=True),
        build_task("label", "classification", ("p", "q", "r")),
    ]


def tiny_model(arch: str = "hps") -> MultiTaskModel:
    torch.manual_seed(0)
    arch_cls = ARCHITECTURES.get(arch)
    return arch_cls(build_backbone("resnet18", 4), tiny_tasks(), neck_channels=8).train()  # type: ignore[call-arg]


def tiny_batch(n: int = 4, size: int = 32) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    image = torch.randn(n, 3, size, size, generator=g)
    targets = {
        "seg": torch.randint(0, 3, (n, size, size), generator=g),
        "depth": torch.rand(n, 1, size, size, generator=g) + 0.5,
        "edges": (torch.rand(n, 1, size, size, generator=g) > 0.8).float(),
        "label": torch.randint(0, 3, (n,), generator=g),
    }
    return image, targets


def losses_of(model: MultiTaskModel):
    return task_loss_fn(model.tasks, list(model.tasks))


def from_scratch(model, image, targets, loss_fn, lr) -> dict[str, dict[str, float]]:
    """Z by the definition: a copy per task, an SGD step by hand on its shared parameters."""
    before = {t: v.item() for t, v in loss_fn(copy.deepcopy(model)(image), targets).items()}
    z = {}
    for i in before:
        m = copy.deepcopy(model)
        shared = m.shared_parameters()
        grads = torch.autograd.grad(loss_fn(m(image), targets)[i], shared, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(shared, grads, strict=True):
                if g is not None:
                    p -= lr * g
            after = loss_fn(m(image), targets)
        z[i] = {j: 1.0 - float(after[j]) / before[j] for j in before}
    return z


@pytest.mark.parametrize("arch", MULTI_TASK)
def test_affinity_is_the_definition_and_leaves_the_model_as_it_was(arch):
    model = tiny_model(arch)
    image, targets = tiny_batch()
    state = {k: v.clone() for k, v in model.state_dict().items()}  # parameters and buffers
    rng = torch.get_rng_state()
    loss_fn = losses_of(model)
    z = inter_task_affinity(model, image, targets, loss_fn, model.shared_parameters(), 0.05)

    assert z.tasks == ("seg", "depth", "edges", "label")  # the auxiliary task included
    after = model.state_dict()
    changed = [k for k in state if not torch.equal(state[k], after[k])]
    assert not changed, changed  # bit-identical, BatchNorm running stats and counts included
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None for p in model.parameters())

    reference = from_scratch(model, image, targets, loss_fn, 0.05)
    got = z.to_dict()
    for i in reference:
        for j in reference[i]:
            assert got[i][j] == pytest.approx(reference[i][j], abs=1e-6), (i, j)
    assert any(abs(v) > 1e-3 for row in reference.values() for v in row.values())  # not all 0


def test_the_step_after_measuring_gets_the_gradients_it_would_have_had():
    model = tiny_model()
    twin = copy.deepcopy(model)
    image, targets = tiny_batch()
    loss_fn = losses_of(model)
    losses = loss_fn(model(image), targets)  # the step's forward; the measurement reuses it
    inter_task_affinity(
        model, image, targets, loss_fn, model.shared_parameters(), 0.05, losses=losses
    )
    assert all(p.grad is None for p in model.parameters())
    sum(losses.values()).backward()
    sum(loss_fn(twin(image), targets).values()).backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters(), strict=True):
        assert (p.grad is None) == (q.grad is None), name
        assert p.grad is None or torch.equal(p.grad, q.grad), name
    for (name, b), c in zip(model.named_buffers(), twin.buffers(), strict=True):
        assert torch.equal(b, c), name


def test_one_task_has_no_affinity_to_measure():
    torch.manual_seed(0)
    model = SharedRegressor(["a"])
    x, targets = regression_problem()
    with pytest.raises(ValueError, match="at least two"):
        inter_task_affinity(model, x, {"a": targets["a"]}, mse, model.shared_parameters(), 0.1)


# --- the AMP path's pieces, on the CPU (the trainer's float16 autocast and GradScaler need CUDA) --


def test_a_loss_scale_gives_the_affinity_of_the_unscaled_loss():
    torch.manual_seed(0)
    model = SharedRegressor(["a", "b", "c"]).train()
    x, targets = regression_problem()
    plain = inter_task_affinity(model, x, targets, mse, model.shared_parameters(), 0.05)
    scaled = inter_task_affinity(
        model, x, targets, mse, model.shared_parameters(), 0.05, grad_scale=2.0**16
    )
    assert torch.allclose(scaled.matrix, plain.matrix, rtol=1e-4, atol=1e-7)
    assert plain.matrix.abs().max() > 1e-3


def test_a_task_whose_scaled_gradient_overflows_leaves_its_row_undefined():
    # under AMP, as GradScaler skips a step whose gradients are not finite
    torch.manual_seed(0)
    model = SharedRegressor(["a", "b", "c"]).train()
    x, targets = regression_problem()
    targets["c"] = targets["c"] * 1e18  # its loss is ~1e36: times the scale, inf in float32
    z = inter_task_affinity(
        model, x, targets, mse, model.shared_parameters(), 0.05, grad_scale=2.0**16
    ).to_dict()
    assert all(v is None for v in z["c"].values())
    assert all(z[i][j] is not None for i in ("a", "b") for j in ("a", "b"))
    assert all(p.grad is None for p in model.parameters())


def test_the_forwards_run_in_the_autocast_context_it_is_given():
    torch.manual_seed(0)
    model = SharedRegressor(["a", "b", "c"]).train()
    x, targets = regression_problem()
    entered: list[torch.dtype] = []

    def bfloat16():
        entered.append(torch.bfloat16)
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def dtypes(out: MultiTaskOutput, y: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        entered.append(out.shared[0].dtype)
        return mse(out, y)

    low = inter_task_affinity(
        model, x, targets, dtypes, model.shared_parameters(), 0.05, autocast=bfloat16
    )
    # one forward before, one after each task's step; each under autocast, in bfloat16
    assert entered == [torch.bfloat16, torch.bfloat16] * 4
    full = inter_task_affinity(model, x, targets, mse, model.shared_parameters(), 0.05)
    assert not torch.equal(low.matrix, full.matrix)
    assert torch.allclose(low.matrix, full.matrix, atol=0.05 * float(full.matrix.abs().max()))


def test_the_mean_leaves_out_only_the_entries_a_measurement_left_undefined():
    mean = AffinityMean(["a", "b"])
    mean.add({"a": {"a": 1.0, "b": None}, "b": {"a": 2.0, "b": 4.0}})
    mean.add({"a": {"a": 3.0, "b": 5.0}, "b": {"a": 2.0, "b": float("nan")}})
    assert mean.mean().to_dict() == {"a": {"a": 2.0, "b": 5.0}, "b": {"a": 2.0, "b": 4.0}}
    assert AffinityMean(["a", "b"]).mean().to_dict()["a"]["b"] is None


def test_every_k_steps_counts_optimizer_steps_from_one():
    tracker = AffinityTracker(tiny_tasks(), 3, None, mse)
    assert [s for s in range(1, 10) if tracker.due(s)] == [3, 6, 9]


# --- the config section ------------------------------------------------------------------------

BASE = {
    "data": {"root": "data/x"},
    "tasks": [{"name": "semseg", "kind": "segmentation"}, {"name": "depth", "kind": "depth"}],
}


def test_affinity_is_off_by_default_and_configured_by_its_section():
    assert parse_config(BASE).analysis.affinity is None
    cfg = parse_config(BASE | {"analysis": {"affinity": {"every_steps": 5, "lr": None}}})
    assert (cfg.analysis.affinity.every_steps, cfg.analysis.affinity.lr) == (5, None)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"every_steps": 0}, r"analysis\.affinity\.every_steps: Input should be greater than"),
        ({"every_steps": 2, "lr": 0}, r"analysis\.affinity\.lr: Input should be greater than 0"),
        ({"every_step": 2}, r"analysis\.affinity\.every_step: Extra inputs are not permitted"),
        ({"lr": 0.01}, r"analysis\.affinity: lr is set but every_steps is not"),
    ],
)
def test_bad_affinity_settings_are_rejected_naming_the_field(section, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(BASE | {"analysis": {"affinity": section}})


# --- in training: the log, the summary, no effect on training, resume ------------------------

TASKS = [
    {"name": "semseg", "kind": "segmentation"},
    {"name": "depth", "kind": "depth"},
    {"name": "edges", "kind": "edges", "auxiliary": True},
]
STEPS = 6  # 3 epochs of 2 batches


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from training.data.synth import write_dataset

    root = tmp_path_factory.mktemp("tag") / "data"
    write_dataset(root, n=24, size=32, seed=0, workers=1)
    return root


def run_config(data, **overrides):
    over = {"data.root": str(data), "tasks": TASKS, "optim.epochs": 3} | overrides
    return load_config(ROOT / "configs" / "smoke.yaml", over)


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def measured(data, tmp_path_factory):
    from training.trainer import Trainer

    out = tmp_path_factory.mktemp("measured") / "run"
    Trainer(run_config(data, **{"analysis.affinity.every_steps": 1}), out).fit()
    return out


def test_a_run_logs_each_measurement_and_summarises_their_mean(measured):
    logged = [r for r in records(measured) if "affinity" in r]
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1))
    names = [t["name"] for t in TASKS]
    assert all(
        list(r["affinity"]) == names and list(r["affinity"]["depth"]) == names for r in logged
    )

    summary = json.loads((measured / "affinity_tag.json").read_text())
    assert summary["tasks"] == names and summary["auxiliary"] == ["edges"]
    assert (summary["measurements"], summary["every_steps"], summary["lr"]) == (STEPS, 1, None)
    expected = AffinityMean(names)
    for r in logged:
        expected.add(r["affinity"])
    assert summary["mean"] == expected.mean().to_dict()
    assert all(v is not None for row in summary["mean"].values() for v in row.values())
    assert all(summary["mean"][t][t] > 0 for t in names)  # a task's own step helps it
    cost = summary["cost"]
    assert 0 < cost["affinity_seconds"] < cost["train_seconds"]
    assert cost["overhead"] == pytest.approx(
        cost["affinity_seconds"] / (cost["train_seconds"] - cost["affinity_seconds"])
    )


def test_measuring_does_not_perturb_training(measured, data, tmp_path):
    from training.trainer import Trainer

    Trainer(run_config(data), tmp_path / "plain").fit()
    a = load_file(str(measured / "model.safetensors"))
    b = load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    assert [r for r in records(measured) if "affinity" not in r] == records(tmp_path / "plain")
    assert not (tmp_path / "plain" / "affinity_tag.json").exists()


def test_a_killed_and_resumed_run_has_the_mean_of_one_never_killed(
    measured, data, tmp_path, monkeypatch
):
    from training.trainer import Trainer

    cfg = run_config(data, **{"analysis.affinity.every_steps": 1})
    out = tmp_path / "killed"
    step = Trainer.step

    def dies_at_step_six(self, batch):
        # the checkpoint is step 4's (an epoch end): step 5's records are logged past it
        if self.progress.global_step == 5:
            raise RuntimeError("killed")
        return step(self, batch)

    monkeypatch.setattr(Trainer, "step", dies_at_step_six)
    with pytest.raises(RuntimeError, match="killed"):
        Trainer(cfg, out).fit()
    assert [r["step"] for r in records(out) if "affinity" in r] == [1, 2, 3, 4, 5]
    monkeypatch.setattr(Trainer, "step", step)
    Trainer(cfg, out, resume=True).fit()

    assert [r["step"] for r in records(out) if "affinity" in r] == list(range(1, STEPS + 1))
    straight = json.loads((measured / "affinity_tag.json").read_text())
    resumed = json.loads((out / "affinity_tag.json").read_text())
    assert resumed["measurements"] == STEPS and resumed["cost"]["measurements"] == 2
    assert resumed["mean"] == straight["mean"]
    assert resumed["mean_over_lr"] == straight["mean_over_lr"]


def test_a_run_of_one_task_refuses_to_measure_affinity(data, tmp_path):
    from training.trainer import Trainer

    cfg = run_config(data, tasks=TASKS[:1], **{"analysis.affinity.every_steps": 1})
    with pytest.raises(ConfigError, match=r"analysis\.affinity: .* between tasks"):
        Trainer(cfg, tmp_path / "one")


# --- DDP: two gloo processes, each on half the batch = one process on all of it --------------


def _ddp_worker(rank: int, world: int, port: int, out: Path) -> None:
    os.environ |= {
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "WORLD_SIZE": str(world),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    torch.set_num_threads(1)
    distributed.init_distributed("cpu")
    model = distributed.synchronise_batchnorm(tiny_model(), torch.device("cpu"))
    image, targets = tiny_batch(n=8)
    k = len(image) // world
    mine = slice(rank * k, (rank + 1) * k)
    z = inter_task_affinity(
        model,
        image[mine],
        {t: v[mine] for t, v in targets.items()},
        losses_of(model),
        model.shared_parameters(),
        0.05,
    )
    torch.save(z.matrix, out / f"rank{rank}.pt")
    distributed.shutdown()


def test_every_rank_computes_the_affinity_of_one_process_on_the_global_batch(tmp_path):
    from tests.gateway import free_port

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    workers = [
        subprocess.Popen(
            [sys.executable, __file__, str(rank), "2", str(port), str(tmp_path)],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    for w in workers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err[-3000:]
    zero, one = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(zero, one)

    model = tiny_model()
    image, targets = tiny_batch(n=8)
    alone = inter_task_affinity(
        model, image, targets, losses_of(model), model.shared_parameters(), 0.05
    )
    assert torch.allclose(zero, alone.matrix, rtol=1e-4, atol=1e-6), (
        (zero - alone.matrix).abs().max()
    )


if __name__ == "__main__":  # one rank of the DDP test
    _ddp_worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
