"""Which tasks should share a trunk: exact search over task groups, from pairwise affinities.

The budget is a number of trunks ``N`` (one network per group). A served task's predicted
score in group ``G`` is the mean affinity onto it from the group's other members,
``score(j, G) = mean_{i in G, i != j} A[i][j]``, and 0 alone. That is TAG's "total inter-task
affinity onto task j" (Fifty et al., "Efficiently Identifying Task Groupings for Multi-Task
Learning", NeurIPS 2021, section 3.2), and also Standley et al.'s higher-order approximation
("Which Tasks Should Be Learned Together in Multi-task Learning?", ICML 2020, section 4.2: a
task's performance in a group estimated as the mean of its pairwise performances), with the
pairwise values taken as gains over training alone. Two criteria:

- ``partition`` (TAG's grouping as the issue states it): the served tasks split into at most
  ``N`` disjoint groups; enumerated exactly, every set partition visited once (their number is
  ``sum_{k<=N} S(n, k)``, Stirling numbers of the second kind; Bell's number for ``N >= n``).
- ``selection`` (Standley et al.'s network selection, section 4.1): choose at most ``N`` groups,
  which may overlap; each served task takes its prediction from the chosen group in which it
  scores best. Solved exactly, not by branch-and-bound: every selection induces an assignment
  of the served tasks to the groups serving them, so the optimum is the best split of the served
  tasks into at most ``N`` blocks, each block ``P`` served by its best group ``G >= P``
  (``G`` may hold other tasks, as helpers). That is a max over supersets per block
  (``2^(T-S) * 3^S`` evaluations for ``S`` served of ``T`` tasks) and a dynamic program over
  subsets; equal to enumerating every set of candidate groups (tested), much faster.

Auxiliary tasks are never served: they join a group only where they raise its served tasks'
scores, possibly several groups (an auxiliary task costs one head per group it is trained in),
and their own scores count for nothing; a group of auxiliary tasks alone serves nothing and is
never proposed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from training.analysis.matrices import AffinityMatrix
from training.errors import ConfigError

#: The exact searches enumerate set partitions (Bell(10) = 115975) and subsets (3^10): fine up
#: to about 10 tasks, hopeless far beyond.
MAX_EXACT_TASKS = 10
CRITERIA = ("partition", "selection")
_EPS = 1e-12  # a better score must beat the best so far by more than rounding


@dataclass(frozen=True)
class Group:
    """Tasks trained together in one trunk; ``serves``: those predicted from it."""

    tasks: tuple[str, ...]
    serves: tuple[str, ...]

    @property
    def helpers(self) -> tuple[str, ...]:
        """Tasks trained here only to help (auxiliary, or served by another group)."""
        return tuple(t for t in self.tasks if t not in self.serves)


@dataclass(frozen=True)
class Proposal:
    """Groups with each served task's predicted score (its mean affinity from its group)."""

    criterion: str
    groups: tuple[Group, ...]
    scores: dict[str, float]

    @property
    def total(self) -> float:
        """The sum of the served tasks' predicted scores."""
        return float(sum(self.scores.values()))

    @property
    def overlapping(self) -> bool:
        """Whether a task is trained in more than one group."""
        tasks = [t for g in self.groups for t in g.tasks]
        return len(tasks) != len(set(tasks))


@dataclass(frozen=True)
class Search:
    """The best proposal for each number of groups, and how much was enumerated."""

    criterion: str
    best: dict[int, Proposal]
    visited: int


def check_size(aff: AffinityMatrix) -> None:
    """Refuse task sets too large for an exact search, or with nothing to serve."""
    if len(aff.tasks) > MAX_EXACT_TASKS:
        raise ConfigError(
            f"the exact grouping search handles at most {MAX_EXACT_TASKS} tasks; this run has "
            f"{len(aff.tasks)} ({', '.join(aff.tasks)})"
        )
    if not aff.served:
        raise ConfigError("every task is auxiliary: there is nothing to serve")


