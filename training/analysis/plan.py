"""``polyhead group``: task groups within a budget of trunks, and configs ready to train them.

From TAG (``--method tag``, the run's ``affinity_tag.json``) or RSA (``--method rsa``, the
single-task baselines), the best grouping for each number of groups up to the budget under
both criteria (``training.analysis.grouping``), each with its compute cost measured by building
its models. Then, for the best proposal, one config per group (the run's config with only that
group's tasks; tasks trained there only to help are marked auxiliary) and one ``branched``
config with the groups as its final branches: where they split is chosen from RSA's layer-wise
affinity within the budget (``training.analysis.branching``), or, without RSA, at the necks
(the whole backbone shared).

RSA as a grouping score: its similarities are all positive in practice, so a task would always
score higher in a bigger group; each pair's similarity is taken relative to the mean similarity
of all pairs (averaged over stages) instead, so that a pair more alike than usual attracts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.analysis.branching import Tree, branching_search, split_at_necks
from training.analysis.configs import (
    branched_config,
    dump_config,
    group_config,
    hps_config,
    run_config,
)
from training.analysis.cost import Cost, model_cost, stage_costs
from training.analysis.grouping import (
    MAX_EXACT_TASKS,
    Group,
    Proposal,
    Search,
    best_proposal,
    partition_search,
    selection_search,
)
from training.analysis.matrices import TAG_FILE, AffinityMatrix
from training.analysis.report import Affinities, collect
from training.config import parse_config
from training.errors import ConfigError
from training.runs import Run, build_model, load_run
from training.tasks import build_task

GROUPING_DIR = "grouping"
GROUPING_FILE = "grouping.json"
BRANCHED_FILE = "branched.yaml"
METHODS = ("tag", "rsa")


@dataclass
class GroupPlan:
    """Everything ``polyhead group`` found and wrote."""

    method: str
    affinity: AffinityMatrix
    budget: int
    searches: list[Search]
    costs: dict[tuple[tuple[str, ...], tuple[str, ...]], Cost]
    hps: Cost
    best: Proposal
    configs: list[Path]
    branched: Path
    branched_tree: dict[str, Any]
    layerwise: Tree | None
    source: str


def grouping_affinity(aff: Affinities, method: str) -> tuple[AffinityMatrix, str]:
    """The matrix the grouping is scored on, and a line saying where it comes from."""
    if method == "tag":
        assert aff.tag is not None
        return aff.tag.affinity, f"TAG ({aff.tag.path}, {aff.tag.measurements} measurements)"
    assert aff.rsa is not None
    lacking = [t for t in aff.served if t not in aff.rsa.tasks]
    if lacking:
        raise ConfigError(
            f"--method rsa needs a single-task baseline of every served task; none for "
            f"{', '.join(lacking)}"
        )
    mean = aff.rsa.mean()
    off = ~np.eye(len(mean.tasks), dtype=bool)
    centred = mean.matrix - mean.matrix[off].mean()
    np.fill_diagonal(centred, 0.0)
    left_out = [t for t in aff.auxiliary if t not in aff.rsa.tasks]
    note = f"; no baseline, left out: {', '.join(left_out)}" if left_out else ""
    return (
        AffinityMatrix(mean.tasks, centred, mean.auxiliary),
        f"RSA (mean over stages, minus the mean pair's; {len(aff.rsa.image_ids)} "
        f"{aff.rsa.split} images{note})",
    )


def _group_cost(run: Run, raw: dict[str, Any], group: Group) -> Cost:
    cfg = parse_config(group_config(raw, group, "cost"), "group config")
    kinds = {t.name: t for t in run.tasks}
    tasks = [
        build_task(t.name, kinds[t.name].kind, kinds[t.name].labels, t.auxiliary) for t in cfg.tasks
    ]
    return model_cost(build_model(cfg, tasks, load_weights=False), run.input_size)


def leaves_of(proposal: Proposal, aff: AffinityMatrix, tasks: list[str]) -> list[tuple[str, ...]]:
    """The final branches of a tree: each served task in the group serving it.

    Each auxiliary task goes where it helps most (its summed affinity onto the group's served
    tasks) among the groups it is in; in none, it is left out.
    """
    members: list[list[str]] = [list(g.serves) for g in proposal.groups]
    for a in aff.auxiliary:
        where = [i for i, g in enumerate(proposal.groups) if a in g.tasks]
        if where:
            i = max(where, key=lambda k: sum(aff.value(a, s) for s in proposal.groups[k].serves))
            members[i].append(a)
    return [tuple(t for t in tasks if t in m) for m in members]


def plan_groups(
    run_dir: Path,
    budget: int,
    method: str | None,
    out: Path | None,
    criterion: str | None,
    baselines: Path | None,
    images: int,
    data: Path | None,
    split: str | None,
) -> GroupPlan:
    """Search the groupings, measure their cost, write the configs of the best one.

    Raises:
        ConfigError: A budget below 1, an unknown method or criterion, the method's source
            missing (no TAG file, no baselines), or too many tasks for the exact search.
    """
    if budget < 1:
        raise ConfigError(
            f"--budget is a number of trunks (one per group): at least 1, got {budget}"
        )
    if method is not None and method not in METHODS:
        raise ConfigError(f"unknown --method {method!r}; valid: {', '.join(METHODS)}")
    if criterion is not None and criterion not in ("partition", "selection"):
        raise ConfigError(f"unknown --criterion {criterion!r}; valid: partition, selection")
    if method is None:
        method = "tag" if (Path(run_dir) / TAG_FILE).is_file() else "rsa"
    names = [t.name for t in load_run(run_dir).tasks]
    if len(names) > MAX_EXACT_TASKS:
        raise ConfigError(
            f"the exact grouping search handles at most {MAX_EXACT_TASKS} tasks; run {run_dir} "
            f"has {len(names)}"
        )
    aff = collect(
        run_dir, baselines, images, data, split, need_rsa=method == "rsa", need_tag=method == "tag"
    )
    run = aff.run
    matrix, source = grouping_affinity(aff, method)
    searches = [partition_search(matrix, budget), selection_search(matrix, budget)]
    raw = run_config(run.path)
    costs: dict[tuple[tuple[str, ...], tuple[str, ...]], Cost] = {}
    for s in searches:
        for p in s.best.values():
            for g in p.groups:
                key = (g.tasks, g.serves)
                if key not in costs:
                    costs[key] = _group_cost(run, raw, g)
    hps_cfg = parse_config(hps_config(raw), "HPS")
    hps = model_cost(build_model(hps_cfg, run.tasks, load_weights=False), run.input_size)
    chosen = [s for s in searches if criterion is None or s.criterion == criterion]
    best = best_proposal(chosen)

    # every config is checked before any file is written
    written = [
        group_config(raw, g, f"{run.config.name}-group{i}")
        for i, g in enumerate(best.groups, start=1)
    ]
    for i, cfg_raw in enumerate(written, start=1):
        parse_config(cfg_raw, f"group {i}")
    branched_raw, branched, layerwise = _branched(aff, raw, matrix, best, budget, hps)

    target = Path(out) if out is not None else run.path / GROUPING_DIR
    target.mkdir(parents=True, exist_ok=True)
    configs = []
    for i, cfg_raw in enumerate(written, start=1):
        path = target / f"group_{i}.yaml"
        path.write_text(dump_config(cfg_raw))
        configs.append(path)
    branched_path = target / BRANCHED_FILE
    branched_path.write_text(dump_config(branched_raw))
    plan = GroupPlan(
        method,
        matrix,
        budget,
        searches,
        costs,
        hps,
        best,
        configs,
        branched_path,
        branched,
        layerwise,
        source,
    )
    (target / GROUPING_FILE).write_text(json.dumps(plan_json(plan), indent=2))
    return plan


def _branched(
    aff: Affinities,
    raw: dict[str, Any],
    matrix: AffinityMatrix,
    best: Proposal,
    budget: int,
    hps: Cost,
) -> tuple[dict[str, Any], dict[str, Any], Tree | None]:
    """The branched config of ``best``'s groups, its tree and cost, and RSA's own tree.

    Split points from RSA's layer-wise affinity within ``budget`` times HPS's MACs when the
    run has baselines; else the whole backbone shared and the groups split at the necks.
    """
    run, names = aff.run, aff.tasks
    leaves = leaves_of(best, matrix, names)
    leaf_tasks = [t for t in names if any(t in leaf for leaf in leaves)]
    kinds = [t for t in run.tasks if t.name in leaf_tasks]
    layerwise = None
    if aff.rsa is not None:
        parts = stage_costs(run.config, kinds, run.input_size)
        tree = branching_search(
            aff.rsa.stages, leaf_tasks, parts, budget, "macs", leaves, reference=hps
        )
        branched = {
            "how": f"split stages from RSA's layer-wise affinity, at most {budget}x HPS's MACs",
            **tree.to_json(),
        }
        if set(aff.rsa.tasks) == set(names):
            every = stage_costs(run.config, run.tasks, run.input_size)
            layerwise = branching_search(
                aff.rsa.stages, names, every, budget, "macs", reference=hps
            )
    else:
        branched = {
            "branches": split_at_necks(leaves),
            "how": "no RSA (no single-task baselines): the whole backbone shared, a neck and "
            "heads per group (stage 4)",
        }
    branched_raw = branched_config(
        raw, f"{run.config.name}-branched", leaf_tasks, branched["branches"]
    )
    cfg = parse_config(branched_raw, "branched config")
    built = model_cost(build_model(cfg, kinds, load_weights=False), run.input_size)
    branched["cost"], branched["relative_to_hps"] = built.to_json(), built.relative(hps)
    return branched_raw, branched, layerwise


def _proposal_json(p: Proposal, plan: GroupPlan) -> dict[str, Any]:
    total = proposal_cost(p, plan)
    return {
        "criterion": p.criterion,
        "groups": [{"tasks": list(g.tasks), "serves": list(g.serves)} for g in p.groups],
        "predicted": p.scores,
        "predicted_total": p.total,
        "trunks": len(p.groups),
        "cost": total.to_json(),
        "relative_to_hps": total.relative(plan.hps),
    }


def proposal_cost(p: Proposal, plan: GroupPlan) -> Cost:
    """The summed cost of a proposal's models."""
    total = Cost(0, 0)
    for g in p.groups:
        total = total + plan.costs[(g.tasks, g.serves)]
    return total


