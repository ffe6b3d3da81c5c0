"""``polyhead affinity``: a run's task affinities, printed, as JSON and as heat maps.

Two sources, each used when the run has it: RSA per backbone stage, from the single-task
baselines (``RUN/baselines/TASK`` or a ``--baselines`` folder of ``TASK/`` runs), and TAG, from
``RUN/affinity_tag.json`` when the run measured it. For each auxiliary task it also says
whether it helps the served ones: TAG's ``Z[aux][served] > 0``, and how similar RSA finds
their representations.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from training.analysis.heatmap import decimals, draw_heatmap
from training.analysis.matrices import TAG_FILE, AffinityMatrix, TagAffinity, read_tag
from training.analysis.rsa import MIN_IMAGES, LayerAffinity, measure_rsa
from training.errors import ConfigError
from training.runs import WEIGHTS_FILE, Run, load_run

log = logging.getLogger(__name__)

AFFINITY_DIR = "affinity"
AFFINITY_FILE = "affinity.json"
DEFAULT_IMAGES = 100


@dataclass
class Affinities:
    """What a run's affinities are, from whichever sources it has."""

    run: Run
    rsa: LayerAffinity | None
    tag: TagAffinity | None
    missing_baselines: list[str] = field(default_factory=list)

    @property
    def tasks(self) -> list[str]:
        """The run's tasks, in config order."""
        return [t.name for t in self.run.tasks]

    @property
    def auxiliary(self) -> list[str]:
        """The run's auxiliary tasks."""
        return [t.name for t in self.run.tasks if t.auxiliary]

    @property
    def served(self) -> list[str]:
        """The run's served (exported) tasks."""
        return [t.name for t in self.run.tasks if not t.auxiliary]


def baselines_of(run_dir: Path, tasks: Sequence[str], folder: Path | None) -> dict[str, Path]:
    """Each task's finished single-task run: ``folder/TASK`` if given, else ``RUN/baselines``."""
    from training.baselines import find_baselines

    found = find_baselines(run_dir, list(tasks))
    if folder is not None:
        found.update({t: folder / t for t in tasks if (folder / t / WEIGHTS_FILE).is_file()})
    return {t: found[t] for t in tasks if t in found}


def no_baselines_message(run_dir: Path, folder: Path | None) -> str:
    """Where baselines were looked for, and how to get them."""
    where = f"{folder}/TASK" if folder is not None else f"{run_dir}/baselines/TASK"
    return (
        f"no single-task baselines found in {where} (train the run with --baselines, or pass "
        "--baselines DIR holding TASK/ run folders)"
    )


def read_run_tag(run: Run) -> TagAffinity | None:
    """The run's TAG matrix in its task order, or None if it did not measure it."""
    path = run.path / TAG_FILE
    if not path.is_file():
        return None
    tag = read_tag(path)
    names = [t.name for t in run.tasks]
    if set(tag.affinity.tasks) != set(names):
        raise ConfigError(f"{path} measures tasks {list(tag.affinity.tasks)}, the run has {names}")
    aux = frozenset(t.name for t in run.tasks if t.auxiliary)
    ordered = tag.affinity.restrict(names)
    return TagAffinity(
        AffinityMatrix(ordered.tasks, ordered.matrix, aux),
        tag.measurements,
        tag.every_steps,
        tag.undefined,
        tag.path,
    )


