"""Task grouping (TAG's partition, Standley et al.'s selection) and the branching tree search."""

from __future__ import annotations

import json
from functools import cache
from itertools import combinations

import numpy as np
import pytest

from training.analysis.branching import branching_search, split_at_necks
from training.analysis.cost import Cost, StageCosts
from training.analysis.grouping import (
    MAX_EXACT_TASKS,
    best_proposal,
    partition_search,
    search,
    selection_search,
    set_partitions,
    task_score,
)
from training.analysis.matrices import AffinityMatrix, read_tag
from training.errors import ConfigError


@cache
def stirling2(n: int, k: int) -> int:
    """Partitions of n items into exactly k non-empty blocks."""
    if n == k:
        return 1
    if k == 0 or k > n:
        return 0
    return k * stirling2(n - 1, k) + stirling2(n - 1, k - 1)


def groups_of(proposal) -> list[set[str]]:
    return [set(g.tasks) for g in proposal.groups]


# a, b help each other (1.0), c, d a little (0.2), b, c a lot (1.5); every other pair hurts
# (-1). Two groups: {a, b} {c, d} (2.4) beats {a, d} {b, c} (1.0) and every 3 + 1 split (<= 1.5);
# three: {b, c} alone with a and d apart (3.0) beats {a, b} {c} {d} (2.0).
FOUR = AffinityMatrix(
    ("a", "b", "c", "d"),
    np.array(
        [
            [0.0, 1.0, -1.0, -1.0],
            [1.0, 0.0, 1.5, -1.0],
            [-1.0, 1.5, 0.0, 0.2],
            [-1.0, -1.0, 0.2, 0.0],
        ]
    ),
)


def test_the_partition_search_finds_the_best_grouping_for_each_budget():
    two = best_proposal([partition_search(FOUR, 2)])
    assert groups_of(two) == [{"a", "b"}, {"c", "d"}]
    assert two.total == pytest.approx(2.4)
    three = best_proposal([partition_search(FOUR, 3)])
    assert groups_of(three) == [{"a"}, {"b", "c"}, {"d"}]
    assert three.total == pytest.approx(3.0)
    assert three.scores == pytest.approx({"a": 0.0, "b": 1.5, "c": 1.5, "d": 0.0})
    one = partition_search(FOUR, 1).best[1]
    assert one.total == pytest.approx(-0.2)  # e.g. b: mean(1.0, 1.5, -1.0) = 0.5


def test_the_partition_search_matches_a_brute_force_on_random_matrices():
    rng = np.random.default_rng(0)
    for _ in range(20):
        aff = AffinityMatrix(tuple("abcde"), rng.normal(size=(5, 5)))
        for n in (1, 2, 3, 5):
            best = partition_search(aff, n)
            for k, p in best.best.items():
                brute = max(
                    sum(task_score(aff.matrix, b, j) for b in part for j in b)
                    for part in set_partitions(list(range(5)), k)
                    if len(part) == k
                )
                assert p.total == pytest.approx(brute)
                assert len(p.groups) == k


@pytest.mark.parametrize("n", range(1, 8))
def test_the_partitions_visited_are_the_stirling_and_bell_numbers(n):
    aff = AffinityMatrix(tuple(f"t{i}" for i in range(n)), np.zeros((n, n)))
    for budget in range(1, n + 1):
        expected = sum(stirling2(n, k) for k in range(1, budget + 1))
        assert partition_search(aff, budget).visited == expected
    bell = [1, 1, 2, 5, 15, 52, 203, 877][n]
    assert partition_search(aff, n).visited == bell
    seen = [frozenset(map(frozenset, p)) for p in set_partitions(list(range(n)), n)]
    assert len(seen) == len(set(seen)) == bell


# b helps a and c (1.0), a and c hurt each other (-1): a partition serves at most one of them
# with b (1.5); overlapping groups {a, b} and {b, c} serve both (2.5), b from either.
OVERLAP = AffinityMatrix(
    ("a", "b", "c"), np.array([[0.0, 0.5, -1.0], [1.0, 0.0, 1.0], [-1.0, 0.5, 0.0]])
)