def plan_json(plan: GroupPlan) -> dict[str, Any]:
    """The content of ``grouping.json``."""
    return {
        "method": plan.method,
        "affinity": {"source": plan.source, **plan.affinity.to_json()},
        "budget": plan.budget,
        "hps_cost": plan.hps.to_json(),
        "searches": [
            {
                "criterion": s.criterion,
                "visited": s.visited,
                "best": {str(k): _proposal_json(p, plan) for k, p in s.best.items()},
            }
            for s in plan.searches
        ],
        "chosen": _proposal_json(plan.best, plan),
        "configs": [str(p) for p in plan.configs],
        "branched": {"config": str(plan.branched), **plan.branched_tree},
        "layerwise_tree": plan.layerwise.to_json() if plan.layerwise is not None else None,
    }


_CRITERIA_LINES = {
    "partition": "partition: each served task in exactly one group (TAG, Fifty et al. 2021)",
    "selection": "selection: groups may overlap, each served task predicted by its best group "
    "(Standley et al. 2020)",
}


def _group_text(g: Group) -> str:
    helpers = f" | {', '.join(g.helpers)}" if g.helpers else ""
    return "{" + ", ".join(g.serves) + helpers + "}"


def format_plan(plan: GroupPlan) -> str:
    """What ``polyhead group`` prints."""
    lines = [f"grouping by {plan.source}, budget {plan.budget} trunks"]
    for s in plan.searches:
        counted = "partitions" if s.criterion == "partition" else "(block, group) pairs"
        lines.append(f"{_CRITERIA_LINES[s.criterion]}; {s.visited} {counted} evaluated")
        rows = []
        for k, p in s.best.items():
            rel = proposal_cost(p, plan).relative(plan.hps)
            per = ", ".join(f"{t} {v:+.4g}" for t, v in p.scores.items())
            rows.append(
                (
                    str(k),
                    "  ".join(_group_text(g) for g in p.groups),
                    f"{p.total:+.4g}",
                    per,
                    f"{rel['params']:.2f}x",
                    f"{rel['macs']:.2f}x",
                )
            )
        head = ("k", "groups", "total", "predicted per served task", "params", "MACs")
        widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
        for r in [head, *rows]:
            lines.append("  " + "  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)))
    lines.append(
        "(after |: trained there only to help; costs: all of a proposal's models, as multiples "
        f"of one HPS model over every task: {plan.hps.params:,} params, {plan.hps.macs:,} MACs "
        "per image)"
    )
    best = plan.best
    lines.append(
        f"best: {best.criterion}, {len(best.groups)} group(s), predicted total {best.total:+.4g}"
    )
    for path, g in zip(plan.configs, best.groups, strict=True):
        helpers = f"; {', '.join(g.helpers)} auxiliary" if g.helpers else ""
        lines.append(f"wrote {path} ({', '.join(g.serves)}{helpers})")
    b = plan.branched_tree
    rel = b["relative_to_hps"]
    lines.append(
        f"wrote {plan.branched}: branches {json.dumps(b['branches'])} ({b['how']}; "
        f"{rel['macs']:.2f}x HPS MACs, {rel['params']:.2f}x params)"
    )
    if plan.layerwise is not None:
        t = plan.layerwise
        lines.append(
            f"tree from RSA alone over every task (at most {plan.budget}x HPS MACs): branches "
            f"{json.dumps(t.to_config())}, within-branch dissimilarity {t.dissimilarity:.3f}, "
            f"{t.relative['macs']:.2f}x HPS MACs"
        )
    return "\n".join(lines)
