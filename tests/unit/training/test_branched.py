"""The branched architecture: the tree a config describes, what it shares, its parameter count,
a training step under loss and gradient weightings, its config errors, and a tiny run trained
with ``polyhead train``, reloaded, exported with the parity check and served."""

from __future__ import annotations

import asyncio
import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from serving.backends.factory import onnxruntime_factory
from serving.repository import open_version
from serving.settings import Settings
from tests.conftest import ROOT
from training import trainer
from training.baselines import baseline_config
from training.config import TrainConfig, load_config, parse_config
from training.data.synth import write_dataset
from training.errors import ConfigError
from training.export import export_run, exported_tasks
from training.models import ARCHITECTURES, build_backbone
from training.models.branched import Branched
from training.runs import WEIGHTS_FILE, build_model, load_run
from training.tasks import TaskKind, build_task
from training.weighting import WEIGHTINGS

CONFIG = ROOT / "configs" / "branched.yaml"
LABELS = ("x", "y", "z")


def config(**overrides) -> TrainConfig:
    return load_config(CONFIG, {"data.root": "unused", **overrides})


def tasks_of(cfg: TrainConfig) -> list[TaskKind]:
    labelled = {"segmentation", "classification", "multilabel"}
    return [
        build_task(t.name, t.kind, LABELS if t.kind in labelled else None, t.auxiliary)
        for t in cfg.tasks
    ]


def branched(cfg: TrainConfig) -> Branched:
    torch.manual_seed(0)
    model = build_model(cfg, tasks_of(cfg), load_weights=False)
    assert isinstance(model, Branched)
    return model


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def same_module(model: Branched, a: str, b: str, stage: int) -> bool:
    return model.stages_of(a)[stage] is model.stages_of(b)[stage]


# ------------------------------------------------------------------------------ the tree


def test_each_task_goes_through_the_stages_its_branch_shares():
    model = branched(config())
    everyone = ["semseg", "depth", "normals", "edges", "shapes", "background"]
    for stage in (0, 1):  # split at 2 into semantics and geometry
        assert all(same_module(model, "semseg", t, stage) for t in everyone)
    for stage in (2, 3):
        assert same_module(model, "depth", "normals", stage)
        assert not same_module(model, "depth", "semseg", stage)
    assert same_module(model, "semseg", "shapes", 2)  # then at 3 dense and image-level part
    assert not same_module(model, "semseg", "shapes", 3)
    assert same_module(model, "semseg", "edges", 3)
    assert same_module(model, "shapes", "background", 3)
    assert all(len(model.stages_of(t)) == 4 for t in everyone)
    leaves = {tuple(model.plan[model.path(t)[-1]].tasks) for t in everyone}
    assert leaves == {("semseg", "edges"), ("depth", "normals"), ("shapes", "background")}
    # a neck for each leaf with dense tasks, none for the image-level one
    necks = {s.tasks for b, s in zip(model.branches, model.plan, strict=True) if b.neck is not None}
    assert necks == {("semseg", "edges"), ("depth", "normals")}
    assert [len(model.path(t)) for t in ("semseg", "depth")] == [3, 2]


def test_without_branches_each_task_owns_the_last_stage():
    model = branched(config(**{"model.branches": None}))
    assert all(same_module(model, "semseg", "depth", s) for s in range(3))
    assert not same_module(model, "semseg", "depth", 3)
    assert [s.start for s in model.plan] == [0] + [3] * 6


def test_no_entries_is_hard_parameter_sharing_exactly():
    tasks = tasks_of(config())
    torch.manual_seed(0)
    hps = ARCHITECTURES.get("hps")(build_backbone("resnet18", width=4), tasks, neck_channels=8)
    torch.manual_seed(0)
    tree = Branched(build_backbone("resnet18", width=4), tasks, neck_channels=8, branches=[])
    assert count(tree) == count(hps)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = hps.eval()(x), tree.eval()(x)
    for t in tasks:
        torch.testing.assert_close(a[t.name], b[t.name], rtol=0, atol=0)
    assert [s.shape for s in a.shared] == [s.shape for s in b.shared]