def test_standleys_selection_may_overlap_and_beats_any_partition():
    partition = partition_search(OVERLAP, 2).best[2]
    assert partition.total == pytest.approx(1.5)
    assert not partition.overlapping
    selection = selection_search(OVERLAP, 2).best[2]
    assert selection.overlapping
    assert groups_of(selection) == [{"a", "b"}, {"b", "c"}]
    assert selection.scores == pytest.approx({"a": 1.0, "b": 0.5, "c": 1.0})
    assert selection.total == pytest.approx(2.5)
    # each served task is served by exactly one group
    served = [t for g in selection.groups for t in g.serves]
    assert sorted(served) == ["a", "b", "c"]
    assert best_proposal([partition_search(OVERLAP, 2), selection_search(OVERLAP, 2)]) == selection


def _brute_selection(aff: AffinityMatrix, budget: int) -> float:
    """Standley et al.'s selection by enumerating every set of at most ``budget`` groups."""
    n = len(aff.tasks)
    served = [aff.tasks.index(t) for t in aff.served]
    candidates = [
        g for r in range(1, n + 1) for g in combinations(range(n), r) if set(g) & set(served)
    ]
    best = -np.inf
    for k in range(1, budget + 1):
        for chosen in combinations(candidates, k):
            if not all(any(j in g for g in chosen) for j in served):
                continue
            total = sum(max(task_score(aff.matrix, g, j) for g in chosen if j in g) for j in served)
            best = max(best, total)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_the_selection_equals_enumerating_every_set_of_candidate_groups(seed):
    rng = np.random.default_rng(seed)
    aux = frozenset({"d"}) if seed % 2 else frozenset()
    aff = AffinityMatrix(tuple("abcd"), rng.normal(size=(4, 4)), aux)
    for budget in (1, 2, 3):
        found = max(p.total for p in selection_search(aff, budget).best.values())
        assert found == pytest.approx(_brute_selection(aff, budget))


# x is auxiliary: it helps a (1.0), hurts b (-1.0), and its own gain from a is huge (100)
AUX = AffinityMatrix(
    ("a", "b", "x"),
    np.array([[0.0, 0.0, 100.0], [0.0, 0.0, 5.0], [1.0, -1.0, 0.0]]),
    frozenset({"x"}),
)


@pytest.mark.parametrize("criterion", ["partition", "selection"])
def test_auxiliary_tasks_only_help(criterion):
    found = search(AUX, 3, criterion)
    assert set(found.best) == {1, 2}  # never a group of x alone, which would serve nothing
    two = found.best[2]
    assert [(g.tasks, g.serves) for g in two.groups] == [(("a", "x"), ("a",)), (("b",), ("b",))]
    assert two.scores == pytest.approx({"a": 1.0, "b": 0.0})  # x's own gain counts for nothing
    assert two.total == pytest.approx(1.0)
    for p in found.best.values():
        assert all(g.serves for g in p.groups)
        assert set(p.scores) == {"a", "b"}


