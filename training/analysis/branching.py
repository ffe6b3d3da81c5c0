"""Where to branch: the tree of shared backbone stages from layer-wise affinity, under a budget.

After Vandenhende et al., "Branched Multi-Task Networks: Deciding What Layers To Share" (BMVC
2020), section 3.3: the stem is shared; at each stage ``s`` (0..3) the tasks run in branches,
each stage's grouping refining the one before (a task never rejoins a branch it left); each
final branch has its own neck (when it holds a dense task) and every task its head. A tree
costs ``stem + sum_s branches(s) * stage(s) + necks + heads`` (``training.analysis.cost``,
measured on the run's backbone) and scores the dissimilarity of what it makes tasks share::

    D(tree) = sum_s  sum_{i < j sharing a branch at stage s}  (1 - A_s[i, j])

with ``A_s`` the RSA affinity at the end of stage ``s``. The search returns the tree of least
``D`` whose cost is at most ``budget`` times hard parameter sharing's. The paper scores a
stage's grouping by each cluster's largest pairwise dissimilarity, averaged over clusters; the
sum over pairs is used here instead because it is additive over branches (which makes the
search exact and fast) and never rewards sharing more (splitting a branch never raises it),
which the average of maxima does not guarantee.

The search is exact: for each branch (a subset of tasks) entering a stage, the Pareto front of
(cost, D) over every way to split it and grow the parts, from the last stage up, memoised;
the fronts of a split's parts add. Exhaustive over trees, up to about 8 tasks in a second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from training.analysis.cost import Cost, StageCosts
from training.analysis.matrices import AffinityMatrix
from training.errors import ConfigError

#: Stage 4 is the necks: entries ``[4, groups]`` share the whole backbone.
NECK_LEVEL = 4
_EPS = 1e-12


@dataclass(frozen=True)
class Tree:
    """A branched model: where which tasks split, what it shares and what it costs."""

    branches: tuple[tuple[int, tuple[tuple[str, ...], ...]], ...]  # (stage, groups), by stage
    levels: tuple[tuple[tuple[str, ...], ...], ...]  # the branches at stages 0..3, then necks
    dissimilarity: float
    per_stage: tuple[float, ...]
    cost: Cost
    relative: dict[str, float]  # cost / HPS's, params and macs

    def to_config(self) -> list[list[Any]]:
        """``model.branches``: ``[[stage, [[tasks], [tasks], ...]], ...]``."""
        return [[s, [list(g) for g in groups]] for s, groups in self.branches]

    def to_json(self) -> dict[str, Any]:
        """The tree, its score and its cost."""
        return {
            "branches": self.to_config(),
            "levels": [[list(g) for g in level] for level in self.levels],
            "dissimilarity": self.dissimilarity,
            "dissimilarity_per_stage": list(self.per_stage),
            "cost": self.cost.to_json(),
            "relative_to_hps": self.relative,
        }


def _pair_dissimilarity(layers: Sequence[AffinityMatrix], tasks: Sequence[str]) -> list[np.ndarray]:
    """Per stage, ``1 - A_s`` over ``tasks``; 0 for a pair the affinity does not cover."""
    out = []
    for aff in layers:
        d = np.zeros((len(tasks), len(tasks)))
        for a, ta in enumerate(tasks):
            for b, tb in enumerate(tasks):
                if a != b and ta in aff.tasks and tb in aff.tasks:
                    d[a, b] = 1.0 - aff.value(ta, tb)
        out.append(d)
    return out


def branching_search(
    layers: Sequence[AffinityMatrix],
    tasks: Sequence[str],
    costs: StageCosts,
    budget: float,
    metric: str = "macs",
    leaves: Sequence[Sequence[str]] | None = None,
    reference: Cost | None = None,
) -> Tree:
    """The tree over ``tasks`` of least summed within-branch dissimilarity within ``budget``.

    Args:
        layers: The affinity at the end of each backbone stage (RSA), fine to coarse; tasks it
            does not cover count as similar to every task.
        tasks: Every task of the model, in config order.
        costs: The parts' costs (``training.analysis.cost.stage_costs``).
        budget: The tree may cost at most this multiple of hard parameter sharing.
        metric: The cost compared with the budget: ``macs`` or ``params``.
        leaves: If given, the final branches must be exactly these groups (a partition of
            ``tasks``): only where they split is searched; at the latest they split at the necks.
        reference: The cost ``budget`` multiplies (default: hard parameter sharing over
            ``tasks``, ``costs.hps``); the tree's relative cost is given against it too.

    Raises:
        ConfigError: No tree fits the budget, or the leaves do not partition the tasks.
    """
    n_stages = len(costs.stages)
    if len(layers) != n_stages:
        raise ValueError(f"{n_stages} stages but {len(layers)} affinity matrices")
    index = {t: i for i, t in enumerate(tasks)}
    if leaves is None:
        atoms = [1 << i for i in range(len(tasks))]
    else:
        flat = [t for g in leaves for t in g]
        if sorted(flat) != sorted(tasks) or len(flat) != len(set(flat)):
            raise ConfigError(
                f"the leaves {list(map(list, leaves))} do not partition {list(tasks)}"
            )
        atoms = [sum(1 << index[t] for t in g) for g in leaves]
    base = costs.hps if reference is None else reference
    search = _Search(
        dis=_pair_dissimilarity(layers, tasks),
        atoms=atoms,
        dense={k for k, a in enumerate(atoms) if any(t in costs.dense for t in _names(a, tasks))},
        stage_cost=[float(c.get(metric)) for c in costs.stages],
        neck_cost=float(costs.neck.get(metric)),
        cap=budget * base.get(metric) - costs.stem.get(metric) - costs.heads.get(metric),
        split_leaves=leaves is not None,
    )
    whole = (1 << len(atoms)) - 1
    front = search.front(whole, 0)
    if not len(front.cost):
        raise ConfigError(
            f"no branched model over {len(tasks)} tasks fits {budget:g}x the {metric} of hard "
            "parameter sharing"
        )
    best = int(np.lexsort((front.cost, np.round(front.dis, 9)))[0])
    splits: list[tuple[int, tuple[int, ...]]] = []
    counts = [0] * (n_stages + 1)
    per = [0.0] * n_stages
    search.rebuild(whole, 0, best, splits, counts, per)
    named = tuple(
        (stage, tuple(_names(m, tasks) for m in sorted(split, key=_lowest)))
        for stage, split in sorted(splits, key=lambda e: (e[0], _lowest(min(e[1], key=_lowest))))
    )
    cost = costs.tree(counts[:n_stages], counts[n_stages])
    return Tree(
        branches=named,
        levels=_levels(named, tasks, n_stages + 1),
        dissimilarity=float(front.dis[best]),
        per_stage=tuple(per),
        cost=cost,
        relative=cost.relative(base),
    )


@dataclass(frozen=True)
class _Front:
    """Pareto-optimal (cost, D) of a subtree; ``block``/``child``/``rest`` say how each is made."""

    cost: np.ndarray
    dis: np.ndarray
    block: np.ndarray  # the block holding the subset's lowest atom (in atom space)
    child: np.ndarray  # its entry in the block's front at the next stage
    rest: np.ndarray  # the entry of the rest's split at this stage (-1: no rest)


class _Search:
    """Memoised fronts over subsets of atoms (tasks, or fixed leaves), stage by stage."""

    def __init__(
        self,
        dis: list[np.ndarray],
        atoms: list[int],
        dense: set[int],
        stage_cost: list[float],
        neck_cost: float,
        cap: float,
        split_leaves: bool,
    ) -> None:
        self.dis, self.atoms, self.dense = dis, atoms, dense
        self.stage_cost, self.neck_cost, self.cap = stage_cost, neck_cost, cap
        self.split_leaves = split_leaves
        self.n_stages = len(stage_cost)
        self.fronts: dict[tuple[int, int], _Front] = {}
        self.shared: dict[tuple[int, int], float] = {}

    def atoms_in(self, mask: int) -> list[int]:
        """The atoms of an atom-space mask."""
        return [k for k in range(len(self.atoms)) if mask >> k & 1]

    def task_mask(self, mask: int) -> int:
        """The tasks of an atom-space mask, as a task-space mask."""
        return sum(self.atoms[k] for k in self.atoms_in(mask))

    def shared_dissimilarity(self, mask: int, s: int) -> float:
        """``sum_{i<j in the branch} (1 - A_s[i, j])``."""
        key = (mask, s)
        if key not in self.shared:
            tm = self.task_mask(mask)
            m = [i for i in range(tm.bit_length()) if tm >> i & 1]
            self.shared[key] = float(self.dis[s][np.ix_(m, m)].sum() / 2.0)
        return self.shared[key]

    def necks(self, mask: int) -> int:
        """Necks a branch of ``mask`` needs (one per dense leaf, leaves apart at the latest)."""
        dense = [k in self.dense for k in self.atoms_in(mask)]
        return sum(dense) if self.split_leaves else int(any(dense))

    def front(self, mask: int, s: int) -> _Front:
        """Every way a branch of ``mask`` entering stage ``s`` splits (here) and grows."""
        key = (mask, s)
        if key in self.fronts:
            return self.fronts[key]
        if s == self.n_stages:
            one = np.zeros(1, dtype=np.int64)
            f = _Front(np.array([self.neck_cost * self.necks(mask)]), np.zeros(1), one, one, one)
            self.fronts[key] = f
            return f
        low = mask & -mask
        rest_bits = mask ^ low
        costs, dis, blocks, children, rests = [], [], [], [], []
        sub = rest_bits
        while True:
            block = sub | low
            grown = self.front(block, s + 1)
            c = self.stage_cost[s] + grown.cost
            d = self.shared_dissimilarity(block, s) + grown.dis
            n = len(c)
            if block == mask:
                costs.append(c)
                dis.append(d)
                children.append(np.arange(n))
                rests.append(np.full(n, -1))
            else:
                other = self.front(mask ^ block, s)  # the rest, split at this stage too
                costs.append((c[:, None] + other.cost[None, :]).ravel())
                dis.append((d[:, None] + other.dis[None, :]).ravel())
                children.append(np.repeat(np.arange(n), len(other.cost)))
                rests.append(np.tile(np.arange(len(other.cost)), n))
            blocks.append(np.full(len(costs[-1]), block))
            if sub == 0:
                break
            sub = (sub - 1) & rest_bits
        f = _pareto_front(
            np.concatenate(costs),
            np.concatenate(dis),
            np.concatenate(blocks),
            np.concatenate(children),
            np.concatenate(rests),
            self.cap,
        )
        self.fronts[key] = f
        return f

    def rebuild(
        self,
        mask: int,
        s: int,
        entry: int,
        splits: list[tuple[int, tuple[int, ...]]],
        counts: list[int],
        per: list[float],
    ) -> None:
        """Follow entry ``entry`` of ``mask``'s front at ``s``: record splits, counts, D."""
        if s == self.n_stages:
            n = self.necks(mask)
            counts[s] += n
            leaves = self.atoms_in(mask) if self.split_leaves else [0]
            if len(leaves) > 1:
                splits.append((s, tuple(self.task_mask(1 << k) for k in leaves)))
            return
        parts: list[tuple[int, int]] = []  # (block, its entry at the next stage)
        f, at = self.front(mask, s), entry
        while True:
            block = int(f.block[at])
            parts.append((block, int(f.child[at])))
            rest = int(f.rest[at])
            if rest < 0:
                break
            f, at = self.front(mask ^ sum(b for b, _ in parts), s), rest
        if len(parts) > 1:
            splits.append((s, tuple(self.task_mask(b) for b, _ in parts)))
        for block, child in parts:
            counts[s] += 1
            per[s] += self.shared_dissimilarity(block, s)
            self.rebuild(block, s + 1, child, splits, counts, per)