def test_parameter_counts_lie_between_sharing_everything_and_nothing():
    tasks = tasks_of(config())
    names = [t.name for t in tasks]
    dense = sum(t.dense for t in tasks)
    backbone = build_backbone("resnet18", width=4)
    stem, stage3 = count(backbone.stem), count(backbone.stages[3])
    neck = count(ARCHITECTURES.get("hps")(backbone, tasks[:1], neck_channels=8).neck)

    def tree(branches) -> int:
        return count(Branched(build_backbone("resnet18", width=4), tasks, 8, branches))

    hps = tree([])
    separate = sum(
        count(ARCHITECTURES.get("single_task")(build_backbone("resnet18", width=4), [t], 8))
        for t in tasks
    )
    per_task = [[t] for t in names]
    # one branch per task from stage 3: T copies of the last stage, a neck per dense task
    assert tree(None) == tree([[3, per_task]]) == hps + 5 * stage3 + (dense - 1) * neck
    # split right after the stem: separate networks sharing only it
    assert tree([[0, per_task]]) == separate - 5 * stem
    # the whole backbone shared: only the necks split
    assert tree([[4, per_task]]) == hps + (dense - 1) * neck
    example = tree(config().model.branches)
    assert hps < tree([[4, per_task]]) < example < tree(None) < separate


def test_shared_stages_are_shared_parameters_and_a_one_task_branch_is_its_own():
    tasks = tasks_of(config())[:3]  # semseg, depth, normals
    model = Branched(
        build_backbone("resnet18", width=4), tasks, 8, [[2, [["semseg", "depth"], ["normals"]]]]
    )
    shared, own = model.parameter_partition()
    shared_ids = {id(p) for p in shared}
    own_ids = {t: {id(p) for p in ps} for t, ps in own.items()}
    for module in (model.stem, *model.stages_of("semseg")[:2]):  # all three tasks
        assert {id(p) for p in module.parameters()} <= shared_ids
    for module in model.stages_of("semseg")[2:]:  # semseg and depth
        assert {id(p) for p in module.parameters()} <= shared_ids
    for module in model.stages_of("normals")[2:]:  # normals alone
        assert {id(p) for p in module.parameters()} <= own_ids["normals"]
    normals_leaf = model.branches[model.path("normals")[-1]]
    assert {id(p) for p in normals_leaf.parameters()} <= own_ids["normals"]
    semseg_leaf = model.branches[model.path("semseg")[-1]]
    assert {id(p) for p in semseg_leaf.neck.parameters()} <= shared_ids  # semseg and depth
    # the maps several tasks read: the split point and the two-task leaf's neck and last map
    out = model(torch.randn(2, 3, 32, 32))
    assert [tuple(s.shape[1:]) for s in out.shared] == [(8, 4, 4), (8, 8, 8), (32, 1, 1)]


# ------------------------------------------------------------------------------ config errors


@pytest.mark.parametrize(
    ("branches", "message"),
    [
        ([[5, [["semseg"], ["depth"]]]], r"entry 0 \[5, .*\]: stage 5 is outside 0\.\.4"),
        ([[-1, [["semseg"], ["depth"]]]], r"entry 0 .*: stage -1 is outside 0\.\.4"),
        ([[2, [["semseg", "depth"], []]]], r"entry 0 .*: a group is empty"),
        ([[2, [["semseg", "depth"], ["depth"]]]], r"entry 0 .*: task 'depth' is in two groups"),
        ([[2, [["semseg", "depth"]]]], r"entry 0 .*: a split needs a list of at least two groups"),
        (
            [[2, ["semseg", "depth"]]],
            r"entry 0 .*: each group is a list of task names, got \"semseg",
        ),
        ([[2]], r"entry 0 \[2\]: expected \[stage, \[\[task"),
        ([["2", [["semseg"], ["depth"]]]], r"entry 0 .*: the stage must be an integer 0\.\.4"),
        ([[1, [["semseg"], ["depth"]]], [2, [["a"], ["a"]]]], r"entry 1 .*'a' is in two groups"),
    ],
)
def test_a_malformed_tree_is_rejected_when_the_config_is_read(branches, message):
    raw = {
        "data": {"root": "unused"},
        "tasks": [{"name": "semseg", "kind": "segmentation"}, {"name": "depth", "kind": "depth"}],
        "model": {"architecture": "branched", "branches": branches},
    }
    with pytest.raises(ConfigError, match=r"model\.branches: " + message):
        parse_config(raw)


