"""Export a trained run to ONNX, check it against PyTorch, and publish it with its manifest.

Checks, in order (any failure aborts before anything is published):
1. ``onnx.checker`` with ``full_check`` (shape inference included);
2. one self-contained file: no external-data side file;
3. input and outputs exactly as the contract says: ``image`` [N,3,H,W] with a dynamic batch
   axis and one output per task named after the task, batch axis first;
4. each task kind's decoded outputs are appended to the graph (``training.graph_decoding``), and
   1-3 run again: the outputs are now the raw ones, then the decoded ones ``TASK.TENSOR``;
5. parity: ONNX Runtime (CPU) and PyTorch agree on random inputs at batch 1 and 4 and on real
   images, elementwise ``|ort - torch| <= atol + rtol * |torch|`` (defaults atol 1e-4, rtol 1e-3:
   float32 kernels differ in summation order, well below anything that changes a decoded
   prediction);
6. on the same inputs, every decoded output equals the CPU decoder (``serving.kinds.ops``) run
   on the graph's raw output (``training.onnx_checks.check_decoded``);
7. the exported graph is evaluated on the test split with ONNX Runtime, and those metrics go
   into the manifest (so ``polyhead evaluate --model`` reproduces them).
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from serving.manifest import InputSpec, Manifest, Provenance, TaskSpec, check_model_name
from training.data.folder import FolderDataset
from training.errors import ExportError
from training.evaluate import Metrics, evaluate_predictor, onnx_predictor
from training.graph_decoding import append_decoded_outputs_file, decoded_names
from training.onnx_checks import INPUT_NAME, Agreement, check_decoded, check_onnx
from training.publish import MODEL_FILE, check_input_size, file_sha256, publish_version, staging
from training.runs import Run, load_run
from training.tasks import TaskKind

log = logging.getLogger(__name__)

_DEFAULT_THRESHOLD_KINDS = {"edges", "multilabel"}
_UNITS = {"depth": "m"}
#: Loggers of the exporter's libraries: torch.onnx warns once per torchvision op it cannot
#: register, onnxscript and onnx_ir log every optimisation pass.
_EXPORTER_LOGGERS = ("torch.onnx", "onnxscript", "onnx_ir")


class _TupleOutputs(nn.Module):
    """Returns the model's outputs as a tuple in task order (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)
        return tuple(out[n] for n in self.names)


@dataclass(frozen=True)
class ExportResult:
    """What was published; how its raw outputs matched PyTorch, its decoded ones the CPU's."""

    version: int
    path: Path
    manifest: Manifest
    max_abs_error: dict[str, float]
    decoded: dict[str, Agreement]