def collect(
    run_dir: Path,
    baselines: Path | None,
    images: int,
    data: Path | None,
    split: str | None,
    need_rsa: bool = False,
    need_tag: bool = False,
) -> Affinities:
    """Load the run and measure (RSA) or read (TAG) its affinities.

    Raises:
        ConfigError: A source asked for (or any, when neither is) is not there.
    """
    if images < MIN_IMAGES:  # checked before anything is loaded, whichever source is used
        raise ConfigError(f"--images must be at least {MIN_IMAGES}, got {images}")
    run = load_run(run_dir)
    names = [t.name for t in run.tasks]
    if len(names) < 2:
        raise ConfigError(f"run {run_dir} has one task ({names[0]}): no affinity between tasks")
    tag = read_run_tag(run)
    if need_tag and tag is None:
        raise ConfigError(
            f"run {run_dir} has no {TAG_FILE} (train it with analysis.affinity.every_steps "
            "set to measure TAG), or use --method rsa"
        )
    if tag is not None and tag.measurements == 0:
        raise ConfigError(f"{tag.path} holds no measurement (training took fewer steps)")
    found = baselines_of(run_dir, names, baselines)
    missing = [t for t in names if t not in found]
    aux = frozenset(t.name for t in run.tasks if t.auxiliary)
    rsa = None
    if len(found) >= 2:
        rsa = measure_rsa(found, data, split or run.config.data.val_split, images, aux)
        if missing:
            log.warning("no single-task baseline of %s: left out of RSA", ", ".join(missing))
    elif need_rsa or tag is None:
        if found:
            raise ConfigError(
                f"RSA compares tasks, and only {', '.join(found)} has a single-task baseline; "
                + no_baselines_message(run_dir, baselines).replace("no single-task", "other", 1)
            )
        raise ConfigError(no_baselines_message(run_dir, baselines))
    else:
        log.warning("%s: RSA skipped, TAG only", no_baselines_message(run_dir, baselines))
    return Affinities(run, rsa, tag, missing)


def auxiliary_help(aff: Affinities) -> dict[str, dict[str, Any]]:
    """For each auxiliary task: TAG onto each served task, RSA similarity, and a verdict."""
    out: dict[str, dict[str, Any]] = {}
    for a in aff.auxiliary:
        entry: dict[str, Any] = {"helps": None}
        if aff.tag is not None:
            onto = {s: aff.tag.affinity.value(a, s) for s in aff.served}
            entry["tag"] = onto
            entry["tag_mean"] = float(np.mean(list(onto.values())))
            entry["helps"] = entry["tag_mean"] > 0
        if aff.rsa is not None and a in aff.rsa.tasks:
            mean = aff.rsa.mean()
            entry["rsa_mean_over_stages"] = {
                s: mean.value(a, s) for s in aff.served if s in aff.rsa.tasks
            }
            entry["rsa_per_stage"] = {
                s: [st.value(a, s) for st in aff.rsa.stages]
                for s in aff.served
                if s in aff.rsa.tasks
            }
        out[a] = entry
    return out


def format_matrix(a: AffinityMatrix, places: int | None = None) -> str:
    """A text table: rows are sources, columns targets."""
    places = decimals(a.matrix) if places is None else places
    width = max(max(len(t) for t in a.tasks), places + 4)
    head = " " * (width + 2) + "  ".join(f"{t:>{width}}" for t in a.tasks)
    rows = [
        f"  {src:<{width}}" + "  ".join(f"{v:>+{width}.{places}f}" for v in a.matrix[i])
        for i, src in enumerate(a.tasks)
    ]
    return "\n".join([head, *rows])


def format_report(aff: Affinities) -> str:
    """What ``polyhead affinity`` prints."""
    lines = []
    if aff.rsa is not None:
        k, split = len(aff.rsa.image_ids), aff.rsa.split
        lines.append(
            f"RSA affinity: Spearman correlation of the single-task models' representation "
            f"dissimilarity matrices on {k} {split} images (symmetric, 1 = same geometry)"
        )
        for s, st in enumerate(aff.rsa.stages):
            lines.append(
                f"stage {s} (end of backbone stage {s}, {_fineness(s, len(aff.rsa.stages))}):"
            )
            lines.append(format_matrix(st, 3))
        if aff.missing_baselines:
            lines.append(f"(no baseline, not in RSA: {', '.join(aff.missing_baselines)})")
    if aff.tag is not None:
        t = aff.tag
        how = f"{t.measurements} measurements" if t.measurements is not None else "measured"
        if t.every_steps:
            how += f", every {t.every_steps} steps"
        lines.append(
            f"TAG affinity ({t.path}, {how}): row i = source, column j = target, Z[i][j] > 0 "
            "when i's update lowers j's loss"
        )
        lines.append(format_matrix(t.affinity, _tag_places(t.affinity.matrix)))
        if t.undefined:
            pairs = ", ".join(f"{i}->{j}" for i, j in t.undefined)
            lines.append(f"(undefined in every measurement, read as 0: {pairs})")
    for a, entry in auxiliary_help(aff).items():
        lines.append(_aux_line(a, entry))
    return "\n".join(lines)