def test_branches_belong_to_the_branched_architecture_only():
    with pytest.raises(
        ConfigError, match=r"model\.branches: only the branched architecture takes branches"
    ):
        config(**{"model.architecture": "hps"})
    assert config(**{"model.architecture": "hps", "model.branches": None}).model.branches is None


@pytest.mark.parametrize(
    ("branches", "message"),
    [
        (
            [[2, [["semseg", "edges", "shapes", "background"], ["depth", "x"]]]],
            r"entry 0 .*: task 'x' is not a task of this run \(tasks: semseg, depth, ",
        ),
        (  # a group list that leaves tasks out
            [[2, [["semseg"], ["depth"]]]],
            r"entry 0 .*: the groups cover \[\"depth\", \"semseg\"\], which is not the task set of one "
            r"branch at stage 2; the groups must partition one of \[\"semseg\", \"depth\", ",
        ),
        (  # a branch split before it exists (entries apply in order of stage)
            [
                [3, [["semseg", "edges", "shapes", "background"], ["depth", "normals"]]],
                [2, [["semseg", "edges"], ["shapes", "background"]]],
            ],
            r"entry 1 .*which is not the task set of one branch at stage 2",
        ),
        (  # the same branch split twice
            [[2, [["semseg", "edges", "shapes", "background"], ["depth", "normals"]]]] * 2,
            r"entry 1 .*the groups must partition one of \[\"semseg\", \"edges\", \"shapes\", "
            r"\"background\"\], \[\"depth\", \"normals\"\]",
        ),
    ],
)
def test_a_tree_that_does_not_fit_the_tasks_is_a_config_error(branches, message):
    # when the config is read (the tasks are in it) ...
    with pytest.raises(ConfigError, match=r"\(root\): model\.branches: " + message):
        config(**{"model.branches": branches})
    # ... and when the architecture is built by hand
    cfg = config()
    backbone = build_backbone(cfg.model.backbone, cfg.model.width)
    with pytest.raises(ConfigError, match=r"^model\.branches: " + message):
        Branched(backbone, tasks_of(cfg), cfg.model.neck_channels, branches=branches)


def test_later_entries_split_the_branches_earlier_ones_made_in_order_of_stage():
    tree = config().model.branches
    assert tree is not None
    written_backwards = config(**{"model.branches": [list(e) for e in reversed(tree)]})
    model = branched(written_backwards)
    assert [s.tasks for s in model.plan] == [s.tasks for s in branched(config()).plan]


def test_the_single_task_baseline_of_a_branched_run_drops_the_tree():
    base = baseline_config(config(), "depth")
    assert base.model.architecture == "single_task"
    assert base.model.branches is None
    assert base.task_names == ["depth"]


# ------------------------------------------------------------------------------ training


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("branched") / "data"
    write_dataset(root, n=16, size=32, seed=0)
    return root


@pytest.mark.parametrize(
    "weighting",
    [
        {"name": "equal"},
        {"name": "pcgrad"},
        {"name": "mgda"},
        {"name": "mgda", "params": {"gradients": "representation"}},
    ],
    ids=["equal", "pcgrad", "mgda", "mgda-representation"],
)
def test_one_training_step_moves_every_branch(data, tmp_path, weighting):
    one_step_moves_every_branch(data, tmp_path, weighting)