def task_score(matrix: np.ndarray, members: Sequence[int], j: int) -> float:
    """``mean_{i in members, i != j} matrix[i, j]``; 0 when ``j`` is alone."""
    others = [i for i in members if i != j]
    return float(matrix[others, j].mean()) if others else 0.0


def set_partitions(items: Sequence[int], max_blocks: int) -> Iterator[list[list[int]]]:
    """Every partition of ``items`` into at most ``max_blocks`` blocks, each exactly once.

    Restricted growth: each item joins one of the blocks so far or opens a new one.
    """
    blocks: list[list[int]] = []

    def place(k: int) -> Iterator[list[list[int]]]:
        if k == len(items):
            yield [list(b) for b in blocks]
            return
        for b in blocks:
            b.append(items[k])
            yield from place(k + 1)
            b.pop()
        if len(blocks) < max_blocks:
            blocks.append([items[k]])
            yield from place(k + 1)
            blocks.pop()

    if items:
        yield from place(0)


def _block_scores(matrix: np.ndarray, members: Sequence[int], served: Sequence[int]) -> float:
    return sum(task_score(matrix, members, j) for j in served)


def _best_helpers(aff: AffinityMatrix, block: tuple[int, ...], aux: list[int]) -> tuple[int, ...]:
    """The auxiliary tasks to train with ``block``: the subset that raises its score most."""
    best: tuple[int, ...] = ()
    best_score = _block_scores(aff.matrix, block, block)
    for r in range(1, len(aux) + 1):
        for extra in combinations(aux, r):
            score = _block_scores(aff.matrix, block + extra, block)
            if score > best_score + _EPS:
                best, best_score = extra, score
    return best


def _proposal(
    aff: AffinityMatrix, criterion: str, blocks: list[tuple[list[int], list[int]]]
) -> Proposal:
    """A proposal from ``(members, served)`` index lists, groups and tasks in the task order."""
    groups, scores = [], {}
    for members, served in sorted(blocks, key=lambda b: min(b[1])):
        ordered = sorted(members)
        groups.append(
            Group(tuple(aff.tasks[i] for i in ordered), tuple(aff.tasks[j] for j in sorted(served)))
        )
        for j in served:
            scores[aff.tasks[j]] = task_score(aff.matrix, ordered, j)
    return Proposal(criterion, tuple(groups), {t: scores[t] for t in aff.served})


def partition_search(aff: AffinityMatrix, max_groups: int) -> Search:
    """TAG's criterion: the best partition of the served tasks into ``k`` groups, ``k <= N``."""
    check_size(aff)
    served = [aff.tasks.index(t) for t in aff.served]
    aux = [aff.tasks.index(t) for t in aff.tasks if t in aff.auxiliary]
    # a block's helpers and score depend on the block alone: computed once per block
    blocks_seen: dict[tuple[int, ...], tuple[list[int], float]] = {}
    best: dict[int, tuple[float, list[tuple[list[int], list[int]]]]] = {}
    visited = 0
    for partition in set_partitions(served, max_groups):
        visited += 1
        blocks, total = [], 0.0
        for block in partition:
            key = tuple(block)
            if key not in blocks_seen:
                members = block + list(_best_helpers(aff, key, aux))
                blocks_seen[key] = (members, _block_scores(aff.matrix, members, block))
            members, value = blocks_seen[key]
            blocks.append((members, block))
            total += value
        k = len(partition)
        if k not in best or total > best[k][0] + _EPS:
            best[k] = (total, blocks)
    return Search(
        "partition",
        {k: _proposal(aff, "partition", b) for k, (_, b) in sorted(best.items())},
        visited,
    )


def _score_table(matrix: np.ndarray) -> np.ndarray:
    """``table[G, j] = score(j, G)`` for every subset ``G`` (a bit mask) of the tasks."""
    n = len(matrix)
    masks = np.arange(1 << n)
    member = (masks[:, None] >> np.arange(n)) & 1  # [2^n, n]
    sums = member @ matrix  # column sums over each subset's members
    size = member.sum(axis=1, keepdims=True)
    own = np.diag(matrix)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        table = np.where(size > 1, (sums - member * own) / np.maximum(size - 1, 1), 0.0)
    return table


