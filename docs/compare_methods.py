"""The README's method comparison: train single-task baselines and several multi-task
combinations on synthetic scenes, then compare them (test split, Delta_MTL, size, speed).

    python docs/compare_methods.py [--out runs/compare] [--epochs 6]

Equivalent to ``polyhead data synth`` + ``polyhead train --baselines`` for the first run,
``polyhead train`` for the others, and ``polyhead compare runs/compare/* --baselines
runs/compare/hps-equal/baselines --out docs/compare``. Finished runs are kept (re-running
resumes the experiment).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.baselines import train_baselines  # noqa: E402
from training.compare import compare_runs  # noqa: E402
from training.config import load_config  # noqa: E402
from training.runs import WEIGHTS_FILE  # noqa: E402
from training.trainer import Trainer  # noqa: E402

COMBINATIONS = [
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
    ("mtan-uncertainty", {"model.architecture": "mtan", "weighting": {"name": "uncertainty"}}),
    ("padnet-uncertainty", {"model.architecture": "padnet", "weighting": {"name": "uncertainty"}}),
    ("cross_stitch-equal", {"model.architecture": "cross_stitch", "weighting": {"name": "equal"}}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "compare")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "compare")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--table", type=Path, default=ROOT / "docs" / "compare")
    p.add_argument("--only", nargs="*", help="names of the combinations to run")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (args.data / "dataset.json").is_file():
        from training.data.synth import write_dataset

        write_dataset(args.data, n=600, size=64, seed=0)
    base = {"data.root": str(args.data), "optim.epochs": args.epochs}
    runs = []
    for name, overrides in COMBINATIONS:
        if args.only and name not in args.only:
            continue
        out = args.out / name
        cfg = load_config(ROOT / "configs" / "compare.yaml", {**base, **overrides})
        if not (out / WEIGHTS_FILE).is_file():
            Trainer(cfg, out, resume=(out / "checkpoints").exists()).fit()
        if name == "hps-equal":
            train_baselines(cfg, out, resume=True)
        runs.append(out)
    rows = compare_runs(runs, args.table, baselines=args.out / "hps-equal" / "baselines")
    print((args.table / "compare.md").read_text())
    print(f"{len(rows)} runs compared; plots in {args.table}")


if __name__ == "__main__":
    main()
