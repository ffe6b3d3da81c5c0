"""What trivial predictors score on a dataset split: the floor a trained model must clear.

    python bench/chance.py --data data/scenes [--split test]

Dense regression tasks predict the training-set mean (depth, normals); segmentation predicts the
most common class everywhere; edges predict "edge" everywhere; image-level tasks predict a
constant score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data.folder import FolderDataset
from training.evaluate import format_table
from training.tasks import build_task


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", default="test")
    args = p.parse_args()
    test = FolderDataset(args.data, args.split)
    train = FolderDataset(args.data, "train")
    tasks = {n: build_task(n, i.kind, i.labels) for n, i in test.tasks.items()}
    sums: dict[str, torch.Tensor] = {}
    seen = range(0, len(train), 4)
    for i in seen:
        for n, t in train[i]["targets"].items():
            if tasks[n].kind in ("depth", "normals"):
                sums[n] = sums.get(n, 0) + t.mean(dim=(1, 2))
            if tasks[n].kind == "segmentation":
                sums[n] = sums.get(n, 0) + torch.bincount(t.flatten(), minlength=tasks[n].channels)
    metrics = {n: t.metric() for n, t in tasks.items()}
    for i in range(len(test)):
        sample = test[i]
        for n, target in sample["targets"].items():
            task, t = tasks[n], target[None]
            if task.kind in ("depth", "normals"):
                pred = (sums[n] / len(seen)).view(1, -1, 1, 1).expand(1, -1, *t.shape[-2:]).clone()
            elif task.kind == "segmentation":
                hot = torch.zeros(task.channels)
                hot[int(sums[n].argmax())] = 10.0
                pred = hot.view(1, -1, 1, 1).expand(1, -1, *t.shape[-2:])
            elif task.kind == "edges":
                pred = torch.full(t.shape, 10.0)
            else:
                pred = torch.zeros(1, task.channels)
            metrics[n].update(pred, t)
    print(format_table({n: m.compute() for n, m in metrics.items()}))


if __name__ == "__main__":
    main()
