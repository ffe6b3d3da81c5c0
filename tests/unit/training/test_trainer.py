"""The trainer: FAMO gets the same batch after the step; fresh heads start from the targets."""

from __future__ import annotations

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