@pytest.mark.parametrize("name", [n for n in WEIGHTINGS.names() if n not in {"equal", "pcgrad"}])
def test_every_weighting_trains_a_branched_model(data, tmp_path, name):
    """Every registered weighting, with its defaults, steps every branch of the tree."""
    one_step_moves_every_branch(data, tmp_path, {"name": name})


def one_step_moves_every_branch(data, tmp_path, weighting):
    cfg = load_config(CONFIG, {"data.root": str(data), "weighting": weighting})
    t = trainer.Trainer(cfg, tmp_path / "run")
    assert isinstance(t.model, Branched)
    before = copy.deepcopy(t.model.state_dict())
    losses, weights = t.step(next(iter(t._loader())))
    assert set(losses) == set(weights) == set(cfg.task_names)
    assert all(np.isfinite(v) for v in [*losses.values(), *weights.values()])
    for b, branch in enumerate(t.model.branches):
        moved = [
            n
            for n, p in branch.named_parameters()
            if not torch.equal(before[f"branches.{b}.{n}"], p.detach())
        ]
        assert moved, f"branch {b} {t.model.plan[b].tasks} did not move"


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A tiny run trained with ``polyhead train`` (edges auxiliary: trained, never exported)."""
    from polyhead.cli import app

    out = tmp_path_factory.mktemp("branched_run") / "run"
    edges_auxiliary = (
        "tasks=[{name: semseg, kind: segmentation}, {name: depth, kind: depth}, "
        "{name: normals, kind: normals}, {name: edges, kind: edges, auxiliary: true}, "
        "{name: shapes, kind: multilabel}, {name: background, kind: classification}]"
    )
    args = ["train", "--config", str(CONFIG), "--out", str(out), "--set", f"data.root={data}"]
    args += ["--set", "optim.epochs=1", "--set", edges_auxiliary]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    return out


def test_a_trained_run_reloads_with_its_tree_and_weights(trained):
    run = load_run(trained)
    assert run.config.model.architecture == "branched"
    assert run.config.model.branches == config().model.branches
    model = run.model()
    assert isinstance(model, Branched)
    assert [s.tasks for s in model.plan] == [s.tasks for s in branched(config()).plan]
    saved = load_file(str(trained / WEIGHTS_FILE))
    state = model.state_dict()
    assert set(state) == set(saved)
    assert all(torch.equal(state[k], saved[k]) for k in saved)


def test_a_trained_run_exports_with_parity_and_is_served_the_same(trained, tmp_path):
    result = export_run(trained, tmp_path / "repo", "branched")
    run = load_run(trained)
    names = [t.name for t in exported_tasks(run.tasks)]
    assert [t.name for t in result.manifest.tasks] == names
    assert "edges" not in names
    x = torch.randn(3, 3, *run.input_size, generator=torch.Generator().manual_seed(2))

    async def serve_once():
        loaded, backend = await open_version(result.path, onnxruntime_factory(Settings()))
        try:
            return await backend.infer({"image": x.numpy()}, loaded.output_names)
        finally:
            await backend.close()

    served = asyncio.run(serve_once())
    with torch.no_grad():
        ref = run.model()(x)
    for name in names:
        assert served[name].shape == tuple(ref[name].shape)
        np.testing.assert_allclose(served[name], ref[name].numpy(), atol=1e-4, rtol=1e-3)


def test_polyhead_train_reports_a_tree_that_does_not_fit_as_a_config_error(data, tmp_path):
    from polyhead.cli import app

    args = ["train", "--config", str(CONFIG), "--out", str(tmp_path / "run")]
    args += ["--set", f"data.root={data}", "--set", "model.branches=[[2, [[semseg], [x]]]]"]
    result = CliRunner().invoke(app, args)
    # a config error: the file named on the error line, then a line per field, exit 2
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: invalid training config"), result.stderr
    assert "model.branches: entry 0" in result.stderr
    assert "task 'x' is not a task of this run" in result.stderr
    assert not (tmp_path / "run").exists()
