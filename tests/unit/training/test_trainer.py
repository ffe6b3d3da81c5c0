"""The trainer: FAMO gets the same batch after the step; fresh heads start from the targets."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import ROOT
from training import trainer
from training.config import load_config
from training.data.synth import write_dataset
from training.weighting.famo import Famo


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("famo") / "data"
    write_dataset(root, n=16, size=32, seed=0)
    return root


def test_famo_gets_the_same_batch_after_the_step(data, tmp_path, monkeypatch):
    cfg = load_config(
        ROOT / "configs" / "smoke.yaml",
        {"data.root": str(data), "weighting": {"name": "famo"}, "optim.batch_size": 8},
    )
    t = trainer.Trainer(cfg, tmp_path / "run")
    seen = []
    original = Famo.after_step

    def record(self, losses):
        seen.append({k: float(v) for k, v in losses.items()})
        original(self, losses)

    monkeypatch.setattr(Famo, "after_step", record)
    batch = next(iter(t._loader()))
    before, _ = t.step(batch)
    assert len(seen) == 1
    # the model after the step, on the same batch (train mode, no gradients): the same losses
    with torch.no_grad():
        out = t.model(batch["image"])
        again = {n: float(t.tasks_by_name[n].loss(out[n], batch["targets"][n])) for n in seen[0]}
    assert again == pytest.approx(seen[0], rel=1e-5)
    assert seen[0] != pytest.approx(before, rel=1e-6)  # the step changed them
    assert not torch.equal(t.weighting.logits, torch.zeros_like(t.weighting.logits))


def test_a_fresh_depth_head_starts_at_the_mean_training_depth(data, tmp_path):
    cfg = load_config(ROOT / "configs" / "smoke.yaml", {"data.root": str(data)})
    t = trainer.Trainer(cfg, tmp_path / "run")
    batch = next(iter(t._loader()))
    depth = batch["targets"]["depth"]
    t.model.eval()
    with torch.no_grad():
        predicted = t.model(batch["image"])["depth"]
    mean = float(depth[depth > 0].mean())
    # the constant predictor's level, up to what the random head adds: not 0
    assert float(predicted.mean()) == pytest.approx(mean, rel=0.25)
    assert mean > 1.0


@pytest.mark.parametrize("arch", ["cross_stitch", "nddr"])
def test_fusion_units_train_at_the_reference_learning_rate_multiple(data, tmp_path, arch):
    cfg = load_config(
        ROOT / "configs" / "smoke.yaml",
        {"data.root": str(data), "model.architecture": arch, "model.fusion_lr_scale": 100.0},
    )
    t = trainer.Trainer(cfg, tmp_path / "run")
    fusion = {id(p) for p in t.model.fusion_parameters()}
    assert fusion
    groups = t.optimizer.param_groups
    scaled = [g for g in groups if {id(p) for p in g["params"]} == fusion]
    assert len(scaled) == 1
    base = next(g for g in groups if g is not scaled[0] and g["weight_decay"] > 0)
    assert scaled[0]["initial_lr"] == pytest.approx(100 * base["initial_lr"])
    assert not fusion & {id(p) for g in groups if g is not scaled[0] for p in g["params"]}


DEEP_SUPERVISED = {
    # architecture: (main tasks, auxiliary tasks, where each main task is supervised)
    "padnet": (["semseg", "depth"], ["edges", "normals"], ["initial"]),
    "mtinet": (["semseg", "normals"], ["depth", "edges"], [f"scale_{s}" for s in range(4)]),
}


def tasks_config(main: list[str], auxiliary: list[str]) -> list[dict]:
    kinds = {"semseg": "segmentation", "depth": "depth", "normals": "normals", "edges": "edges"}
    return [{"name": t, "kind": kinds[t], "auxiliary": t in auxiliary} for t in main + auxiliary]


@pytest.mark.parametrize("arch", sorted(DEEP_SUPERVISED))
def test_deep_supervision_losses_are_logged(arch, data, tmp_path):
    main, auxiliary, where = DEEP_SUPERVISED[arch]
    cfg = load_config(
        ROOT / "configs" / "smoke.yaml",
        {
            "data.root": str(data),
            "tasks": tasks_config(main, auxiliary),
            "model.architecture": arch,
            "optim.epochs": 1,
            "run.log_every_steps": 1,
        },
    )
    out = tmp_path / "run"
    metrics = trainer.Trainer(cfg, out).fit()
    assert set(metrics) == set(main + auxiliary)  # auxiliary tasks are evaluated too
    steps = [
        r
        for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if "weights" in r
    ]
    assert steps
    expected = {f"{t}/{w}" for t in main for w in where}
    # an auxiliary task's finest intermediate prediction is its output: the others are terms
    expected |= {f"{t}/{w}" for t in auxiliary for w in where[1:]}
    for record in steps:
        terms = record["deep_supervision"]
        assert set(terms) == expected
        for t in main + auxiliary:  # each task's loss holds its terms (weight 1)
            mine = [v for k, v in terms.items() if k.startswith(f"{t}/")]
            assert record["loss"][t] > sum(mine) > 0 or not mine


def test_the_task_loss_adds_the_weighted_deep_supervision_terms():
    from training.losses import task_losses
    from training.models import MultiTaskOutput
    from training.tasks import build_task

    task = build_task("depth", "depth")
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 1, 16, 16, generator=g) + 1
    out = MultiTaskOutput()
    out["depth"] = torch.rand(2, 1, 16, 16, generator=g)
    coarse = torch.rand(2, 1, 4, 4, generator=g)
    out.deep_supervision["depth"] = {"scale_1": coarse}
    losses, terms = task_losses({"depth": task}, ["depth"], out, {"depth": target}, 0.5)
    up = torch.nn.functional.interpolate(coarse, size=(16, 16), mode="bilinear")
    term = task.loss(up, target)
    assert float(terms["depth/scale_1"]) == pytest.approx(float(term))
    assert float(losses["depth"]) == pytest.approx(
        float(task.loss(out["depth"], target) + 0.5 * term)
    )
    off, _ = task_losses({"depth": task}, ["depth"], out, {"depth": target}, 0.0)
    assert float(off["depth"]) == pytest.approx(float(task.loss(out["depth"], target)))


def test_an_export_leaves_the_auxiliary_tasks_out(data, tmp_path):
    from training.export import export_run
    from training.runs import load_run

    cfg = load_config(
        ROOT / "configs" / "smoke.yaml",
        {
            "data.root": str(data),
            "tasks": tasks_config(["semseg", "depth"], ["edges"]),
            "model.architecture": "padnet",
            "optim.epochs": 1,
        },
    )
    trainer.Trainer(cfg, tmp_path / "run").fit()
    assert [t.auxiliary for t in load_run(tmp_path / "run").tasks] == [False, False, True]
    result = export_run(tmp_path / "run", tmp_path / "repo", "m")
    assert [t.name for t in result.manifest.tasks] == ["semseg", "depth"]
    assert set(result.manifest.metrics) == {"semseg", "depth"}


def test_a_config_of_auxiliary_tasks_only_is_refused(data):
    from training.errors import ConfigError

    with pytest.raises((ConfigError, ValueError), match="auxiliary"):
        load_config(
            ROOT / "configs" / "smoke.yaml",
            {
                "data.root": str(data),
                "tasks": [{"name": "depth", "kind": "depth", "auxiliary": True}],
            },
        )
