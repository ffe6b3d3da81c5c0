"""Every registered architecture x task set: shapes, a training step, the shared/specific
partition, deep supervision, ONNX export with the parity check (auxiliary tasks and intermediate
predictions left out of the graph), and loading by the serving gateway (manifest vs graph,
warm-up, the same outputs)."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from serving.backends.factory import onnxruntime_factory
from serving.manifest import InputSpec, Manifest, Provenance
from serving.repository import open_version
from serving.settings import Settings
from training.export import check_onnx, check_parity, export_onnx, exported_tasks, task_spec
from training.models import ARCHITECTURES, build_backbone
from training.tasks import TaskKind, build_task

SIZE = (64, 64)
LABELS = ("a", "b", "c")


#: Task sets whose tasks of these kinds are auxiliary (trained, evaluated, never exported).
AUXILIARY = {"auxiliary tasks": {"edges", "normals"}}


def task_set(name: str) -> list[TaskKind]:
    kinds = {
        "all kinds": [
            "segmentation",
            "depth",
            "normals",
            "edges",
            "saliency",
            "multilabel",
            "classification",
        ],
        "dense only": ["segmentation", "depth"],
        "image only": ["classification", "multilabel"],
        "one dense task": ["depth"],
        "one image task": ["classification"],
        "auxiliary tasks": ["segmentation", "depth", "edges", "normals", "classification"],
    }[name]
    labelled = {"segmentation", "classification", "multilabel"}
    auxiliary = AUXILIARY.get(name, set())
    return [
        build_task(f"t_{k}", k, LABELS if k in labelled else None, k in auxiliary) for k in kinds
    ]


TASK_SETS = [
    "all kinds",
    "dense only",
    "image only",
    "one dense task",
    "one image task",
    "auxiliary tasks",
]


def task_loss(out, name: str) -> torch.Tensor:
    """A stand-in for task ``name``'s training loss: its output and its intermediate ones."""
    loss = out[name].pow(2).mean()
    for pred in out.deep_supervision.get(name, {}).values():
        loss = loss + pred.pow(2).mean()
    return loss


def build(arch: str, tasks: list[TaskKind]):
    torch.manual_seed(0)
    return ARCHITECTURES.get(arch)(build_backbone("resnet18", width=4), tasks, neck_channels=8)


def single_task_only(arch: str, tasks: list[TaskKind]) -> bool:
    """The single-task architecture takes exactly one task (and says so otherwise)."""
    if arch == "single_task" and len(tasks) > 1:
        with pytest.raises(ValueError, match="exactly one task"):
            build(arch, tasks)
        return True
    return False


@pytest.mark.parametrize("tasks", TASK_SETS)
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_forward_gives_one_output_per_task_at_the_right_shape(arch, tasks):
    ts = task_set(tasks)
    if single_task_only(arch, ts):
        return
    model = build(arch, ts)
    out = model(torch.randn(2, 3, 48, 64))
    assert list(out) == [t.name for t in ts]
    for t in ts:
        expect = (2, t.channels, 48, 64) if t.dense else (2, t.channels)
        assert tuple(out[t.name].shape) == expect, t.name
    assert out.shared, "the shared representation is exposed for gradient methods"
    assert all(s.requires_grad for s in out.shared)


@pytest.mark.parametrize("tasks", TASK_SETS)
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_a_training_step_reaches_every_parameter(arch, tasks):
    ts = task_set(tasks)
    if single_task_only(arch, ts):
        return
    model = build(arch, ts).train()
    shared = {id(p) for p in model.shared_parameters()}
    own = {id(p) for p in model.task_parameters()}
    assert not shared & own and shared | own == {id(p) for p in model.parameters()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    out = model(torch.randn(2, 3, *SIZE))
    sum(task_loss(out, t.name) for t in ts).backward()
    # reached by the graph (zero-initialised residual branches may get a zero gradient at first)
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead, f"parameters no loss reaches: {dead[:8]}"
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.mark.parametrize("tasks", TASK_SETS)
@pytest.mark.parametrize("arch", ARCHITECTURES.names())
def test_shared_parameters_are_those_more_than_one_task_reaches(arch, tasks):
    """Gradient methods combine the tasks' gradients on the shared parameters and give the rest
    their own task's gradient: a parameter two tasks' losses reach must be declared shared, and
    a "task" parameter must be reached by its task alone (checked on a training-mode step)."""
    ts = task_set(tasks)
    if single_task_only(arch, ts):
        return
    model = build(arch, ts).train()
    params = list(model.parameters())
    out = model(torch.randn(2, 3, *SIZE))
    reached: dict[int, set[str]] = {id(p): set() for p in params}
    for t in ts:
        grads = torch.autograd.grad(
            task_loss(out, t.name), params, retain_graph=True, allow_unused=True
        )
        for p, g in zip(params, grads, strict=True):
            if g is not None:
                reached[id(p)].add(t.name)
    names = {id(p): n for n, p in model.named_parameters()}
    shared = {id(p) for p in model.shared_parameters()}
    least = min(2, len(ts))
    wrong_task = [
        names[i] for i, users in reached.items() if len(users) >= least and i not in shared
    ]
    wrong_shared = [names[i] for i in shared if len(reached[i]) < least]
    assert not wrong_task, f"reached by several tasks but not shared: {wrong_task[:6]}"
    assert not wrong_shared, f"shared but reached by one task: {wrong_shared[:6]}"


DEEP_SUPERVISION = {"padnet": ["initial"], "mtinet": [f"scale_{s}" for s in range(4)]}


@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES.names() if a != "single_task"])
def test_deep_supervision_where_the_paper_has_it(arch):
    """PAD-Net supervises every dense task's initial prediction, MTI-Net its prediction at
    every scale; an auxiliary dense task's output is its finest intermediate prediction (the
    others stay intermediate); the other architectures have none."""
    ts = task_set("auxiliary tasks")
    out = build(arch, ts)(torch.randn(2, 3, *SIZE))
    expected: dict[str, list[str]] = {}
    for t in ts:
        where = DEEP_SUPERVISION.get(arch, []) if t.dense else []
        if t.auxiliary:
            where = where[1:]  # the finest (scale_0 / initial) is the output itself
        if where:
            expected[t.name] = where
    assert {t: sorted(w) for t, w in out.deep_supervision.items()} == {
        t: sorted(w) for t, w in expected.items()
    }
    for t, preds in out.deep_supervision.items():
        channels = next(k.channels for k in ts if k.name == t)
        assert all(p.shape[:2] == (2, channels) for p in preds.values())


