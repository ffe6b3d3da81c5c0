"""Compare runs: per-task metrics, the multi-task delta, size and speed; loss and weight plots.

``polyhead compare RUN [RUN ...] --out DIR`` evaluates every run on one split (the test split by
default) and writes ``DIR/compare.md`` and ``DIR/compare.json`` (a row per run: architecture,
weighting, each task's primary metric, Delta_MTL against single-task baselines, parameters,
CPU latency per image at batch 1) and ``DIR/losses.png``, ``DIR/weights.png`` (per-task training
loss and task weights over steps, from each run's metrics.jsonl).

Runs whose configs differ only in ``run.seed`` (and the run's name) are one setup: when a setup
has several seeds, ``compare.md`` adds a table of each setup's mean +- sample standard deviation
over its seeds (every task's primary metric, Delta_MTL, Delta_m) and ``compare.json`` its
``setups``, with every metric's mean and std.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from training.baselines import find_baselines
from training.data.folder import FolderDataset
from training.errors import ConfigError
from training.evaluate import (
    Metrics,
    evaluate_model,
    metric_delta,
    multitask_delta,
    primary_metric,
)
from training.runs import METRICS_LOG, Run, load_run


def _dataset(run: Run, data: Path | None, split: str) -> FolderDataset:
    root = Path(data or run.config.data.root)
    if not root.exists():
        raise ConfigError(f"data folder not found: {root} (pass --data)")
    cfg = run.config
    names = [t.name for t in run.tasks]
    return FolderDataset(root, split, names, None, cfg.data.mean, cfg.data.std)


def latency_ms(model: torch.nn.Module, size: tuple[int, int], repeats: int = 20) -> float:
    """Median milliseconds of one forward pass at batch 1 on the CPU."""
    x = torch.randn(1, 3, *size)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _evaluate(run_dir: Path, data: Path | None, split: str, batch_size: int) -> tuple[Run, Metrics]:
    run = load_run(run_dir)
    return run, evaluate_model(run.model(), run.tasks, _dataset(run, data, split), batch_size)


def compare_runs(
    runs: list[Path],
    out: Path,
    data: Path | None = None,
    split: str = "test",
    baselines: Path | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Evaluate ``runs`` and write the comparison table and plots into ``out``."""
    if not runs:
        raise ConfigError("compare: give at least one run directory")
    out.mkdir(parents=True, exist_ok=True)
    cache: dict[Path, Metrics] = {}
    rows = []
    for run_dir in runs:
        run, metrics = _evaluate(run_dir, data, split, batch_size)
        names = [t.name for t in run.tasks]
        primaries = {t.name: primary_metric(t) for t in run.tasks}
        base_metrics: Metrics = {}
        for task, path in find_baselines(run_dir, names, baselines).items():
            if path not in cache:
                cache[path] = _evaluate(path, data, split, batch_size)[1]
            base_metrics[task] = cache[path][task]
        delta = per_task = delta_m = None
        if base_metrics:
            delta, per_task = multitask_delta(metrics, base_metrics, primaries)
            directions = {t.name: dict(t.higher_is_better) for t in run.tasks}
            delta_m, _ = metric_delta(metrics, base_metrics, directions)
        model = run.model()
        weighting = run.config.weighting
        rows.append(
            {
                "run": str(run_dir),
                "setup": setup_key(run.config.model_dump(mode="json")),
                "seed": run.config.run.seed,
                "architecture": run.config.model.architecture,
                "weighting": weighting.name
                + (f" {json.dumps(weighting.params)}" if weighting.params else ""),
                "primary": {t: [primaries[t].name, metrics[t][primaries[t].name]] for t in names},
                "metrics": metrics,
                "baselines": base_metrics,
                "delta_mtl": delta,
                "delta_per_task": per_task,
                "delta_m": delta_m,
                "parameters": sum(p.numel() for p in model.parameters()),
                "latency_ms_per_image": latency_ms(model, run.input_size),
            }
        )
    setups = over_seeds(rows)
    doc = {"split": split, "runs": rows, "setups": setups}
    (out / "compare.json").write_text(json.dumps(doc, indent=2))
    table = markdown_table(rows, split)
    if any(s["seeds"] > 1 for s in setups):
        table += "\n" + seeds_table(setups)
    (out / "compare.md").write_text(table)
    plot_curves(runs, out)
    return rows


def setup_key(config: dict[str, Any]) -> str:
    """What makes two runs the same setup: the config without its name and seed."""
    config = {k: v for k, v in config.items() if k != "name"}
    config["run"] = {k: v for k, v in config.get("run", {}).items() if k != "seed"}
    return json.dumps(config, sort_keys=True)


def _mean_std(values: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
    }


