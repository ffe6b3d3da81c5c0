"""Training-side CLI commands (imported lazily by ``polyhead.cli`` so serving needs no torch)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from training.errors import ConfigError
from training.evaluate import Metrics, PrimaryMetric

if TYPE_CHECKING:
    from training.onnx_checks import Agreement

log = logging.getLogger(__name__)


def synth(out: Path, n: int, size: int, seed: int, overwrite: bool) -> None:
    """Write a procedural multi-task dataset."""
    from training.data.synth import write_dataset

    path = write_dataset(out, n=n, size=size, seed=seed, overwrite=overwrite)
    typer.echo(f"wrote {n} scenes of {size}x{size} to {path}")


def convert(fmt: str, src: Path, out: Path, size: int | None, overwrite: bool) -> None:
    """Convert a real dataset from its original layout to the polyhead dataset format."""
    from training.data.convert import convert as convert_dataset
    from training.data.folder import read_dataset_info

    path = convert_dataset(fmt, src, out, size=size, overwrite=overwrite)
    tasks, (h, w) = read_dataset_info(path)
    counts = {
        s: len((path / "splits" / f"{s}.txt").read_text().split()) for s in ("train", "val", "test")
    }
    typer.echo(
        f"wrote {fmt} to {path}: {w}x{h}, splits "
        + ", ".join(f"{s} {n}" for s, n in counts.items())
        + "; tasks "
        + ", ".join(f"{t.name} ({t.kind})" for t in tasks.values())
    )


def train(
    config: Path, out: Path, resume: bool, overrides: list[str], baselines: bool = False
) -> None:
    """Train from a YAML config into a run directory (and its single-task baselines)."""
    import os

    from training.config import load_config
    from training.evaluate import format_table
    from training.trainer import Trainer

    cfg = load_config(config, _parse_overrides(overrides))
    trainer = Trainer(cfg, out, resume=resume)
    metrics = trainer.fit()
    if int(os.environ.get("RANK", "0")) == 0:
        typer.echo(format_table(metrics))
        typer.echo(f"run written to {out}")
    if baselines:
        from training.baselines import train_baselines

        for task, path in train_baselines(cfg, out, resume=resume).items():
            typer.echo(f"baseline of {task} in {path}")


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    import yaml

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE (e.g. optim.lr=0.001), got {item!r}")
        parsed[key] = yaml.safe_load(value)
    return parsed


def evaluate(
    run: Path | None,
    model: Path | None,
    data: Path | None,
    split: str,
    baselines: list[str],
    batch_size: int,
    out: Path | None,
) -> None:
    """Per-task metrics of a run (PyTorch) or an exported model (ONNX Runtime)."""
    from training.evaluate import (
        evaluate_model,
        format_table,
        metric_delta,
        multitask_delta,
        primary_metric,
        write_metrics,
    )

    if (run is None) == (model is None):
        raise ConfigError(
            "give exactly one of --run (a training run) or --model (an exported version)"
        )
    if model is not None:
        metrics, tasks, where = _evaluate_exported(model, data, split, batch_size)
    else:
        assert run is not None
        loaded, dataset = _run_and_data(run, data, split)
        metrics = evaluate_model(loaded.model(), loaded.tasks, dataset, batch_size)
        tasks, where = loaded.tasks, run
    primaries = {t.name: primary_metric(t) for t in tasks}
    record: dict[str, Any] = {"split": split, "metrics": metrics}
    baseline_metrics: Metrics = {}
    deltas: dict[str, float] | None = None
    chosen = _parse_baselines(baselines, primaries)
    if run is not None:  # the run's own baselines (train --baselines), unless given explicitly
        from training.baselines import find_baselines

        chosen = {**find_baselines(run, list(primaries)), **chosen}
    if chosen:
        for task, base_run in chosen.items():
            loaded_b, dataset_b = _run_and_data(base_run, data, split)
            if task not in {t.name for t in loaded_b.tasks}:
                raise ConfigError(f"--baseline {task}={base_run}: that run has no task {task!r}")
            m = evaluate_model(loaded_b.model(), loaded_b.tasks, dataset_b, batch_size)
            baseline_metrics[task] = m[task]
        # over the served tasks: an auxiliary task only helps training (as in compare)
        auxiliary = {t.name for t in tasks if t.auxiliary}
        served = {t: m for t, m in baseline_metrics.items() if t not in auxiliary}
        if not served:
            raise ConfigError("every task with a baseline is auxiliary: no delta to report")
        delta, deltas = multitask_delta(metrics, served, primaries)
        directions = {t.name: dict(t.higher_is_better) for t in tasks}
        delta_m, changes = metric_delta(metrics, served, directions)
        record.update(baselines=baseline_metrics, delta_mtl=delta, delta_per_task=deltas)
        record.update(delta_m=delta_m, delta_m_changes=changes)
    typer.echo(format_table(metrics, baseline_metrics or None, deltas, primaries))
    if deltas is not None:
        typer.echo(
            f"multi-task delta (primary metrics, vs single-task): {record['delta_mtl'] * 100:+.2f}%"
        )
        typer.echo(f"Delta_m (every metric, vs single-task): {record['delta_m'] * 100:+.2f}%")
    target = out or (where / f"eval_{split}.json" if run is not None else None)
    if target is not None:
        write_metrics(target, record)
        typer.echo(f"wrote {target}")


def _parse_baselines(items: list[str], primaries: dict[str, PrimaryMetric]) -> dict[str, Path]:
    parsed = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise ConfigError(f"--baseline expects TASK=RUN_DIR, got {item!r}")
        if task not in primaries:
            raise ConfigError(
                f"--baseline {item}: unknown task {task!r}; tasks: {sorted(primaries)}"
            )
        parsed[task] = Path(path)
    return parsed


def _run_and_data(run_dir: Path, data: Path | None, split: str) -> tuple[Any, Any]:
    from training.data.folder import FolderDataset
    from training.runs import load_run

    run = load_run(run_dir)
    root = data or run.config.data.root
    if not Path(root).exists():
        raise ConfigError(f"data folder not found: {root} (pass --data)")
    names = [t.name for t in run.tasks]
    cfg = run.config
    dataset = FolderDataset(root, split, names, None, cfg.data.mean, cfg.data.std)
    dataset.require_image_size(run.input_size)
    return run, dataset


def _evaluate_exported(
    model: Path, data: Path | None, split: str, batch_size: int
) -> tuple[Metrics, list, Path]:
    from serving.manifest import Manifest
    from training.data.folder import FolderDataset
    from training.evaluate import evaluate_predictor, onnx_predictor
    from training.publish import MANIFEST_FILE, MODEL_FILE, existing_versions
    from training.tasks import build_task

    version_dir = model
    if not (model / MANIFEST_FILE).is_file():
        versions = existing_versions(model)
        if not versions:
            raise ConfigError(f"{model} is neither a model version nor a model with versions")
        version_dir = model / str(versions[-1])
    manifest = Manifest.load(version_dir / MANIFEST_FILE)
    root = data or Path(manifest.provenance.data.get("root", ""))
    if not root or not root.exists():
        raise ConfigError(f"data folder not found: {root} (pass --data)")
    tasks = [
        build_task(t.name, t.kind, tuple(t.labels) if t.labels else None) for t in manifest.tasks
    ]
    names = [t.name for t in tasks]
    inp = manifest.input
    dataset = FolderDataset(root, split, names, None, inp.mean, inp.std)
    dataset.require_image_size((inp.height, inp.width))
    predict = onnx_predictor(version_dir / MODEL_FILE, {t.name: t.output for t in manifest.tasks})
    return evaluate_predictor(predict, tasks, dataset, batch_size), tasks, version_dir


def export(
    run: Path | None,
    repo: Path | None,
    name: str | None,
    data: Path | None,
    split: str | None,
    upgrade: Path | None = None,
    force: bool = False,
) -> None:
    """Export a run to ONNX, check it, and publish it as the next version (or ``--upgrade``)."""
    if upgrade is not None:
        options = {"--run": run, "--repo": repo, "--name": name, "--data": data, "--split": split}
        given = [k for k, v in options.items() if v is not None]
        if force:
            given.append("--force")
        if given:
            raise ConfigError(
                f"--upgrade publishes next to the version it upgrades; drop {', '.join(given)}"
            )
        _export_upgrade(upgrade)
        return
    if run is None:
        raise ConfigError(
            "give --run RUN_DIR to export a run, or --upgrade REPO/NAME/VERSION to add decoded "
            "outputs to a published version"
        )
    from training.evaluate import format_table
    from training.export import export_run

    repo, name = repo or Path("model_repo"), name or "scenes"
    result = export_run(run, repo, name, data_root=data, split=split, force=force)
    typer.echo(
        "parity vs PyTorch (max abs error): "
        + ", ".join(f"{k}={v:.2e}" for k, v in result.max_abs_error.items())
    )
    _echo_decoded(result.decoded)
    typer.echo(format_table(result.manifest.metrics))
    typer.echo(f"published {result.path} (version {result.version})")


def _export_upgrade(version_dir: Path) -> None:
    from training.upgrade import publish_upgrade

    version, path, result = publish_upgrade(version_dir)
    typer.echo(
        "raw outputs vs the original graph (max abs difference): "
        + ", ".join(f"{k}={v:.2e}" for k, v in result.raw_max_abs_diff.items())
    )
    _echo_decoded(result.decoded)
    typer.echo(f"published {path} (version {version}, upgraded from {version_dir})")


def _echo_decoded(decoded: dict[str, Agreement]) -> None:
    typer.echo(
        "decoded outputs vs the CPU decoders (max abs error, differing values at exact ties "
        "or within tolerance): "
        + ", ".join(
            f"{k}={a.max_abs_error:.2e} ({a.differing}/{a.values})" for k, a in decoded.items()
        )
    )


def list_registry(what: str) -> list[tuple[str, str]]:
    """(name, one-line description) of every registered weighting, architecture, ..."""
    from training.models import ARCHITECTURES, BACKBONES
    from training.tasks import TASK_KINDS
    from training.weighting import WEIGHTINGS

    registries: dict[str, Any] = {
        "weightings": WEIGHTINGS,
        "architectures": ARCHITECTURES,
        "backbones": BACKBONES,
        "tasks": TASK_KINDS,
    }
    if what not in registries:
        raise ConfigError(f"cannot list {what!r}; choose one of {', '.join(registries)}")
    registry = registries[what]
    rows = []
    for name in registry.names():
        doc = (registry.get(name).__doc__ or "").strip().splitlines()
        rows.append((name, doc[0] if doc else ""))
    return rows


def compare(
    runs: list[Path], out: Path, data: Path | None, split: str, baselines: Path | None
) -> None:
    """Write the comparison of ``runs`` into ``out`` and print its table."""
    from training.compare import compare_runs

    compare_runs(runs, out, data, split, baselines)
    typer.echo((out / "compare.md").read_text())
    typer.echo(f"wrote {out / 'compare.md'}, compare.json, losses.png, weights.png")


def affinity(
    run: Path,
    baselines: Path | None,
    images: int,
    out: Path | None,
    data: Path | None,
    split: str | None,
) -> None:
    """Print and write a run's task affinities: RSA per stage (baselines), TAG (if measured)."""
    from training.analysis.report import AFFINITY_DIR, collect, format_report, write_report

    found = collect(run, baselines, images, data, split)
    typer.echo(format_report(found))
    first, *figures = write_report(found, out or Path(run) / AFFINITY_DIR)
    typer.echo(f"wrote {first}" + (f" and {', '.join(p.name for p in figures)}" if figures else ""))


def group(
    run: Path,
    budget: int,
    method: str | None,
    criterion: str | None,
    out: Path | None,
    baselines: Path | None,
    images: int,
    data: Path | None,
    split: str | None,
) -> None:
    """Propose task groups within ``budget`` trunks and write their configs."""
    from training.analysis.plan import GROUPING_FILE, format_plan, plan_groups

    plan = plan_groups(run, budget, method, out, criterion, baselines, images, data, split)
    typer.echo(format_plan(plan))
    typer.echo(f"wrote {plan.branched.parent / GROUPING_FILE}")
