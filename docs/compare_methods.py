"""The README's method comparison: multi-task combinations and single-task baselines on synthetic
scenes, over several seeds, then compared (test split, the constant predictor, Delta_MTL and
Delta_m with their spread over seeds, size, speed).

    python docs/compare_methods.py [--seeds 0 1 2] [--epochs E] [--jobs 2] [--only NAME ...]

Writes the scenes (``write_dataset``: N_SCENES at IMAGE_SIZE, cut by SPLITS so the test split
has 600 images), then trains what ``polyhead train --config configs/compare.yaml --set
run.seed=S`` would for every combination and seed into ``runs/compare/NAME-sS`` and the
single-task baselines of every seed, with the same budget, into
``runs/compare/baselines-sS/TASK``, and compares every run with the baselines' mean over the
seeds (``training.compare.compare_runs``) into ``docs/compare``.
Finished runs are kept and a started one resumes from its checkpoint, so re-running continues
the experiment; ``--only`` trains and compares some combinations (the baselines always).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.baselines import baseline_config  # noqa: E402
from training.compare import compare_runs  # noqa: E402
from training.config import TrainConfig, load_config  # noqa: E402
from training.runs import CONFIG_FILE, WEIGHTS_FILE  # noqa: E402

log = logging.getLogger("compare_methods")

#: The data: 64x64 scenes (CPU minutes), cut so the test split has 600 images.
N_SCENES = 2000
IMAGE_SIZE = 64
SPLITS = (0.6, 0.1, 0.3)  # 1200 train, 200 val (a metric per epoch), 600 test
SEEDS = (0, 1, 2)
EPOCHS = 6

GEOMETRY = [
    {"name": "depth", "kind": "depth"},
    {"name": "normals", "kind": "normals"},
    {"name": "edges", "kind": "edges"},
]

COMBINATIONS: list[tuple[str, dict[str, Any]]] = [
    ("hps-equal", {"model.architecture": "hps", "weighting": {"name": "equal"}}),
    ("hps-uncertainty", {"model.architecture": "hps", "weighting": {"name": "uncertainty"}}),
    ("hps-dwa", {"model.architecture": "hps", "weighting": {"name": "dwa"}}),
    ("hps-famo", {"model.architecture": "hps", "weighting": {"name": "famo"}}),
    ("hps-pcgrad", {"model.architecture": "hps", "weighting": {"name": "pcgrad"}}),
    (
        "hps-mgda-ub",
        {
            "model.architecture": "hps",
            "weighting": {"name": "mgda", "params": {"gradients": "representation"}},
        },
    ),
    # the related dense tasks alone: does sharing help depth, normals and edges?
    (
        "hps-equal-geometry",
        {"model.architecture": "hps", "weighting": {"name": "equal"}, "tasks": GEOMETRY},
    ),
    ("mtan-uncertainty", {"model.architecture": "mtan", "weighting": {"name": "uncertainty"}}),
    ("padnet-uncertainty", {"model.architecture": "padnet", "weighting": {"name": "uncertainty"}}),
    ("mtinet-uncertainty", {"model.architecture": "mtinet", "weighting": {"name": "uncertainty"}}),
    ("cross_stitch-equal", {"model.architecture": "cross_stitch", "weighting": {"name": "equal"}}),
]


def ensure_data(root: Path) -> None:
    """Write the benchmark's scenes at ``root``, or check that the ones there are they."""
    from training.data.synth import write_dataset

    meta_file = root / "dataset.json"
    if not meta_file.is_file():
        write_dataset(root, n=N_SCENES, size=IMAGE_SIZE, seed=0, splits=SPLITS)
        return
    meta = json.loads(meta_file.read_text())
    test = (root / "splits" / "test.txt").read_text().split()
    expected = round(N_SCENES * SPLITS[2])
    if meta.get("count") != N_SCENES or len(test) != expected:
        raise SystemExit(
            f"{root} holds {meta.get('count')} scenes with {len(test)} for test, not this "
            f"benchmark's {N_SCENES} with {expected}: remove it or pass another --data"
        )


