"""Training configs derived from a run's: one group's tasks, a branched tree, plain HPS.

Each starts from the run's ``config.yaml`` (exactly what was trained) and changes only what the
grouping decides: the tasks, which of them are auxiliary, and the architecture.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from training.analysis.grouping import Group
from training.errors import ConfigError
from training.runs import CONFIG_FILE


class _FlowList(list[Any]):
    """A list YAML writes in flow style: ``[[0, [[a], [b, c]]]]``, as the docs spell a tree."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def dump_config(raw: dict[str, Any]) -> str:
    """A config as YAML, in the order given, ``model.branches`` on one line."""
    out = copy.deepcopy(raw)
    model = out.get("model") or {}
    if model.get("branches") is not None:
        model["branches"] = _FlowList(model["branches"])
    return yaml.dump(out, Dumper=_Dumper, sort_keys=False)


def run_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml`` as a dict."""
    path = Path(run_dir) / CONFIG_FILE
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a mapping")
    return raw


def _without_tree(raw: dict[str, Any], architecture: str | None = None) -> dict[str, Any]:
    out = copy.deepcopy(raw)
    model = out.setdefault("model", {})
    if architecture is not None:
        model["architecture"] = architecture
    elif model.get("architecture") == "branched":  # a run's tree does not fit other tasks
        model["architecture"] = "hps"
    model.pop("branches", None)
    return out


def group_config(raw: dict[str, Any], group: Group, name: str) -> dict[str, Any]:
    """The run's config over ``group``'s tasks; those it does not serve become auxiliary.

    The architecture stays the run's (a ``branched`` run's becomes ``hps``: its tree names
    tasks a group may not have).
    """
    out = _without_tree(raw)
    out["name"] = name
    out["tasks"] = [
        {**t, "auxiliary": bool(t.get("auxiliary")) or t["name"] not in group.serves}
        for t in raw["tasks"]
        if t["name"] in group.tasks
    ]
    return out


def branched_config(
    raw: dict[str, Any], name: str, tasks: Sequence[str], branches: list[list[Any]]
) -> dict[str, Any]:
    """The run's config over ``tasks`` as one ``branched`` model with ``branches``."""
    out = _without_tree(raw, "branched")
    out["name"] = name
    out["tasks"] = [t for t in raw["tasks"] if t["name"] in tasks]
    out["model"]["branches"] = branches
    return out


def hps_config(raw: dict[str, Any]) -> dict[str, Any]:
    """The run's config as hard parameter sharing over all its tasks (the cost reference)."""
    return _without_tree(raw, "hps")
