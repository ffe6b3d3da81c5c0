"""Compare runs: per-task metrics, the multi-task delta, size and speed; loss and weight plots.

``polyhead compare RUN [RUN ...] --out DIR`` evaluates every run on one split (the test split by
default) and writes ``DIR/compare.md`` and ``DIR/compare.json`` (a row per run: architecture,
weighting, each task's primary metric, Delta_MTL against single-task baselines, parameters,
CPU latency per image at batch 1) and ``DIR/losses.png``, ``DIR/weights.png`` (per-task training
loss and task weights over steps, from each run's metrics.jsonl).

Beside the runs, both tables show the constant predictor (``training.constants``: each task's
best constant, fit on the training split, measured by the same metric code) and say, run by
run, whether it beats that constant on every task's primary metric. Baselines are a run's own
(``RUN/baselines/TASK``, from ``train --baselines``) or come from ``baselines``, one or several
folders of ``TASK/`` runs (e.g. one per seed): with several, a run is compared with each
task's mean over them, and each folder is also shown as a row (the single-task models side by
side: their parameters and latencies add up).

Runs whose configs differ only in ``run.seed`` (and the run's name) are one setup: when a setup
has several seeds, ``compare.md`` adds a table of each setup's mean +- sample standard deviation
over its seeds (every task's primary metric, Delta_MTL, Delta_m) and ``compare.json`` its
``setups``, with every metric's mean and std.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from training.baselines import find_baselines
from training.constants import constant_predictor, fit_constants, shortfalls
from training.data.folder import FolderDataset
from training.errors import ConfigError
from training.evaluate import (
    Metrics,
    evaluate_model,
    evaluate_predictor,
    metric_delta,
    multitask_delta,
    primary_metric,
)
from training.runs import METRICS_LOG, WEIGHTS_FILE, Run, load_run
from training.tasks import TaskKind


def _dataset(run: Run, data: Path | None, split: str) -> FolderDataset:
    root = Path(data or run.config.data.root)
    if not root.exists():
        raise ConfigError(f"data folder not found: {root} (pass --data)")
    cfg = run.config
    names = [t.name for t in run.tasks]
    dataset = FolderDataset(root, split, names, None, cfg.data.mean, cfg.data.std)
    dataset.require_image_size(run.input_size)
    return dataset


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


class _Evaluated:
    """Each run directory loaded and evaluated once (baselines are shared by many runs)."""

    def __init__(self, data: Path | None, split: str, batch_size: int) -> None:
        self.data, self.split, self.batch_size = data, split, batch_size
        self.done: dict[Path, tuple[Run, Metrics]] = {}

    def __call__(self, run_dir: Path) -> tuple[Run, Metrics]:
        if run_dir not in self.done:
            run = load_run(run_dir)
            dataset = _dataset(run, self.data, self.split)
            self.done[run_dir] = (
                run,
                evaluate_model(run.model(), run.tasks, dataset, self.batch_size),
            )
        return self.done[run_dir]


def _deltas(
    metrics: Metrics, base: Metrics, tasks: Sequence[TaskKind]
) -> tuple[float | None, dict[str, float] | None, float | None]:
    """Delta_MTL (and its per-task terms) and Delta_m of ``metrics`` against ``base``.

    Over the tasks the model serves: an auxiliary task only helps training, so it is left out.
    """
    served = {t.name for t in tasks if not t.auxiliary}
    base = {t: m for t, m in base.items() if t in metrics and t in served}
    if not base:
        return None, None, None
    delta, per_task = multitask_delta(metrics, base, {t.name: primary_metric(t) for t in tasks})
    delta_m, _ = metric_delta(metrics, base, {t.name: dict(t.higher_is_better) for t in tasks})
    return delta, per_task, delta_m


def _mean_metrics(many: list[Metrics]) -> Metrics:
    """Each task's metrics averaged over the entries of ``many`` that have the task."""
    tasks = {t for m in many for t in m}
    return {
        t: {
            name: statistics.fmean(m[t][name] for m in many if t in m)
            for name in next(m[t] for m in many if t in m)
        }
        for t in sorted(tasks)
    }


def _single_task_row(root: Path, names: list[str], evaluated: _Evaluated) -> dict[str, Any] | None:
    """The single-task baselines in ``root/TASK`` taken together, as one row; None if none."""
    found = [root / t for t in names if (root / t / WEIGHTS_FILE).is_file()]
    if not found:
        return None
    metrics: Metrics = {}
    tasks, params, latency = [], 0, 0.0
    for path in found:
        run, m = evaluated(path)
        metrics |= m
        tasks += run.tasks
        model = run.model()
        params += sum(p.numel() for p in model.parameters())
        latency += latency_ms(model, run.input_size)
    config = run.config.model_dump(mode="json")
    config.pop("tasks")
    return {
        "run": str(root),
        "data": str(Path(evaluated.data or run.config.data.root)),
        "setup": "single_task " + setup_key(config),
        "seed": run.config.run.seed,
        "architecture": "single_task",
        "weighting": "one model per task",
        "tasks": tasks,
        "primary": {t.name: [t.primary_metric, metrics[t.name][t.primary_metric]] for t in tasks},
        "metrics": metrics,
        "parameters": params,
        "latency_ms_per_image": latency,
    }


