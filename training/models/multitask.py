"""Multi-task architectures, registered by name. The model returns ``{task: output}``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from typing_extensions import override

from training.models.backbones import Backbone
from training.models.heads import DenseHead, ImageHead
from training.models.necks import LightFPN
from training.registry import Registry
from training.tasks import TaskKind


class MultiTaskOutput(dict[str, torch.Tensor]):
    """``{task: output}`` plus the shared representations the heads read.

    ``shared`` holds the tensors produced by the shared layers (the neck's map for dense heads,
    the coarsest backbone map for image heads): gradient-based weighting methods that work on the
    representation rather than on the shared parameters need them.

    ``deep_supervision`` holds, per task, its intermediate predictions by where they are made
    (PAD-Net's ``initial``, MTI-Net's ``scale_0`` .. ``scale_3``), at their own resolution:
    the trainer adds their losses to the task's (``training.losses``); they are never exported.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shared: list[torch.Tensor] = []
        self.deep_supervision: dict[str, dict[str, torch.Tensor]] = {}


#: Input size (H, W) of the forward pass that finds which task reaches which parameter.
PROBE_SIZE = (64, 64)


class MultiTaskModel(nn.Module):
    """Base of multi-task architectures: ``forward(x) -> {task: tensor}``.

    Which parameters are shared is not declared but found: a parameter more than one task's
    output depends on (in the autograd graph of one forward pass) is shared, the others belong
    to their task. Gradient-based weighting methods combine the tasks' gradients on the shared
    ones and give the others their own task's gradient; a declaration by hand missed, e.g., the
    per-task backbones of cross-stitch, which every task reaches through the mixing units.
    """

    tasks: dict[str, TaskKind]
    heads: nn.ModuleDict

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters more than one task's output depends on (all of them with one task)."""
        shared, _ = self.parameter_partition()
        return shared

    def task_parameters(self) -> list[nn.Parameter]:
        """The other parameters: each reaches one task's output (or none)."""
        shared = {id(p) for p in self.shared_parameters()}
        return [p for p in self.parameters() if id(p) not in shared]

    def fusion_parameters(self) -> list[nn.Parameter]:
        """Parameters that mix the tasks' features (cross-stitch, NDDR): their own learning rate."""
        return []

    def set_output_bias(self, task: str, bias: torch.Tensor) -> None:
        """Start task ``task``'s output at ``bias`` (per channel) in every output layer.

        That is its head's last layer and every layer making an intermediate prediction of it.
        """
        with torch.no_grad():
            for last in self.output_layers(task):
                last.bias.copy_(bias.to(last.bias))

    def output_layers(self, task: str) -> list[nn.Conv2d | nn.Linear]:
        """The layers whose outputs are task ``task``'s predictions (final and intermediate)."""
        if task not in self.heads:
            return []
        head = self.heads[task]  # every architecture ends each task in a DenseHead / ImageHead
        return [head.proj if isinstance(head, DenseHead) else head.fc]

    def parameter_partition(self) -> tuple[list[nn.Parameter], dict[str, list[nn.Parameter]]]:
        """(shared parameters, each task's own parameters), found once and kept."""
        cached: tuple[list[nn.Parameter], dict[str, list[nn.Parameter]]] | None = getattr(
            self, "_partition", None
        )
        if cached is None:
            cached = self._find_partition()
            object.__setattr__(self, "_partition", cached)  # not a submodule or a buffer
        return cached

    def _find_partition(self) -> tuple[list[nn.Parameter], dict[str, list[nn.Parameter]]]:
        params = [p for p in self.parameters() if p.requires_grad]
        device = params[0].device if params else torch.device("cpu")
        users: dict[int, list[str]] = {id(p): [] for p in params}
        was_training = self.training
        self.eval()  # running statistics untouched; the graph's structure is what matters
        try:
            out = self(torch.zeros(2, 3, *PROBE_SIZE, device=device))
            for name in self.tasks:
                # everything the task's loss reaches: its output and its intermediate predictions
                reached = out[name].sum() + sum(
                    (pred.sum() for pred in out.deep_supervision.get(name, {}).values()),
                    torch.zeros((), device=device),
                )
                grads = torch.autograd.grad(reached, params, retain_graph=True, allow_unused=True)
                for p, g in zip(params, grads, strict=True):
                    if g is not None:
                        users[id(p)].append(name)
        finally:
            self.train(was_training)
        least = min(2, len(self.tasks))
        shared = [p for p in params if len(users[id(p)]) >= least]
        own = {t: [p for p in params if users[id(p)] == [t]] for t in self.tasks}
        if least == 1:
            own = {t: [] for t in self.tasks}
        return shared, own


def tasks_by_name(tasks: Sequence[TaskKind]) -> dict[str, TaskKind]:
    """The tasks keyed by name, in order; no task, or a name twice, is an error."""
    if not tasks:
        raise ValueError("a multi-task model needs at least one task")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate task names: {names}")
    return {t.name: t for t in tasks}


def task_heads(
    tasks: Sequence[TaskKind], dense_channels: int, image_channels: int
) -> nn.ModuleDict:
    """Heads by task name: dense ones read ``dense_channels``, image ones ``image_channels``."""
    return nn.ModuleDict(
        {
            t.name: DenseHead(dense_channels, t.channels)
            if t.dense
            else ImageHead(image_channels, t.channels)
            for t in tasks
        }
    )


ARCHITECTURES: Registry[type[MultiTaskModel]] = Registry("architecture")


@ARCHITECTURES.register("hps")
class HardParameterSharing(MultiTaskModel):
    """Hard parameter sharing (Caruana 1997): one backbone + neck shared by all task heads.

    Dense tasks read the neck's stride-4 map and are upsampled to the input size; image-level
    tasks read the pooled coarsest backbone map. One forward pass computes every task.
    """

    def __init__(
        self, backbone: Backbone, tasks: Sequence[TaskKind], neck_channels: int = 64
    ) -> None:
        super().__init__()
        self.tasks = tasks_by_name(tasks)
        self.backbone = backbone
        self.has_dense = any(t.dense for t in tasks)
        self.neck = LightFPN(backbone.feature_channels, neck_channels) if self.has_dense else None
        top = backbone.feature_channels[-1]
        self.heads = task_heads(tasks, neck_channels, top)

    @override
    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        size = (x.shape[-2], x.shape[-1])
        feats = self.backbone(x)
        dense = self.neck(feats) if self.neck is not None else None
        out = MultiTaskOutput()
        for name, task in self.tasks.items():
            head = self.heads[name]
            out[name] = head(dense, size) if task.dense else head(feats[-1])
        out.shared = [t for t in (dense, feats[-1]) if t is not None]
        return out