def test_an_auxiliary_task_that_helps_two_groups_joins_both():
    aff = AffinityMatrix(
        ("a", "b", "x"),
        np.array([[0.0, -1.0, 0.0], [-1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]),
        frozenset({"x"}),
    )
    two = partition_search(aff, 2).best[2]
    assert [g.tasks for g in two.groups] == [("a", "x"), ("b", "x")]
    assert two.total == pytest.approx(1.0)


def test_one_served_task_with_auxiliary_helpers_is_one_group():
    # x helps a more than x and y together (1.0 vs 0.75): a trains with x only
    m = np.zeros((3, 3))
    m[1, 0], m[2, 0] = 1.0, 0.5
    aff = AffinityMatrix(("a", "x", "y"), m, frozenset({"x", "y"}))
    for criterion in ("partition", "selection"):
        found = search(aff, 3, criterion)
        assert list(found.best) == [1]
        assert found.best[1].groups[0].tasks == ("a", "x")
        assert found.best[1].total == pytest.approx(1.0)


def test_too_many_tasks_or_no_budget_is_refused():
    n = MAX_EXACT_TASKS + 1
    big = AffinityMatrix(tuple(f"t{i}" for i in range(n)), np.zeros((n, n)))
    with pytest.raises(ConfigError, match=f"at most {MAX_EXACT_TASKS} tasks"):
        partition_search(big, 2)
    with pytest.raises(ConfigError, match="at least 1"):
        search(FOUR, 0, "partition")
    with pytest.raises(ConfigError, match="every task is auxiliary"):
        selection_search(AffinityMatrix(("a",), np.zeros((1, 1)), frozenset({"a"})), 1)


# -- branching: the tree of shared stages from layer-wise affinity -------------------------------

#: stem, four equal stages, no neck or head cost: HPS = 500, each extra branch-stage +100
EVEN = StageCosts(
    stem=Cost(1, 100),
    stages=(Cost(1, 100),) * 4,
    neck=Cost(0, 0),
    heads=Cost(0, 0),
    dense=frozenset("abcd"),
)


def layers(early: float, late: float) -> list[AffinityMatrix]:
    """a~b and c~d at every stage; across the pairs ``early`` at stages 0-1, ``late`` at 2-3."""
    out = []
    for cross in (early, early, late, late):
        m = np.full((4, 4), cross)
        m[0, 1] = m[1, 0] = m[2, 3] = m[3, 2] = 1.0
        np.fill_diagonal(m, 1.0)
        out.append(AffinityMatrix(tuple("abcd"), m))
    return out


def test_the_tree_splits_where_the_tasks_stop_sharing_their_geometry():
    similar_then_not = layers(early=1.0, late=0.0)
    tree = branching_search(similar_then_not, "abcd", EVEN, budget=1.5)
    assert tree.to_config() == [[2, [["a", "b"], ["c", "d"]]]]
    assert tree.dissimilarity == 0.0
    assert tree.cost.macs == 700 and tree.relative["macs"] == pytest.approx(1.4)
    assert tree.levels[1] == (("a", "b", "c", "d"),)
    assert tree.levels[2] == (("a", "b"), ("c", "d"))
    # less budget: split later, and pay for the stage the pairs still share
    later = branching_search(similar_then_not, "abcd", EVEN, budget=1.2)
    assert later.to_config() == [[3, [["a", "b"], ["c", "d"]]]]
    assert later.per_stage == (0.0, 0.0, 4.0, 0.0)
    # no budget beyond sharing everything: hard parameter sharing
    hps = branching_search(similar_then_not, "abcd", EVEN, budget=1.0)
    assert hps.to_config() == [] and hps.dissimilarity == pytest.approx(8.0)


def test_dissimilar_everywhere_splits_at_the_first_stage_the_budget_allows():
    tree = branching_search(layers(early=0.0, late=0.0), "abcd", EVEN, budget=1.6)
    assert tree.to_config() == [[1, [["a", "b"], ["c", "d"]]]]


def _chains(n: int, levels: int):
    """Every sequence of partitions, each refining the one before (as index blocks)."""

    def refine(partition, depth):
        if depth == levels:
            yield []
            return
        options = [list(set_partitions(block, len(block))) for block in partition]

        def pick(i, acc):
            if i == len(options):
                yield acc
                return
            for split in options[i]:
                yield from pick(i + 1, acc + split)

        for finer in pick(0, []):
            for rest in refine(finer, depth + 1):
                yield [finer, *rest]

    yield from refine([list(range(n))], 0)


@pytest.mark.parametrize("seed", range(4))
def test_the_tree_search_matches_every_chain_of_refinements(seed):
    rng = np.random.default_rng(seed)
    tasks = "abcd"
    stage_layers = []
    for _ in range(4):
        m = rng.uniform(-0.5, 1.0, size=(4, 4))
        m = (m + m.T) / 2
        np.fill_diagonal(m, 1.0)
        stage_layers.append(AffinityMatrix(tuple(tasks), m))
    costs = StageCosts(
        Cost(3, 50),
        (Cost(1, 20), Cost(4, 40), Cost(16, 80), Cost(64, 160)),
        Cost(2, 30),
        Cost(1, 5),
        frozenset("ab"),
    )
    for metric in ("macs", "params"):
        for budget in (1.0, 1.3, 2.0, 3.5):
            tree = branching_search(stage_layers, tasks, costs, budget, metric)
            best = np.inf
            for chain in _chains(4, 4):
                counts = [len(p) for p in chain]
                dense = sum(1 for b in chain[-1] if set(b) & {0, 1})
                if costs.tree(counts, dense).get(metric) > budget * costs.hps.get(metric):
                    continue
                d = sum(
                    1 - stage_layers[s].matrix[i, j]
                    for s, p in enumerate(chain)
                    for b in p
                    for i, j in combinations(b, 2)
                )
                best = min(best, d)
            assert tree.dissimilarity == pytest.approx(best)
            assert tree.cost.get(metric) <= budget * costs.hps.get(metric)


def test_given_leaves_split_at_the_necks_when_nothing_else_fits():
    tree = branching_search(
        layers(early=1.0, late=0.0), "abcd", EVEN, budget=1.0, leaves=[("a", "b"), ("c", "d")]
    )
    assert tree.to_config() == [[4, [["a", "b"], ["c", "d"]]]]
    assert split_at_necks([("a", "b"), ("c", "d")]) == tree.to_config()
    assert split_at_necks([("a", "b", "c", "d")]) == []
    roomy = branching_search(
        layers(early=0.0, late=0.0), "abcd", EVEN, budget=4.0, leaves=[("a", "b"), ("c", "d")]
    )
    assert roomy.to_config() == [[0, [["a", "b"], ["c", "d"]]]]  # leaves stay together


def test_a_budget_below_sharing_everything_is_refused():
    with pytest.raises(ConfigError, match=r"fits 0\.5x"):
        branching_search(layers(1.0, 0.0), "abcd", EVEN, budget=0.5)
    with pytest.raises(ConfigError, match="do not partition"):
        branching_search(layers(1.0, 0.0), "abcd", EVEN, 2.0, leaves=[("a", "b"), ("b", "c")])


# -- the TAG file a run writes -------------------------------------------------------------------


def test_the_tag_file_reads_in_the_trainers_layout_and_a_plain_one(tmp_path):
    trainer = {
        "tasks": ["a", "b", "x"],
        "auxiliary": ["x"],
        "measurements": 3,
        "every_steps": 2,
        "mean": {
            "a": {"a": 0.1, "b": 0.02, "x": None},
            "b": {"a": -0.01, "b": 0.2, "x": 0.0},
            "x": {"a": 0.03, "b": 0.04, "x": 0.3},
        },
    }
    (tmp_path / "t.json").write_text(json.dumps(trainer))
    tag = read_tag(tmp_path / "t.json")
    assert tag.affinity.tasks == ("a", "b", "x") and tag.affinity.served == ("a", "b")
    assert tag.affinity.value("a", "b") == 0.02 and tag.affinity.value("b", "a") == -0.01
    assert tag.affinity.value("a", "x") == 0.0 and tag.undefined == (("a", "x"),)
    assert (tag.measurements, tag.every_steps) == (3, 2)
    plain = {"tasks": ["a", "b"], "matrix": [[0.1, 0.02], [-0.01, 0.2]]}
    (tmp_path / "p.json").write_text(json.dumps(plain))
    again = read_tag(tmp_path / "p.json")
    np.testing.assert_array_equal(again.affinity.matrix, [[0.1, 0.02], [-0.01, 0.2]])
    assert again.measurements is None and again.affinity.auxiliary == frozenset()


@pytest.mark.parametrize(
    "content",
    ["not json", json.dumps({"tasks": ["a", "b"], "matrix": [[1.0]]}), json.dumps({"mean": {}})],
)
def test_a_malformed_tag_file_is_a_config_error(tmp_path, content):
    (tmp_path / "t.json").write_text(content)
    with pytest.raises(ConfigError, match=r"t\.json"):
        read_tag(tmp_path / "t.json")


def test_the_reader_looks_where_the_trainer_writes():
    from training.analysis.matrices import TAG_FILE
    from training.analysis.tag import SUMMARY_FILE

    assert TAG_FILE == SUMMARY_FILE
