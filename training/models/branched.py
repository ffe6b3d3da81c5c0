"""Branched multi-task networks: a tree of backbone stages that splits where it is told to.

Vandenhende, Georgoulis, De Brabandere and Van Gool, "Branched Multi-Task Networks: Deciding
What Layers To Share" (BMVC 2020). The paper picks the tree from task affinities measured on a
trained network; here the tree is given (``model.branches``), so a grouping found elsewhere
(from measured task affinities, or by hand) trains as one model.

The tree, as ``model.branches`` writes it: ``[[stage, [[task, ...], [task, ...], ...]], ...]``.
Backbone stages are numbered 0..3 (a ResNet's stages, strides 4, 8, 16, 32); the stem is always
shared. All tasks start in one branch (the root). An entry ``[s, groups]`` says that from stage
``s`` on, the branch whose tasks are exactly the union of ``groups`` continues as one branch per
group, each with its own copy of stages ``s``..3; ``s = 4`` shares the whole backbone and splits
only the necks. Entries apply in order of stage (at one stage, in the order written), so a later
entry splits a branch an earlier one made. No entries (``branches: []``) is hard parameter
sharing. Without ``branches`` the tree is :func:`default_branches`: one branch per task from
the last stage on.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn
from typing_extensions import override

from training.errors import ConfigError
from training.models.backbones import Backbone
from training.models.multitask import (
    ARCHITECTURES,
    MultiTaskModel,
    MultiTaskOutput,
    task_heads,
    tasks_by_name,
)
from training.models.necks import LightFPN
from training.tasks import TaskKind

#: ``model.branches`` once checked: (stage, groups of task names) per entry.
Branches = tuple[tuple[int, tuple[tuple[str, ...], ...]], ...]

#: Stages of the registered backbones (ResNets): what ``model.branches`` is checked against
#: before any backbone is built.
NUM_STAGES = 4

_ENTRY = "[stage, [[task, ...], [task, ...], ...]]"


def _show(value: object) -> str:
    try:
        return json.dumps(value)  # reads as the YAML flow style it was written in
    except (TypeError, ValueError):
        return repr(value)


def branch_entries(raw: object, num_stages: int = NUM_STAGES) -> Branches:
    """Check what can be checked without the tasks; return the entries as tuples.

    Each entry is ``[stage, groups]`` with ``0 <= stage <= num_stages``, at least two groups,
    none empty, and no task in two of them. Raises ValueError naming the entry.
    """
    if not isinstance(raw, list | tuple):
        raise ValueError(f"expected a list of {_ENTRY} entries, got {_show(raw)}")
    entries = []
    for i, entry in enumerate(raw):
        where = f"entry {i} {_show(entry)}"
        if not (isinstance(entry, list | tuple) and len(entry) == 2):
            raise ValueError(f"{where}: expected {_ENTRY}")
        stage, groups = entry
        if type(stage) is not int:
            raise ValueError(f"{where}: the stage must be an integer 0..{num_stages}")
        if not 0 <= stage <= num_stages:
            raise ValueError(
                f"{where}: stage {stage} is outside 0..{num_stages} (s < {num_stages}: each "
                f"group gets its own backbone stages from s on; {num_stages}: the whole backbone "
                "is shared and only the necks and heads split)"
            )
        if not isinstance(groups, list | tuple) or len(groups) < 2:
            raise ValueError(f"{where}: a split needs a list of at least two groups of tasks")
        seen: set[str] = set()
        for group in groups:
            if not isinstance(group, list | tuple) or not all(isinstance(t, str) for t in group):
                raise ValueError(f"{where}: each group is a list of task names, got {_show(group)}")
            if not group:
                raise ValueError(f"{where}: a group is empty")
            twice = next((t for t in group if t in seen or group.count(t) > 1), None)
            if twice is not None:
                raise ValueError(f"{where}: task {twice!r} is in two groups")
            seen |= set(group)
        entries.append((stage, tuple(tuple(g) for g in groups)))
    return tuple(entries)


def default_branches(task_names: Sequence[str], num_stages: int = NUM_STAGES) -> Branches:
    """The tree when none is given: one branch per task from the last backbone stage on.

    The stem and every stage but the last are shared, as the paper's trees mostly share the
    early, generic layers; each task then owns its last stage (stride 32), neck and head. With
    one task, no split (hard parameter sharing). The last stage holds about three quarters of a
    ResNet's parameters, so this tree has nearly T times HPS's: give ``branches`` to share more.
    """
    if len(task_names) < 2:
        return ()
    return ((num_stages - 1, tuple((t,) for t in task_names)),)


@dataclass(frozen=True)
class BranchSpec:
    """One node of the tree: its tasks own backbone stages ``start``..``stop - 1`` together.

    A leaf runs to the last stage (``stop`` = the number of stages); an inner branch's
    ``children`` start at its ``stop``.
    """

    tasks: tuple[str, ...]
    start: int
    stop: int
    parent: int | None
    children: tuple[int, ...]


def plan_tree(raw: object, task_names: Sequence[str], num_stages: int) -> list[BranchSpec]:
    """The tree ``raw`` (``model.branches``) describes over ``task_names``; parents first.

    Raises ConfigError (``model.branches: ...``) for an entry that does not fit: a bad shape, an
    unknown task, groups that do not partition one branch existing at that stage.
    """
    try:
        entries = branch_entries(raw, num_stages)
    except ValueError as e:
        raise ConfigError(f"model.branches: {e}") from e
    known = list(task_names)
    tasks: list[tuple[str, ...]] = [tuple(known)]
    starts, stops, parents = [0], [num_stages], [cast(int | None, None)]
    split = [False]
    # sorted is stable: entries at one stage apply in the order written. A branch made by an
    # entry starts at that entry's stage, so every later entry splits it at or after its start.
    for i in sorted(range(len(entries)), key=lambda k: entries[k][0]):
        stage, groups = entries[i]
        where = f"model.branches: entry {i} {_show(entries[i])}"
        unknown = next((t for g in groups for t in g if t not in known), None)
        if unknown is not None:
            raise ConfigError(
                f"{where}: task {unknown!r} is not a task of this run (tasks: {', '.join(known)})"
            )
        covered = {t for g in groups for t in g}
        current = [b for b in range(len(tasks)) if not split[b]]
        target = next((b for b in current if set(tasks[b]) == covered), None)
        if target is None:
            branches = ", ".join(_show(list(tasks[b])) for b in current)
            raise ConfigError(
                f"{where}: the groups cover {_show(sorted(covered))}, which is not the task set "
                f"of one branch at stage {stage}; the groups must partition one of {branches} "
                "(entries apply in order of stage)"
            )
        split[target], stops[target] = True, stage
        for group in groups:
            tasks.append(tuple(t for t in known if t in group))  # in the model's task order
            starts.append(stage)
            stops.append(num_stages)
            parents.append(target)
            split.append(False)
    return [
        BranchSpec(
            tasks=tasks[b],
            start=starts[b],
            stop=stops[b],
            parent=parents[b],
            children=tuple(c for c in range(len(tasks)) if parents[c] == b),
        )
        for b in range(len(tasks))
    ]


class Branch(nn.Module):
    """A branch's own backbone stages (maybe none) and, for a leaf with dense tasks, its neck."""

    def __init__(self, spec: BranchSpec, stages: list[nn.Module], neck: LightFPN | None) -> None:
        super().__init__()
        self.spec = spec
        self.stages = nn.ModuleList(stages)
        self.neck = neck


