"""What a model costs: parameters and multiply-accumulates (MACs), per model and per part.

MACs are counted by forward hooks on every ``Conv2d`` and ``Linear`` during one forward pass of
one image at the run's input size (a convolution: output elements x input channels per group x
kernel area; a linear layer: output elements x input features); normalisation, activations,
pooling and resizing are left out, as is usual. Parameters are counted from the module tree.

The parts of hard parameter sharing (stem, each backbone stage, neck, heads) are what a
branched tree pays per branch (``StageCosts``), so a tree's cost is known without building it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.config import TrainConfig
from training.tasks import TaskKind

METRICS = ("macs", "params")


@dataclass(frozen=True)
class Cost:
    """Parameters and MACs per image."""

    params: int
    macs: int

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs)

    def __mul__(self, n: int) -> Cost:
        return Cost(self.params * n, self.macs * n)

    def get(self, metric: str) -> int:
        """``params`` or ``macs``."""
        return self.params if metric == "params" else self.macs

    def relative(self, base: Cost) -> dict[str, float]:
        """Both numbers as multiples of ``base``'s."""
        return {
            "params": self.params / base.params if base.params else float("nan"),
            "macs": self.macs / base.macs if base.macs else float("nan"),
        }

    def to_json(self) -> dict[str, int]:
        """``{"params", "macs"}``."""
        return {"params": self.params, "macs": self.macs}


ZERO = Cost(0, 0)


def _sum(costs: Iterable[Cost]) -> Cost:
    total = ZERO
    for c in costs:
        total = total + c
    return total


@torch.no_grad()
def macs_by_module(model: nn.Module, input_size: tuple[int, int]) -> dict[str, int]:
    """MACs of one image's forward pass, by the qualified name of each Conv2d / Linear."""
    counts: dict[str, int] = {}
    handles = []

    def hook(name: str) -> Any:
        def count(
            module: nn.Conv2d | nn.Linear, inputs: tuple[torch.Tensor, ...], out: torch.Tensor
        ) -> None:
            per_image = out.numel() // max(out.shape[0], 1)
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                macs = per_image * (module.in_channels // module.groups) * kh * kw
            else:
                macs = per_image * module.in_features
            counts[name] = counts.get(name, 0) + macs

        return count

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear):
            handles.append(module.register_forward_hook(hook(name)))
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(torch.zeros(1, 3, *input_size, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return counts


def part_costs(
    model: nn.Module, input_size: tuple[int, int], parts: Sequence[str]
) -> dict[str, Cost]:
    """Cost of each named submodule (a qualified-name prefix such as ``backbone.stages.0``)."""
    macs = macs_by_module(model, input_size)
    out = {}
    for part in parts:
        module = model.get_submodule(part)
        params = sum(p.numel() for p in module.parameters())
        part_macs = sum(v for k, v in macs.items() if k == part or k.startswith(part + "."))
        out[part] = Cost(params, part_macs)
    return out


def model_cost(model: nn.Module, input_size: tuple[int, int]) -> Cost:
    """Parameters and MACs of a whole model."""
    return Cost(
        sum(p.numel() for p in model.parameters()), sum(macs_by_module(model, input_size).values())
    )


@dataclass(frozen=True)
class StageCosts:
    """One copy of each part of hard parameter sharing over a run's tasks.

    A branched tree pays the stem once, each stage once per branch running it, one neck per
    final branch holding a dense task, and every task's head once.
    """

    stem: Cost
    stages: tuple[Cost, ...]
    neck: Cost
    heads: Cost
    dense: frozenset[str]  # the tasks that read the neck

    @property
    def hps(self) -> Cost:
        """Hard parameter sharing: every part once (a neck if any task is dense)."""
        return self.stem + _sum(self.stages) + (self.neck if self.dense else ZERO) + self.heads

    def tree(self, branches_per_stage: Sequence[int], dense_leaves: int) -> Cost:
        """A tree running stage ``s`` in ``branches_per_stage[s]`` branches."""
        if len(branches_per_stage) != len(self.stages):
            raise ValueError(f"{len(self.stages)} stages, got {list(branches_per_stage)}")
        stages = _sum(c * n for c, n in zip(self.stages, branches_per_stage, strict=True))
        return self.stem + stages + self.neck * dense_leaves + self.heads

    def to_json(self) -> dict[str, Any]:
        """Every part's cost."""
        return {
            "stem": self.stem.to_json(),
            "stages": [c.to_json() for c in self.stages],
            "neck": self.neck.to_json(),
            "heads": self.heads.to_json(),
            "hps": self.hps.to_json(),
        }


def stage_costs(
    cfg: TrainConfig, tasks: Sequence[TaskKind], input_size: tuple[int, int]
) -> StageCosts:
    """Measure HPS's parts on the run's backbone, neck and heads at its input size."""
    from training.models import ARCHITECTURES, build_backbone

    backbone = build_backbone(cfg.model.backbone, cfg.model.width)
    if not hasattr(backbone, "stem") or not hasattr(backbone, "stages"):
        raise ValueError(f"backbone {cfg.model.backbone} does not expose a stem and stages")
    model = ARCHITECTURES.get("hps")(backbone, list(tasks), neck_channels=cfg.model.neck_channels)
    n = len(backbone.stages)  # type: ignore[arg-type]
    parts = ["backbone.stem", *(f"backbone.stages.{s}" for s in range(n)), "heads"]
    dense = frozenset(t.name for t in tasks if t.dense)
    if dense:
        parts.append("neck")
    costs = part_costs(model, input_size, parts)
    return StageCosts(
        stem=costs["backbone.stem"],
        stages=tuple(costs[f"backbone.stages.{s}"] for s in range(n)),
        neck=costs.get("neck", ZERO),
        heads=costs["heads"],
        dense=dense,
    )