def _pareto_front(
    cost: np.ndarray,
    dis: np.ndarray,
    block: np.ndarray,
    child: np.ndarray,
    rest: np.ndarray,
    cap: float,
) -> _Front:
    """Keep the entries within ``cap`` that no other beats on both cost and dissimilarity."""
    ok = cost <= cap + _EPS
    cost, dis, block, child, rest = cost[ok], dis[ok], block[ok], child[ok], rest[ok]
    order = np.lexsort((dis, cost))
    cost, dis, block, child, rest = cost[order], dis[order], block[order], child[order], rest[order]
    if len(cost):
        before = np.minimum.accumulate(np.r_[np.inf, dis[:-1]])
        keep = dis < before - _EPS
        cost, dis, block, child, rest = cost[keep], dis[keep], block[keep], child[keep], rest[keep]
    return _Front(cost, dis, block, child, rest)


def _names(mask: int, tasks: Sequence[str]) -> tuple[str, ...]:
    return tuple(t for i, t in enumerate(tasks) if mask >> i & 1)


def _lowest(mask: int) -> int:
    return (mask & -mask).bit_length()


def _levels(
    branches: Sequence[tuple[int, tuple[tuple[str, ...], ...]]], tasks: Sequence[str], levels: int
) -> tuple[tuple[tuple[str, ...], ...], ...]:
    """The branches at each level, applying the splits in order of stage."""
    current: list[tuple[str, ...]] = [tuple(tasks)]
    out = []
    for s in range(levels):
        for stage, groups in branches:
            if stage != s:
                continue
            union = set().union(*groups)
            at = next(i for i, g in enumerate(current) if set(g) == union)
            current[at : at + 1] = list(groups)
        out.append(tuple(current))
    return tuple(out)


def split_at_necks(groups: Sequence[Sequence[str]]) -> list[list[Any]]:
    """``model.branches`` sharing the whole backbone, one neck and heads per group."""
    return [[NECK_LEVEL, [list(g) for g in groups]]] if len(groups) > 1 else []