def _constant_rows(
    runs: list[Run], data: Path | None, split: str, batch_size: int
) -> list[dict[str, Any]]:
    """The constant predictor of each dataset the runs use, fit on its training split."""
    by_root: dict[Path, tuple[Run, dict[str, TaskKind]]] = {}
    for run in runs:
        root = Path(data or run.config.data.root)
        seen = by_root.setdefault(root, (run, {}))[1]
        seen |= {t.name: t for t in run.tasks if t.name not in seen}
    rows = []
    for root, (run, by_name) in by_root.items():
        tasks = list(by_name.values())
        outputs = fit_constants(tasks, root, run.config.data.train_split)
        dataset = FolderDataset(root, split, list(by_name), None)
        metrics = evaluate_predictor(constant_predictor(tasks, outputs), tasks, dataset, batch_size)
        name = "constant" if len(by_root) == 1 else f"constant ({root.name})"
        rows.append(
            {
                "run": name,
                "data": str(root),
                "fit_split": run.config.data.train_split,
                "architecture": "constant",
                "weighting": "-",
                "tasks": tasks,
                "outputs": {t: v.tolist() for t, v in outputs.items()},
                "primary": {
                    t.name: [t.primary_metric, metrics[t.name][t.primary_metric]] for t in tasks
                },
                "metrics": metrics,
                "parameters": 0,
                "latency_ms_per_image": None,
            }
        )
    return rows


def _roots(baselines: Path | Sequence[Path] | None) -> list[Path]:
    if baselines is None:
        return []
    if isinstance(baselines, str | Path):
        return [Path(baselines)]
    return [Path(b) for b in baselines]


def compare_runs(
    runs: list[Path],
    out: Path,
    data: Path | None = None,
    split: str = "test",
    baselines: Path | Sequence[Path] | None = None,
    batch_size: int = 32,
) -> list[dict[str, Any]]:
    """Evaluate ``runs`` and write the comparison table and plots into ``out``.

    ``baselines``: one or several folders of single-task runs ``TASK/``; with several, each
    task's reference is the mean of its baselines over them.
    """
    if not runs:
        raise ConfigError("compare: give at least one run directory")
    evaluated = _Evaluated(data, split, batch_size)
    loaded = [evaluated(Path(r))[0] for r in runs]
    names = list(dict.fromkeys(t.name for run in loaded for t in run.tasks))
    singles = [
        r for r in (_single_task_row(root, names, evaluated) for root in _roots(baselines)) if r
    ]
    reference = _mean_metrics([r["metrics"] for r in singles])
    constants = _constant_rows(loaded, data, split, batch_size)
    rows = []
    for run_dir, run in zip(runs, loaded, strict=True):
        metrics = evaluated(Path(run_dir))[1]
        names = [t.name for t in run.tasks]
        own = find_baselines(run_dir, names)
        base_metrics = {t: evaluated(p)[1][t] for t, p in own.items()}
        base_metrics |= {t: reference[t] for t in names if t in reference and t not in own}
        delta, per_task, delta_m = _deltas(metrics, base_metrics, run.tasks)
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
                "primary": {
                    t.name: [t.primary_metric, metrics[t.name][t.primary_metric]] for t in run.tasks
                },
                "metrics": metrics,
                "baselines": base_metrics,
                "delta_mtl": delta,
                "delta_per_task": per_task,
                "delta_m": delta_m,
                "parameters": sum(p.numel() for p in model.parameters()),
                "latency_ms_per_image": latency_ms(model, run.input_size),
                "below_constant": _below_constant(
                    metrics, run.tasks, Path(data or run.config.data.root), constants
                ),
            }
        )
    for extra in (*singles, *constants):
        extra["delta_mtl"], extra["delta_per_task"], extra["delta_m"] = _deltas(
            extra["metrics"], reference, extra["tasks"]
        )
    for single in singles:
        single["below_constant"] = _below_constant(
            single["metrics"], single["tasks"], Path(single["data"]), constants
        )
    setups = over_seeds(rows + singles)
    plain = [{k: v for k, v in r.items() if k != "tasks"} for r in (*singles, *constants)]
    doc = {
        "split": split,
        "runs": rows,
        "single_task": plain[: len(singles)],
        "constants": plain[len(singles) :],
        "setups": setups,
    }
    out.mkdir(parents=True, exist_ok=True)  # only now: a failed comparison leaves no folder
    (out / "compare.json").write_text(json.dumps(doc, indent=2))
    reference_note = _reference_note(len(singles))
    table = markdown_table(rows + singles + constants, split, reference_note)
    table += "\n" + constant_lines(rows + singles)
    if any(s["seeds"] > 1 for s in setups):
        table += "\n" + seeds_table(setups, constants)
    (out / "compare.md").write_text(table)
    plot_curves(runs, out)
    return rows