def train(cfg: TrainConfig, out: Path, threads: int) -> tuple[str, float]:
    """Train one run into ``out`` (resuming a started one); a worker process's entry."""
    import torch

    from training.trainer import Trainer

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    Trainer(cfg, out, resume=(out / CONFIG_FILE).is_file()).fit()
    return str(out), time.perf_counter() - started


def train_all(todo: list[tuple[TrainConfig, Path]], jobs: int, threads: int) -> None:
    """Train ``todo`` (config, run folder) ``jobs`` at a time, each on ``threads`` threads."""
    log.info("%d runs to train, %d at a time, %d thread(s) each", len(todo), jobs, threads)
    # spawn: a fresh interpreter per worker (torch's thread pools do not survive a fork)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=ctx) as pool:
        futures = [pool.submit(train, cfg, out, threads) for cfg, out in todo]
        try:
            for f in futures:
                out, seconds = f.result()
                log.info("trained %s in %.0f s", out, seconds)
        except BaseException:
            pool.shutdown(cancel_futures=True)  # the runs under way finish; no new one starts
            raise


def jobs_to_run(args: argparse.Namespace) -> tuple[list[tuple[TrainConfig, Path]], list[Path]]:
    """Every run the benchmark needs (unfinished ones to train) and the combinations' runs."""
    base = {"data.root": str(args.data), "optim.epochs": args.epochs}
    config = ROOT / "configs" / "compare.yaml"
    todo: list[tuple[TrainConfig, Path]] = []
    runs: list[Path] = []
    for seed in args.seeds:
        seeded = {**base, "run.seed": seed}
        reference = load_config(config, seeded)  # the baselines: six single-task models
        for task in reference.task_names:
            todo.append((baseline_config(reference, task), args.out / f"baselines-s{seed}" / task))
        for name, overrides in COMBINATIONS:
            if args.only and name not in args.only:
                continue
            out = args.out / f"{name}-s{seed}"
            todo.append((load_config(config, {**seeded, **overrides}), out))
            runs.append(out)
    return [(c, o) for c, o in todo if not (o / WEIGHTS_FILE).is_file()], runs


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "compare")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "compare")
    p.add_argument("--epochs", type=int, default=EPOCHS)
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--table", type=Path, default=ROOT / "docs" / "compare")
    p.add_argument("--only", nargs="*", help="names of the combinations to run")
    p.add_argument(
        "--jobs",
        type=int,
        default=2,
        help="runs trained at once, each on cores/jobs threads (default 2: on 2 cores, two "
        "one-thread runs train faster than one two-thread run)",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="torch threads per run (default: cores / jobs; 1 on a machine others share)",
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    unknown = sorted(set(args.only or []) - {name for name, _ in COMBINATIONS})
    if unknown:
        raise SystemExit(f"--only: no combination {unknown}; known: {[n for n, _ in COMBINATIONS]}")
    ensure_data(args.data)
    todo, runs = jobs_to_run(args)
    cores = len(os.sched_getaffinity(0))
    threads = args.threads or max(1, cores // max(1, args.jobs))
    started = time.perf_counter()
    train_all(todo, args.jobs, threads)
    log.info("training took %.1f min", (time.perf_counter() - started) / 60)
    if args.threads:  # the comparison's latencies too (two threads on a shared machine stall)
        import torch

        torch.set_num_threads(args.threads)
    baselines = [args.out / f"baselines-s{seed}" for seed in args.seeds]
    rows = compare_runs(runs, args.table, baselines=baselines)
    log.info("benchmark took %.1f min", (time.perf_counter() - started) / 60)
    print((args.table / "compare.md").read_text())
    print(f"{len(rows)} runs compared; plots in {args.table}")


if __name__ == "__main__":
    main()