def _stem_and_stages(backbone: Backbone) -> tuple[nn.Module, nn.ModuleList]:
    stem, stages = getattr(backbone, "stem", None), getattr(backbone, "stages", None)
    if not isinstance(stem, nn.Module) or not isinstance(stages, nn.ModuleList):
        raise TypeError(
            "branched runs the backbone stage by stage: it needs a backbone with .stem and "
            f".stages (a ResNet), got {type(backbone).__name__}"
        )
    if len(stages) != len(backbone.feature_channels):
        raise ValueError(
            f"backbone has {len(stages)} stages but {len(backbone.feature_channels)} scales"
        )
    return stem, stages


@ARCHITECTURES.register("branched")
class Branched(MultiTaskModel):
    """Branched multi-task network (Vandenhende et al., BMVC 2020): a tree of backbone stages.

    The stem is shared; the tasks of a branch share its stages, and where it splits each group
    continues on its own copies of the backbone's next stages (copies of the given backbone, so
    pretrained weights start every copy). Each leaf has its own LightFPN neck over the four
    stage maps on its path (its ancestors' and its own) for its dense tasks, whose heads read it;
    image-level heads read the leaf's coarsest map, as in HPS. One forward pass computes every
    branch. See the module docstring for ``branches``; without it, :func:`default_branches`.

    ``shared`` holds the maps more than one task reads: each split point (the last map of an
    inner branch) and the neck and coarsest maps of a leaf with several tasks; with one task,
    its neck and coarsest maps (as HPS). Which parameters are shared is found, as for every
    architecture: a branch's stages are shared by its tasks, a one-task leaf belongs to its task.
    """

    def __init__(
        self,
        backbone: Backbone,
        tasks: Sequence[TaskKind],
        neck_channels: int = 64,
        branches: Sequence[object] | None = None,
    ) -> None:
        super().__init__()
        self.tasks = tasks_by_name(tasks)
        stem, stages = _stem_and_stages(backbone)
        names = list(self.tasks)
        plan = plan_tree(
            default_branches(names, len(stages)) if branches is None else branches,
            names,
            len(stages),
        )
        channels = list(backbone.feature_channels)
        self.stem = stem
        built = []
        for b, spec in enumerate(plan):
            # the root takes the backbone's own stages, every other branch copies them
            own = [
                stages[s] if b == 0 else copy.deepcopy(stages[s])
                for s in range(spec.start, spec.stop)
            ]
            leaf_dense = not spec.children and any(self.tasks[t].dense for t in spec.tasks)
            neck = LightFPN(channels, neck_channels) if leaf_dense else None
            built.append(Branch(spec, own, neck))
        self.branches = nn.ModuleList(built)
        self.leaf_of = {
            t: b for b, spec in enumerate(plan) if not spec.children for t in spec.tasks
        }
        self.heads = task_heads(tasks, neck_channels, channels[-1])

    @property
    def plan(self) -> list[BranchSpec]:
        """The tree, parents first (the root at 0)."""
        return [cast(Branch, b).spec for b in self.branches]

    def path(self, task: str) -> list[int]:
        """The branches task ``task`` goes through, root to leaf."""
        plan, b = self.plan, self.leaf_of[task]
        path = [b]
        while (parent := plan[path[-1]].parent) is not None:
            path.append(parent)
        return path[::-1]

    def stages_of(self, task: str) -> list[nn.Module]:
        """The backbone stage modules task ``task``'s features go through, fine to coarse."""
        return [stage for b in self.path(task) for stage in cast(Branch, self.branches[b]).stages]

    @override
    def forward(self, x: torch.Tensor) -> MultiTaskOutput:
        size = (x.shape[-2], x.shape[-1])
        stem = self.stem(x)
        feats: list[list[torch.Tensor]] = []  # per branch: the stage maps on its path so far
        ends: list[torch.Tensor] = []  # per branch: the last map it computes (or receives)
        necks: dict[int, torch.Tensor] = {}
        for b, module in enumerate(self.branches):
            branch = cast(Branch, module)
            parent = branch.spec.parent
            path, h = ([], stem) if parent is None else (list(feats[parent]), ends[parent])
            for stage in branch.stages:
                h = stage(h)
                path.append(h)
            feats.append(path)
            ends.append(h)
            if branch.neck is not None:
                necks[b] = branch.neck(path)
        out = MultiTaskOutput()
        for name, task in self.tasks.items():
            leaf, head = self.leaf_of[name], self.heads[name]
            out[name] = head(necks[leaf], size) if task.dense else head(feats[leaf][-1])
        out.shared = self._shared(necks, feats, ends)
        return out

    def _shared(
        self,
        necks: dict[int, torch.Tensor],
        feats: list[list[torch.Tensor]],
        ends: list[torch.Tensor],
    ) -> list[torch.Tensor]:
        least = min(2, len(self.tasks))
        # keyed by id, so a map is listed once: a leaf that owns no stage (a split at stage 4)
        # has its parent's coarsest map, an inner branch that owns none its parent's last
        shared: dict[int, torch.Tensor] = {}
        for b, spec in enumerate(self.plan):
            if len(spec.tasks) < least:
                continue
            if spec.children:
                maps = [ends[b]]
            else:
                maps = [necks[b]] if b in necks else []
                maps.append(feats[b][-1])
            shared |= {id(m): m for m in maps}
        return list(shared.values())