def over_seeds(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per setup: its runs and seeds, and every figure's mean and std over them."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["setup"], []).append(r)
    setups = []
    for members in groups.values():
        first = members[0]
        seeds = [r["seed"] for r in members]
        if len(set(seeds)) != len(seeds):
            raise ConfigError(
                f"compare: runs {[r['run'] for r in members]} are one setup with repeated "
                f"seeds {seeds}: give each seed once"
            )
        metrics = {
            task: {
                name: _mean_std([r["metrics"][task][name] for r in members])
                for name in first["metrics"][task]
            }
            for task in first["metrics"]
        }
        entry: dict[str, Any] = {
            "runs": [r["run"] for r in members],
            "seeds": len(members),
            "seed_values": seeds,
            "architecture": first["architecture"],
            "weighting": first["weighting"],
            "primary": {t: first["primary"][t][0] for t in first["primary"]},
            "metrics": metrics,
        }
        for key in ("delta_mtl", "delta_m"):
            values = [r[key] for r in members if r.get(key) is not None]
            entry[key] = _mean_std(values) if len(values) == len(members) else None
        setups.append(entry)
    return setups


def seeds_table(setups: list[dict[str, Any]]) -> str:
    """Mean +- standard deviation over seeds, one row per setup."""
    tasks: list[str] = []
    for s in setups:
        tasks += [t for t in s["primary"] if t not in tasks]
    metric_of = {t: s["primary"][t] for s in setups for t in s["primary"]}
    head = ["architecture", "weighting", "seeds"]
    head += [f"{t} {metric_of[t]}" for t in tasks] + ["Δ_MTL", "Δ_m"]
    lines = [
        "Mean ± sample standard deviation over seeds.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s in setups:
        cells = [s["architecture"], s["weighting"], str(s["seeds"])]
        for t in tasks:
            m = s["metrics"].get(t, {}).get(s["primary"].get(t, ""))
            cells.append("" if m is None else f"{m['mean']:.4f} ± {m['std']:.4f}")
        for key in ("delta_mtl", "delta_m"):
            d = s[key]
            cells.append("" if d is None else f"{d['mean'] * 100:+.2f}% ± {d['std'] * 100:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(rows: list[dict[str, Any]], split: str) -> str:
    """One row per run; a task's column shows its primary metric."""
    tasks: list[str] = []
    for r in rows:
        tasks += [t for t in r["primary"] if t not in tasks]
    metric_of = {t: r["primary"][t][0] for r in rows for t in r["primary"]}
    head = ["run", "architecture", "weighting"]
    head += [f"{t} {metric_of[t]}" for t in tasks]
    head += ["Δ_MTL", "Δ_m", "params (M)", "ms/img (CPU, batch 1)"]
    lines = [
        f"Metrics on the {split} split; against single-task baselines (higher is better): "
        "Δ_MTL on each task's primary metric, Δ_m on all its metrics.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [Path(r["run"]).name, r["architecture"], r["weighting"]]
        cells += [f"{r['primary'][t][1]:.4f}" if t in r["primary"] else "" for t in tasks]
        delta, delta_m = r["delta_mtl"], r.get("delta_m")
        cells += [
            "" if delta is None else f"{delta * 100:+.2f}%",
            "" if delta_m is None else f"{delta_m * 100:+.2f}%",
            f"{r['parameters'] / 1e6:.2f}",
            f"{r['latency_ms_per_image']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _read_log(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / METRICS_LOG
    if not path.is_file():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return [x for x in lines if "loss" in x and "weights" in x]


def plot_curves(runs: list[Path], out: Path) -> None:
    """Write the training curves of ``runs``.

    losses.png: per-task training loss over steps, a panel per task, a line per run;
    weights.png: each run's task weights over steps, a panel per run.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = {Path(r).name: _read_log(Path(r)) for r in runs}
    tasks: list[str] = []
    for entries in logs.values():
        for e in entries[:1]:
            tasks += [t for t in e["loss"] if t not in tasks]
    if not tasks:
        return
    cols = min(3, len(tasks))
    rows = (len(tasks) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        for name, entries in logs.items():
            points = [(e["step"], e["loss"][task]) for e in entries if task in e["loss"]]
            if points:
                ax.plot(*zip(*_smooth(points), strict=True), label=name, linewidth=1)
        ax.set_title(f"{task}: training loss")
        ax.set_xlabel("step")
        ax.set_yscale("log")
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=110)
    plt.close(fig)

    named = [(n, e) for n, e in logs.items() if e]
    cols = min(3, len(named))
    rows = (len(named) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.5 * rows), squeeze=False)
    for ax, (name, entries) in zip(axes.flat, named, strict=False):
        for task in entries[0]["weights"]:
            points = [(e["step"], e["weights"][task]) for e in entries]
            ax.plot(*zip(*_smooth(points), strict=True), label=task, linewidth=1)
        ax.set_title(f"{name}: task weights")
        ax.set_xlabel("step")
    for ax in list(axes.flat)[len(named) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "weights.png", dpi=110)
    plt.close(fig)


def _smooth(points: list[tuple[float, float]], window: int = 10) -> list[tuple[float, float]]:
    """A running mean over ``window`` steps (per-step values are noisy)."""
    out, acc = [], []
    for step, value in points:
        acc.append(value)
        acc = acc[-window:]
        out.append((step, sum(acc) / len(acc)))
    return out