def _off_diagonal(m: np.ndarray) -> np.ndarray:
    return m[~np.eye(len(m), dtype=bool)]


def _tag_places(m: np.ndarray) -> int:
    """Decimals for TAG: from the off-diagonal values (a task's own gain dwarfs them)."""
    return decimals(_off_diagonal(m))


def _fineness(s: int, n: int) -> str:
    return "finest" if s == 0 else "coarsest" if s == n - 1 else "middle"


def _aux_line(a: str, entry: dict[str, Any]) -> str:
    parts = []
    if "tag" in entry:
        onto = ", ".join(
            f"{s} {v:+.3g} ({'helps' if v > 0 else 'hurts'})" for s, v in entry["tag"].items()
        )
        verdict = "helps" if entry["helps"] else "does not help"
        parts.append(f"TAG onto {onto}: {verdict} the served tasks (mean {entry['tag_mean']:+.3g})")
    if "rsa_mean_over_stages" in entry:
        sims = ", ".join(f"{s} {v:.3f}" for s, v in entry["rsa_mean_over_stages"].items())
        parts.append(f"RSA similarity (mean over stages) with {sims}")
    if not parts:
        parts.append("no TAG and no baseline: nothing to tell")
    return f"auxiliary {a}: " + "; ".join(parts)


def to_json(aff: Affinities, figures: list[str]) -> dict[str, Any]:
    """The content of ``affinity.json``."""
    record: dict[str, Any] = {
        "run": str(aff.run.path),
        "tasks": aff.tasks,
        "auxiliary": aff.auxiliary,
        "rsa": None,
        "tag": None,
    }
    if aff.rsa is not None:
        record["rsa"] = {
            "method": "Spearman correlation of RDMs (1 - Pearson between images' features), "
            "per backbone stage (Vandenhende et al. 2020)",
            "tasks": list(aff.rsa.tasks),
            "split": aff.rsa.split,
            "images": len(aff.rsa.image_ids),
            "image_ids": aff.rsa.image_ids,
            "baselines": {t: str(p) for t, p in aff.rsa.baselines.items()},
            "missing_baselines": aff.missing_baselines,
            "stages": [{"stage": s, **a.to_json()} for s, a in enumerate(aff.rsa.stages)],
        }
    if aff.tag is not None:
        record["tag"] = {
            "method": "TAG (Fifty et al. 2021): Z[i][j] = 1 - L_j(after i's step) / L_j(before)",
            "source": str(aff.tag.path),
            "measurements": aff.tag.measurements,
            "every_steps": aff.tag.every_steps,
            "undefined": [list(p) for p in aff.tag.undefined],
            **aff.tag.affinity.to_json(),
        }
    record["auxiliary_help"] = auxiliary_help(aff)
    record["figures"] = figures
    return record


def write_report(aff: Affinities, out: Path) -> list[Path]:
    """Write ``affinity.json`` and a heat map per method and stage into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if aff.rsa is not None:
        for s, st in enumerate(aff.rsa.stages):
            written.append(
                draw_heatmap(
                    st.matrix,
                    st.tasks,
                    f"RSA affinity, stage {s} ({len(aff.rsa.image_ids)} {aff.rsa.split} images)",
                    out / f"rsa_stage{s}.png",
                    caption="Spearman of RDMs; symmetric",
                    limit=1.0,
                )
            )
    if aff.tag is not None:
        m = aff.tag.affinity.matrix
        off = np.abs(_off_diagonal(m))
        written.append(
            draw_heatmap(
                m,
                aff.tag.affinity.tasks,
                f"TAG affinity ({aff.tag.measurements} measurements)",
                out / "tag.png",
                caption="row i = source, column j = target (colours: off-diagonal range)",
                limit=float(off.max()) if off.size and off.max() > 0 else None,
                places=_tag_places(m),
            )
        )
    target = out / AFFINITY_FILE
    record = to_json(aff, [p.name for p in written])
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2))
    tmp.replace(target)
    return [target, *written]
