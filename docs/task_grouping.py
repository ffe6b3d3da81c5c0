"""The README's task-grouping example: which of the synthetic scenes' tasks belong together, and
does a branched model built from that answer beat hard parameter sharing at the same seeds?

    python docs/task_grouping.py [--seeds 0 1 2] [--epochs E] [--jobs 2] [--budgets 2 3]

On the scenes of docs/compare_methods.py (written there if missing), for every seed: the six
single-task baselines and one HPS model (equal weighting) that measures TAG's inter-task
affinity every 10 steps while it trains (measuring does not change the training). Then, on seed
0's HPS run and baselines, what a user would type: ``polyhead affinity RUN --baselines ...``
(RSA per backbone stage, TAG) and ``polyhead group RUN --budget N`` for each budget, whose
``branched.yaml`` is trained at every seed; finally the HPS runs and the branched ones are
compared with the baselines' mean over seeds (``training.compare.compare_runs``).

Controls: for each tree, an HPS model as wide as it is large (the backbone width whose parameter
count is nearest the tree's), at every seed; ``polyhead group`` on every other seed's affinities
(does the proposal depend on the seed? those that differ from seed 0's are trained at every
seed too); and the auxiliary-task report: an HPS run with ``edges``
auxiliary (measuring TAG), what ``affinity`` and ``group`` say of it, and HPS without edges, so
the report's verdict can be checked against what edges does to the served tasks.
Everything the commands print and draw goes to ``docs/grouping``. Finished runs are kept (a
re-run continues).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs"))

from compare_methods import EPOCHS, SEEDS, ensure_data, train_all  # noqa: E402

from training.baselines import baseline_config  # noqa: E402
from training.compare import compare_runs  # noqa: E402
from training.config import TrainConfig, load_config  # noqa: E402
from training.runs import WEIGHTS_FILE, build_model, load_run  # noqa: E402

log = logging.getLogger("task_grouping")

#: TAG is measured every this many optimizer steps (one measurement costs about T/2 steps).
AFFINITY_EVERY = 10
BUDGETS = (2, 3)
#: The auxiliary task of the auxiliary-task control (PAD-Net's contours, as an extra task).
AUXILIARY = "edges"


def polyhead(args: list[str], record: Path) -> str:
    """Run a polyhead command as a user would; keep what it printed in ``record``."""
    cmd = [str(ROOT / ".venv" / "bin" / "polyhead"), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    shown = "$ polyhead " + " ".join(str(a).replace(str(ROOT) + "/", "") for a in args)
    record.write_text(shown + "\n" + done.stdout.replace(str(ROOT) + "/", ""))
    print(record.read_text())
    return done.stdout


def parameters(cfg: TrainConfig, like: Path) -> int:
    """The parameter count of ``cfg``'s model over the tasks of the run ``like``."""
    model = build_model(cfg, load_run(like).tasks, load_weights=False)
    return sum(p.numel() for p in model.parameters())


def matched_width(reference: TrainConfig, params: int, like: Path) -> int:
    """The HPS backbone width whose model is nearest ``params`` parameters."""

    def size(width: int) -> int:
        update = {"model": reference.model.model_copy(update={"width": width})}
        return parameters(reference.model_copy(update=update), like)

    return min(
        range(reference.model.width, 4 * reference.model.width + 1),
        key=lambda w: abs(size(w) - params),
    )


def branches(proposal: Path) -> list:
    """The tree a proposed ``branched.yaml`` trains."""
    return load_config(proposal).model.branches or []


def with_auxiliary(config: Path, overrides: dict, task: str) -> TrainConfig:
    """The config with ``task`` auxiliary (trained, never served)."""
    tasks = load_config(config, overrides).model_dump(mode="json")["tasks"]
    tasks = [t | {"auxiliary": t["name"] == task} for t in tasks]
    return load_config(config, {**overrides, "tasks": tasks})


