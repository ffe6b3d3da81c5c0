"""Per-task metrics of a model on a dataset split, and the multi-task delta against baselines.

The same evaluation code measures a PyTorch model (a run) and an exported ONNX model (a model
repository version, through ONNX Runtime), so the metrics written into a manifest at export are
exactly what ``polyhead evaluate --model`` reproduces.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from training.tasks import TaskKind

Predictor = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]
Metrics = dict[str, dict[str, float]]


def _collate_eval(samples: list[dict]) -> dict:
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "targets": {
            t: torch.stack([s["targets"][t] for s in samples]) for t in samples[0]["targets"]
        },
    }


@torch.no_grad()
def evaluate_predictor(
    predict: Predictor, tasks: Sequence[TaskKind], dataset: Dataset, batch_size: int = 32
) -> Metrics:
    """Run ``predict`` over ``dataset`` and return ``{task: {metric: value}}``."""
    accumulators = {t.name: t.metric() for t in tasks}
    # its own generator: evaluating must not draw from the global RNG training goes on with
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=_collate_eval,
        generator=torch.Generator(),
    )
    for batch in loader:
        out = predict(batch["image"])
        for name, acc in accumulators.items():
            acc.update(out[name].float().cpu(), batch["targets"][name])
    return {name: acc.compute() for name, acc in accumulators.items()}


def evaluate_model(
    model: torch.nn.Module,
    tasks: Sequence[TaskKind],
    dataset: Dataset,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
) -> Metrics:
    """Metrics of a PyTorch model (put in eval mode for the call, restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        return evaluate_predictor(lambda x: model(x.to(device)), tasks, dataset, batch_size)
    finally:
        model.train(was_training)


def onnx_predictor(model_path: Path, output_names: Mapping[str, str]) -> Predictor:
    """A predictor running an ONNX model with ONNX Runtime on the CPU.

    ``output_names`` maps task name -> ONNX output name.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    tasks = list(output_names)
    outputs = [output_names[t] for t in tasks]

    def predict(x: torch.Tensor) -> dict[str, torch.Tensor]:
        result = session.run(outputs, {input_name: x.numpy().astype(np.float32)})
        return {t: torch.from_numpy(r) for t, r in zip(tasks, result, strict=True)}

    return predict


@dataclass(frozen=True)
class PrimaryMetric:
    """The metric that stands for a task in the multi-task delta."""

    name: str
    higher_is_better: bool


def primary_metric(task: TaskKind) -> PrimaryMetric:
    """A task kind's declared primary metric."""
    return PrimaryMetric(task.primary_metric, task.higher_is_better[task.primary_metric])


def multitask_delta(
    multi: Metrics, single: Metrics, primaries: Mapping[str, PrimaryMetric]
) -> tuple[float, dict[str, float]]:
    """Delta_MTL = (1/T) sum_t (-1)^{l_t} (M_mt,t - M_st,t) / M_st,t over tasks with a baseline.

    l_t = 1 when lower is better (Maninis et al. 2019; Vandenhende et al. 2021). Returns the mean
    and each task's signed relative change (positive = the multi-task model is better).
    """
    per_task: dict[str, float] = {}
    for task, base in single.items():
        p = primaries[task]
        m_st, m_mt = base[p.name], multi[task][p.name]
        if m_st == 0:
            raise ValueError(f"baseline {task}.{p.name} is 0: the relative delta is undefined")
        sign = 1.0 if p.higher_is_better else -1.0
        per_task[task] = sign * (m_mt - m_st) / abs(m_st)
    if not per_task:
        raise ValueError("no baseline given: the multi-task delta needs at least one")
    return sum(per_task.values()) / len(per_task), per_task


def metric_delta(
    multi: Metrics, single: Metrics, higher_is_better: Mapping[str, Mapping[str, bool]]
) -> tuple[float, dict[str, dict[str, float]]]:
    """Delta_m: the mean signed relative change over every metric of every task with a baseline.

    Delta_m = (1/K) sum_k (-1)^{l_k} (M_mt,k - M_st,k) / M_st,k over the K (task, metric) pairs
    (the optimisation papers' measure, e.g. Navon et al. 2022, Liu et al. 2023), where Delta_MTL
    takes one primary metric per task. A metric whose baseline is 0 is left out (undefined).
    Returns the mean and each pair's change, by task then metric.
    """
    changes: dict[str, dict[str, float]] = {}
    for task, base in single.items():
        for name, m_st in base.items():
            if name not in multi[task] or name not in higher_is_better[task] or m_st == 0:
                continue
            sign = 1.0 if higher_is_better[task][name] else -1.0
            changes.setdefault(task, {})[name] = sign * (multi[task][name] - m_st) / abs(m_st)
    values = [v for per_task in changes.values() for v in per_task.values()]
    if not values:
        raise ValueError("no baseline metric to compare: Delta_m needs at least one")
    return sum(values) / len(values), changes


def format_table(
    metrics: Metrics,
    baselines: Metrics | None = None,
    deltas: Mapping[str, float] | None = None,
    primaries: Mapping[str, PrimaryMetric] | None = None,
) -> str:
    """A plain-text per-task table (one row per metric) with optional baseline columns.

    A task's delta is shown on the row of its primary metric.
    """
    rows = [("task", "metric", "value", "baseline", "delta")]
    for task, values in metrics.items():
        for metric, value in values.items():
            base = (baselines or {}).get(task, {}).get(metric)
            rows.append(
                (
                    task,
                    metric,
                    _fmt(value),
                    "" if base is None else _fmt(base),
                    f"{deltas[task] * 100:+.2f}%"
                    if deltas and primaries and task in deltas and primaries[task].name == metric
                    else "",
                )
            )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    keep = [i for i in range(5) if i < 3 or any(r[i] for r in rows[1:])]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in keep).rstrip() for r in rows)


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else f"{v:.4f}"


def write_metrics(path: Path, record: dict) -> None:
    """Write an evaluation record as pretty JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2))