def selection_search(aff: AffinityMatrix, max_groups: int) -> Search:
    """Standley et al.'s criterion: at most ``N`` groups, overlapping allowed; see the module."""
    check_size(aff)
    n = len(aff.tasks)
    served = [aff.tasks.index(t) for t in aff.served]
    table = _score_table(aff.matrix)
    masks = np.arange(1 << n)
    s = len(served)
    # cover[p]: the best group serving exactly the served tasks of sub-mask p (over served bits)
    cover_value = np.full(1 << s, -np.inf)
    cover_group = np.zeros(1 << s, dtype=np.int64)
    for p in range(1, 1 << s):
        js = [served[b] for b in range(s) if p >> b & 1]
        need = sum(1 << j for j in js)
        supersets = masks[(masks & need) == need]
        values = table[np.ix_(supersets, js)].sum(axis=1)
        top = values.max()
        ties = supersets[values >= top - _EPS]
        sizes = [bin(int(g)).count("1") for g in ties]
        cover_value[p], cover_group[p] = top, ties[int(np.argmin(sizes))]  # fewest helpers
    visited = sum(1 << (n - bin(p).count("1")) for p in range(1, 1 << s))
    # f[k][m]: the best split of served sub-mask m into exactly k blocks
    full = (1 << s) - 1
    f = [dict(enumerate(cover_value.tolist()))]
    choice: list[dict[int, int]] = [{m: m for m in range(1 << s)}]
    for _ in range(2, min(max_groups, s) + 1):
        fk: dict[int, float] = {}
        ck: dict[int, int] = {}
        prev = f[-1]
        for m in range(1, 1 << s):
            low = m & -m
            rest = m ^ low
            best_v, best_sub = -np.inf, 0
            sub = rest
            while True:  # sub-masks of m that hold its lowest bit, m itself excluded
                block = sub | low
                if block != m:
                    v = cover_value[block] + prev.get(m ^ block, -np.inf)
                    if v > best_v + _EPS:
                        best_v, best_sub = v, block
                if sub == 0:
                    break
                sub = (sub - 1) & rest
            fk[m], ck[m] = best_v, best_sub
        f.append(fk)
        choice.append(ck)
    best: dict[int, Proposal] = {}
    for k in range(1, len(f) + 1):
        if not np.isfinite(f[k - 1].get(full, -np.inf)):
            continue
        blocks_served, m = [], full
        for level in range(k - 1, -1, -1):
            block = choice[level][m]
            blocks_served.append(block)
            m ^= block
        groups: dict[int, list[int]] = {}  # the same group may serve two blocks: merge them
        for block in blocks_served:
            groups.setdefault(int(cover_group[block]), []).extend(
                served[b] for b in range(s) if block >> b & 1
            )
        blocks = [([i for i in range(n) if g >> i & 1], js) for g, js in groups.items()]
        proposal = _proposal(aff, "selection", blocks)
        size = len(proposal.groups)
        if size not in best or proposal.total > best[size].total + _EPS:
            best[size] = proposal
    return Search("selection", dict(sorted(best.items())), visited)


def search(aff: AffinityMatrix, max_groups: int, criterion: str) -> Search:
    """Run the named criterion's search (``partition`` or ``selection``)."""
    if max_groups < 1:
        raise ConfigError(f"the budget is a number of trunks: at least 1, got {max_groups}")
    if criterion == "partition":
        return partition_search(aff, max_groups)
    if criterion == "selection":
        return selection_search(aff, max_groups)
    raise ConfigError(f"unknown grouping criterion {criterion!r}; valid: {', '.join(CRITERIA)}")


def best_proposal(searches: Sequence[Search]) -> Proposal:
    """The highest predicted total; ties go to fewer groups, then to the earlier criterion."""
    candidates = [p for s in searches for p in s.best.values()]
    if not candidates:
        raise ConfigError("no grouping proposal: nothing to serve")
    best = candidates[0]
    for p in candidates[1:]:
        if p.total > best.total + _EPS or (
            abs(p.total - best.total) <= _EPS and len(p.groups) < len(best.groups)
        ):
            best = p
    return best