def conv_layers_reached(model, names: list[str]) -> int:
    """Convolutions the outputs ``names`` depend on (in eval mode, as exported)."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    out = model(torch.randn(1, 3, *SIZE))
    total = sum(out[n].sum() for n in names)
    grads = torch.autograd.grad(total, [c.weight for c in convs], allow_unused=True)
    return sum(g is not None for g in grads)


EXPORTS = [(arch, "all kinds") for arch in ARCHITECTURES.names()] + [
    (arch, "auxiliary tasks")
    # elsewhere a head left out by name; in branched, an auxiliary task's whole branch
    for arch in [*DEEP_SUPERVISION, "branched"]
]


@pytest.mark.parametrize(("arch", "tasks"), EXPORTS)
def test_exports_to_onnx_with_parity_and_the_gateway_serves_it(arch, tasks, tmp_path: Path):
    ts = task_set("one dense task" if arch == "single_task" else tasks)
    model = build(arch, ts).eval()
    with torch.no_grad():  # a few steps of BatchNorm statistics, so eval differs from init
        model.train()
        for _ in range(2):
            model(torch.randn(4, 3, *SIZE))
        model.eval()
        # no two layers alike (cross-stitch copies one backbone per task), or the exporter's
        # common-subexpression elimination merges them and the graph has fewer Conv nodes
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    ts = exported_tasks(ts)
    names = [t.name for t in ts]
    version = tmp_path / "repo" / "m" / "1"
    version.mkdir(parents=True)
    onnx_path = version / "model.onnx"
    export_onnx(model, names, SIZE, onnx_path, 18)
    check_onnx(onnx_path, names, SIZE)
    # nothing of the auxiliary tasks or the intermediate predictions is left in the graph
    graph = onnx.load(str(onnx_path)).graph
    conv_weights = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    assert len(conv_weights) == conv_layers_reached(model, names)
    gen = torch.Generator().manual_seed(1)
    inputs = [torch.randn(1, 3, *SIZE, generator=gen), torch.randn(4, 3, *SIZE, generator=gen)]
    check_parity(model, names, onnx_path, inputs, atol=1e-4, rtol=1e-3)

    manifest = Manifest(
        name="m",
        version=1,
        input=InputSpec(height=SIZE[0], width=SIZE[1], mean=(0.5,) * 3, std=(0.25,) * 3),
        tasks=[task_spec(t) for t in ts],
        max_batch_size=4,
        provenance=Provenance(
            config={"architecture": arch},
            data={},
            created_at=datetime.now(UTC),
            onnx_sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
            opset=18,
            exporter="torch.onnx (dynamo)",
            framework=f"torch {torch.__version__}",
            polyhead_version="test",
        ),
    )
    (version / "manifest.json").write_text(manifest.model_dump_json())

    async def serve_once() -> dict[str, np.ndarray]:
        loaded, backend = await open_version(version, onnxruntime_factory(Settings()))
        try:
            return await backend.infer({"image": inputs[1].numpy()}, loaded.output_names)
        finally:
            await backend.close()

    served = asyncio.run(serve_once())
    with torch.no_grad():
        ref = model(inputs[1])
    for t in ts:
        np.testing.assert_allclose(served[t.name], ref[t.name].numpy(), atol=1e-4, rtol=1e-3)