def export_onnx(
    model: nn.Module, names: list[str], size: tuple[int, int], path: Path, opset: int
) -> None:
    """Write ``model`` as one ONNX file with a dynamic batch axis and one output per task."""
    dummy = torch.randn(2, 3, *size)
    dynamic = {INPUT_NAME: {0: "batch"}, **{n: {0: "batch"} for n in names}}
    with warnings.catch_warnings(), _quiet_exporter():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _TupleOutputs(model, names).eval(),
            (dummy,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Only the exporter's errors, unless debug logging is on (``polyhead -v``).

    torch configures its own loggers when imported (a handler, level WARNING), so this is set
    here, around the export, rather than once with the root logger.
    """
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    loggers = [logging.getLogger(name) for name in _EXPORTER_LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def check_parity(
    model: nn.Module,
    names: list[str],
    path: Path,
    inputs: list[torch.Tensor],
    atol: float,
    rtol: float,
) -> dict[str, float]:
    """Run ONNX Runtime and PyTorch on each input batch; fail unless they agree."""
    predict = onnx_predictor(path, {n: n for n in names})
    worst = dict.fromkeys(names, 0.0)
    with torch.no_grad():
        for x in inputs:
            ref = model(x)
            got = predict(x)
            for n in names:
                r, g = ref[n].numpy(), got[n].numpy()
                if r.shape != g.shape:
                    raise ExportError(f"output {n}: ONNX shape {g.shape} != PyTorch {r.shape}")
                err = np.abs(g - r)
                worst[n] = max(worst[n], float(err.max()))
                bad = err > atol + rtol * np.abs(r)
                if bad.any():
                    raise ExportError(
                        f"parity check failed for {n!r} at batch {x.shape[0]}: "
                        f"{int(bad.sum())} values differ by more than "
                        f"atol={atol} + rtol={rtol}*|ref| "
                        f"(max abs error {worst[n]:.3g})"
                    )
    return worst


def exported_tasks(tasks: list[TaskKind]) -> list[TaskKind]:
    """The tasks an export keeps: all but the auxiliary ones (trained to help, never served)."""
    return [t for t in tasks if not t.auxiliary]


def task_spec(task: TaskKind) -> TaskSpec:
    """The manifest entry for a trained task."""
    return TaskSpec(
        name=task.name,
        kind=task.kind,
        output=task.name,
        channels=task.channels,
        labels=list(task.labels) if task.labels else None,
        threshold=0.5 if task.kind in _DEFAULT_THRESHOLD_KINDS else None,
        units=_UNITS.get(task.kind),
        primary_metric=task.primary_metric,
        higher_is_better=task.higher_is_better[task.primary_metric],
    )


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def export_run(
    run_dir: str | Path,
    repo: str | Path,
    name: str,
    data_root: str | Path | None = None,
    split: str | None = None,
    real_batches: int = 2,
    force: bool = False,
) -> ExportResult:
    """Export, check, evaluate and publish a run as the next version of ``repo/name``.

    Checked before anything is exported: the model name, the dataset's image size, and the
    input size of the versions already in ``repo/name`` (``force`` publishes another size). A
    failure leaves nothing behind (``training.publish.staging``).
    """
    check_model_name(name)
    run = load_run(run_dir)
    cfg = run.config
    exported = exported_tasks(run.tasks)
    names = [t.name for t in exported]
    model = run.model()
    root = Path(data_root) if data_root else cfg.data.root
    split = split or cfg.data.test_split
    if not root.exists():
        raise ExportError(
            f"data folder {root} not found: export evaluates the model on it (pass --data)"
        )
    dataset = FolderDataset(root, split, names, None, cfg.data.mean, cfg.data.std)
    dataset.require_image_size(run.input_size)
    check_input_size(Path(repo) / name, run.input_size, force)

    with staging(Path(repo), name) as staged:
        onnx_path = staged / MODEL_FILE
        tasks = export_with_decoded(model, names, run, onnx_path)
        inputs = _parity_inputs(dataset, run.input_size, real_batches)
        errors = check_parity(model, names, onnx_path, inputs, cfg.export.atol, cfg.export.rtol)
        log.debug("parity ok: max abs error %s", errors)
        decoded = check_decoded(onnx_path, tasks, [x.numpy() for x in inputs])
        log.debug("decoded outputs agree with the CPU decoders: %s", decoded)
        metrics = evaluate_predictor(
            onnx_predictor(onnx_path, {n: n for n in names}),
            exported,
            dataset,
            cfg.run.eval_batch_size,
        )
        sha, opset = file_sha256(onnx_path), cfg.export.opset
        data = {**run.dataset, "root": str(root), "split": split, "images": len(dataset)}

        def make_manifest(version: int) -> Manifest:
            return build_manifest(run, name, version, tasks, metrics, sha, opset, data)

        trt = cfg.export.tensorrt
        version, path = publish_version(
            Path(repo),
            name,
            staged,
            make_manifest,
            cfg.export.max_queue_delay_microseconds,
            tensorrt_precision=None if trt == "off" else trt.upper(),
            warmup=cfg.export.warmup,
        )
    return ExportResult(version, path, Manifest.load(path / "manifest.json"), errors, decoded)


def export_with_decoded(model: nn.Module, names: list[str], run: Run, path: Path) -> list[TaskSpec]:
    """Export ``model`` to ``path``, append the decoded outputs, check both graphs.

    Returns:
        The manifest's tasks, listing their decoded outputs.
    """
    export_onnx(model, names, run.input_size, path, run.config.export.opset)
    check_onnx(path, names, run.input_size)
    specs = [task_spec(t) for t in exported_tasks(run.tasks)]
    tasks = append_decoded_outputs_file(path, path, specs)
    check_onnx(path, names, run.input_size, decoded_names(tasks))
    return tasks


def _parity_inputs(
    dataset: FolderDataset, size: tuple[int, int], real_batches: int
) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    inputs = [torch.randn(1, 3, *size, generator=g), torch.randn(4, 3, *size, generator=g)]
    n = min(len(dataset), 4 * real_batches)
    for start in range(0, n, 4):
        inputs.append(torch.stack([dataset[i]["image"] for i in range(start, min(start + 4, n))]))
    return inputs


def build_manifest(
    run: Run,
    name: str,
    version: int,
    tasks: list[TaskSpec],
    metrics: Metrics,
    sha256: str,
    opset: int,
    data: dict[str, Any],
) -> Manifest:
    """The manifest of an exported run (``tasks`` as :func:`export_with_decoded` returns them)."""
    import training

    cfg = run.config
    h, w = run.input_size
    return Manifest(
        name=name,
        version=version,
        input=InputSpec(name=INPUT_NAME, height=h, width=w, mean=cfg.data.mean, std=cfg.data.std),
        tasks=tasks,
        max_batch_size=cfg.export.max_batch_size,
        metrics=metrics,
        provenance=Provenance(
            config=cfg.model_dump(mode="json"),
            data=data,
            git_commit=_git_commit(),
            created_at=datetime.now(UTC),
            onnx_sha256=sha256,
            opset=opset,
            exporter="torch.onnx (dynamo)",
            framework=f"torch {torch.__version__}",
            polyhead_version=training.__version__,
        ),
    )