def without(config: Path, overrides: dict, task: str) -> TrainConfig:
    """The config without ``task``."""
    tasks = load_config(config, overrides).model_dump(mode="json")["tasks"]
    return load_config(config, {**overrides, "tasks": [t for t in tasks if t["name"] != task]})


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "grouping")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "compare")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    p.add_argument("--docs", type=Path, default=ROOT / "docs" / "grouping")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--threads", type=int)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    threads = args.threads or max(1, len(os.sched_getaffinity(0)) // max(1, args.jobs))
    started = time.perf_counter()
    ensure_data(args.data)
    config = ROOT / "configs" / "compare.yaml"
    base = {"data.root": str(args.data), "optim.epochs": args.epochs}
    affinity = {"analysis": {"affinity": {"every_steps": AFFINITY_EVERY}}}

    todo: list[tuple[TrainConfig, Path]] = []
    for seed in args.seeds:
        seeded = {**base, "run.seed": seed}
        reference = load_config(config, seeded)
        for task in reference.task_names:
            todo.append((baseline_config(reference, task), args.out / f"baselines-s{seed}" / task))
        todo.append((load_config(config, {**seeded, **affinity}), args.out / f"hps-s{seed}"))
        aux = with_auxiliary(config, {**seeded, **affinity}, AUXILIARY)
        todo.append((aux, args.out / f"hps-aux-s{seed}"))
        todo.append((without(config, seeded, AUXILIARY), args.out / f"hps-no-{AUXILIARY}-s{seed}"))
    train_all([(c, o) for c, o in todo if not (o / WEIGHTS_FILE).is_file()], args.jobs, threads)

    first = args.seeds[0]
    run, baselines = args.out / f"hps-s{first}", args.out / f"baselines-s{first}"
    args.docs.mkdir(parents=True, exist_ok=True)
    polyhead(
        ["affinity", str(run), "--baselines", str(baselines), "--out", str(run / "affinity")],
        args.docs / "affinity.txt",
    )
    for png in sorted((run / "affinity").glob("*.png")):
        shutil.copy(png, args.docs / png.name)
    proposals: dict[int, Path] = {}
    others: dict[tuple[int, int], Path] = {}  # (budget, seed): another seed's other proposal
    for budget in args.budgets:
        out = run / f"grouping-b{budget}"
        polyhead(
            [
                *("group", str(run), "--budget", str(budget)),
                *("--baselines", str(baselines), "--out", str(out)),
            ],
            args.docs / f"group-b{budget}.txt",
        )
        proposals[budget] = out / "branched.yaml"
        shutil.copy(out / "branched.yaml", args.docs / f"branched-b{budget}.yaml")
        for seed in args.seeds[1:]:  # the same question on the other seeds' affinities
            other = args.out / f"hps-s{seed}"
            polyhead(
                [
                    *("group", str(other), "--budget", str(budget)),
                    *("--baselines", str(args.out / f"baselines-s{seed}")),
                    *("--out", str(other / f"grouping-b{budget}")),
                ],
                args.docs / f"group-b{budget}-s{seed}.txt",
            )
            theirs = other / f"grouping-b{budget}" / "branched.yaml"
            if branches(theirs) != branches(proposals[budget]):
                others[budget, seed] = theirs
    aux_run = args.out / f"hps-aux-s{first}"
    polyhead(
        [
            "affinity",
            str(aux_run),
            "--baselines",
            str(baselines),
            "--out",
            str(aux_run / "affinity"),
        ],
        args.docs / "affinity-aux.txt",
    )
    polyhead(
        [
            *("group", str(aux_run), "--budget", str(args.budgets[0])),
            *(
                "--baselines",
                str(baselines),
                "--out",
                str(aux_run / f"grouping-b{args.budgets[0]}"),
            ),
        ],
        args.docs / f"group-aux-b{args.budgets[0]}.txt",
    )

    todo = []
    for seed in args.seeds:
        for budget, proposal in proposals.items():
            cfg = load_config(proposal, {**base, "run.seed": seed, "analysis": {}})
            todo.append((cfg, args.out / f"branched-b{budget}-s{seed}"))
        for (budget, source), proposal in others.items():
            cfg = load_config(proposal, {**base, "run.seed": seed, "analysis": {}})
            todo.append((cfg, args.out / f"branched-b{budget}-from-s{source}-s{seed}"))
    widths = {}
    for budget, proposal in proposals.items():
        reference = load_config(config, base)
        tree = parameters(load_config(proposal, {**base, "analysis": {}}), run)
        widths[budget] = matched_width(reference, tree, run)
        log.info("budget %d: tree of %d params, HPS of width %d", budget, tree, widths[budget])
        for seed in args.seeds:
            wide = load_config(config, {**base, "run.seed": seed, "model.width": widths[budget]})
            todo.append((wide, args.out / f"hps-w{widths[budget]}-s{seed}"))
    train_all([(c, o) for c, o in todo if not (o / WEIGHTS_FILE).is_file()], args.jobs, threads)

    runs = [args.out / f"hps-s{s}" for s in args.seeds]
    for b in args.budgets:
        runs += [args.out / f"branched-b{b}-s{s}" for s in args.seeds]
        runs += [args.out / f"hps-w{widths[b]}-s{s}" for s in args.seeds]
        for source in (src for budget, src in others if budget == b):
            runs += [args.out / f"branched-b{b}-from-s{source}-s{s}" for s in args.seeds]
    bases = [args.out / f"baselines-s{s}" for s in args.seeds]
    rows = compare_runs(runs, args.docs, baselines=bases)
    aux_runs = [
        args.out / f"hps-{kind}-s{s}" for kind in ("aux", f"no-{AUXILIARY}") for s in args.seeds
    ]
    compare_runs(aux_runs, args.docs / "auxiliary", baselines=bases)
    print((args.docs / "auxiliary" / "compare.md").read_text())
    log.info("the example took %.1f min", (time.perf_counter() - started) / 60)
    print((args.docs / "compare.md").read_text())
    print(f"{len(rows)} runs compared; files in {args.docs}")


if __name__ == "__main__":
    main()