def _below_constant(
    metrics: Metrics, tasks: Sequence[TaskKind], root: Path, constants: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The tasks where ``metrics`` do not beat the constant of dataset ``root``."""
    found = [c for c in constants if Path(c["data"]) == root]
    if not found:
        return []
    return [asdict(s) for s in shortfalls(metrics, found[0]["metrics"], tasks)]


def _reference_note(n_roots: int) -> str:
    if n_roots > 1:
        return (
            f"against the mean of the single-task baselines over their {n_roots} seeds (every "
            "seed of a setup is compared with that mean, not with the same seed's baselines; "
            "each baseline seed's own Δ against the mean shows the noise)"
        )
    return "against single-task baselines"


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
        per_task = [r.get("delta_per_task") or {} for r in members]
        entry["delta_per_task"] = {
            t: _mean_std([d[t] for d in per_task])
            for t in per_task[0]
            if all(t in d for d in per_task)
        }
        setups.append(entry)
    return setups


def _task_columns(entries: Sequence[dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """Every task of ``entries`` in first-seen order, and each one's primary metric name."""
    tasks: list[str] = []
    metric_of: dict[str, str] = {}
    for e in entries:
        for t, primary in e["primary"].items():
            if t not in tasks:
                tasks.append(t)
                metric_of[t] = primary if isinstance(primary, str) else primary[0]
    return tasks, metric_of


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value * 100:+.2f}%"


def seeds_table(setups: list[dict[str, Any]], constants: Sequence[dict[str, Any]] = ()) -> str:
    """Mean +- standard deviation over seeds, one row per setup; the constants last."""
    tasks, metric_of = _task_columns(setups)
    head = ["setup (first run)", "architecture", "weighting", "seeds"]
    head += [f"{t} {metric_of[t]}" for t in tasks] + ["Δ_MTL", "Δ_m"]
    lines = [
        "Mean ± sample standard deviation over seeds"
        + ("; the constant predictor has no seed." if constants else "."),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s in setups:
        cells = [Path(s["runs"][0]).name, s["architecture"], s["weighting"], str(s["seeds"])]
        for t in tasks:
            m = s["metrics"].get(t, {}).get(s["primary"].get(t, ""))
            cells.append("" if m is None else f"{m['mean']:.4f} ± {m['std']:.4f}")
        for key in ("delta_mtl", "delta_m"):
            d = s[key]
            cells.append("" if d is None else f"{d['mean'] * 100:+.2f}% ± {d['std'] * 100:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    for c in constants:
        cells = [c["run"], c["architecture"], c["weighting"], "-"]
        cells += [f"{c['primary'][t][1]:.4f}" if t in c["primary"] else "" for t in tasks]
        cells += [_percent(c.get("delta_mtl")), _percent(c.get("delta_m"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_table(
    rows: list[dict[str, Any]], split: str, reference: str = "against single-task baselines"
) -> str:
    """One row per run (then any single-task and constant rows); a task shows its primary metric."""
    tasks, metric_of = _task_columns(rows)
    head = ["run", "architecture", "weighting"]
    head += [f"{t} {metric_of[t]}" for t in tasks]
    head += ["Δ_MTL", "Δ_m", "params (M)", "ms/img (CPU, batch 1)"]
    lines = [
        f"Metrics on the {split} split; Δ {reference} (higher is better): "
        "Δ_MTL on each task's primary metric, Δ_m on all its metrics.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        cells = [Path(r["run"]).name, r["architecture"], r["weighting"]]
        cells += [f"{r['primary'][t][1]:.4f}" if t in r["primary"] else "" for t in tasks]
        latency = r["latency_ms_per_image"]
        cells += [
            _percent(r["delta_mtl"]),
            _percent(r.get("delta_m")),
            f"{r['parameters'] / 1e6:.2f}",
            "" if latency is None else f"{latency:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def constant_lines(rows: list[dict[str, Any]]) -> str:
    """A line per row saying whether it beats the constant predictor on every primary metric."""
    lines = []
    for r in rows:
        if "below_constant" not in r:
            continue
        below = r["below_constant"]
        verdict = (
            "yes"
            if not below
            else "no: "
            + "; ".join(
                f"{b['task']} {b['metric']} {b['value']:.4f} (constant {b['constant']:.4f})"
                for b in below
            )
        )
        lines.append(f"- {Path(r['run']).name}: {verdict}")
    if not lines:
        return ""
    return (
        "Beats the constant predictor on every task's primary metric:\n\n" + "\n".join(lines) + "\n"
    )


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
