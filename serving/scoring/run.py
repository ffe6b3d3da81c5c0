"""A scoring run from start to ``_SUCCESS``: claim the output, list inputs, score what is left."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from serving.manifest import Manifest
from serving.scoring.output import OutputDir, RunRecord, inputs_digest, shards_of
from serving.scoring.predictor import ModelRef, Predictor, ScoreOptions, resolve_version
from serving.scoring.progress import Progress
from serving.scoring.sources import IMAGE_EXTENSIONS, InputList, list_inputs
from serving.service import select_tasks

log = logging.getLogger("polyhead.score")


@dataclass(frozen=True)
class ScoreJob:
    """Everything ``polyhead score`` was told."""

    repo: Path
    model: str
    source: str
    output: Path
    version: int | None = None
    options: ScoreOptions = field(default_factory=ScoreOptions)
    batch_size: int = 16
    workers: int = 0  # reading threads (local) or actors (Ray); 0: the number of cores
    shard_size: int = 500
    extensions: tuple[str, ...] | None = IMAGE_EXTENSIONS
    settings: dict[str, Any] = field(default_factory=dict)  # backend settings (POLYHEAD_*)
    ray: str | None = None  # None: local; "local": a local Ray; else a Ray cluster address
    gpus_per_actor: float | None = None  # None: 1 when the cluster has GPUs, else 0
    overwrite: bool = False


def score(job: ScoreJob, progress_stream: Any = None) -> dict[str, Any]:
    """Run (or resume, or confirm finished) the job; returns the summary in ``_SUCCESS``."""
    if job.batch_size < 1 or job.shard_size < 1 or job.workers < 0:
        raise ValueError("batch size and shard size must be >= 1, workers >= 0")
    resolve_version(job.repo, job.model, job.version)  # a wrong model leaves no output folder
    out = OutputDir(job.output)
    with out.locked():
        if job.overwrite:
            out.clear()
        existing = out.existing_record()
        version = resolve_version(
            job.repo,
            job.model,
            job.version if job.version is not None or existing is None else existing.version,
        )
        manifest = Manifest.load(job.repo / job.model / str(version) / "manifest.json")
        tasks = select_tasks(manifest, job.options.tasks)
        options = job.options.decode
        record = RunRecord(
            source=job.source,
            extensions=list(job.extensions) if job.extensions else None,
            model=job.model,
            version=version,
            tasks=[t.name for t in tasks],
            options={
                "encoding": options.encoding,
                "resolution": options.resolution,
                "max_side": options.max_side,
                "top_k": options.top_k,
            },
            shard_size=job.shard_size,
        )
        if existing is not None:
            from serving.scoring.output import OutputError

            diff = record.differences(existing)
            if diff:
                raise OutputError(
                    f"{job.output} holds another run ({'; '.join(diff)}); re-run its command "
                    "to resume it, or use --overwrite or another --output"
                )
            record = existing
            finished = out.success()
            if finished is not None:
                log.info("%s is already complete", job.output)
                return finished
            inputs = out.saved_inputs(record)
            log.info("resuming the run in %s (%d inputs)", job.output, len(inputs))
        else:
            inputs = list_inputs(job.source, job.extensions)
            record = replace(record, inputs=len(inputs), inputs_sha256=inputs_digest(inputs))
            out.begin(record, inputs)
            log.info("scoring %d inputs from %s into %s", len(inputs), job.source, job.output)
        return _score_pending(job, out, record, inputs, progress_stream)


def _score_pending(
    job: ScoreJob, out: OutputDir, record: RunRecord, inputs: InputList, stream: Any
) -> dict[str, Any]:
    from serving.scoring.pipeline import ShardSink, run_local

    shards = shards_of(len(inputs), record.shard_size)
    done = out.committed(shards, record.inputs_sha256)
    pending = [s for s in shards if s.number not in done]
    rows_done = sum(s.stop - s.start for s in shards if s.number in done)
    workers = job.workers or os.cpu_count() or 1
    ref = ModelRef(str(job.repo), job.model, record.version, job.settings)
    options = replace(job.options, tasks=tuple(record.tasks))
    started = time.time()
    device = "-"

    def progress() -> Progress:  # started once the model is loaded: rates exclude loading
        return Progress(len(inputs), rows_done, sum(done.values()), stream=stream)

    shown = progress()
    if pending and job.ray is None:
        predictor = Predictor(ref, options, io_threads=workers)
        device = predictor.device
        try:
            shown = progress()
            sink = ShardSink(out, pending, predictor.layout.schema, record.inputs_sha256, shown)
            run_local(predictor, inputs, pending, sink, job.batch_size, workers)
        finally:
            predictor.close()
        shown.close()
    elif pending and job.ray is not None:
        from serving.scoring.ray_runner import run_ray

        device = run_ray(
            ref,
            options,
            inputs,
            pending,
            out,
            record.inputs_sha256,
            shown,
            job.batch_size,
            workers,
            job.ray,
            job.gpus_per_actor,
        )
        shown.close()
    errors = shown.errors
    summary = {
        "rows": len(inputs),
        "errors": errors,
        "scored": len(inputs) - errors,
        "shards": len(shards),
        "resumed_shards": len(done),
        "model": record.model,
        "version": record.version,
        "tasks": record.tasks,
        "options": record.options,
        "engine": "local" if job.ray is None else f"ray {job.ray}",
        "device": device,
        "seconds_this_run": round(time.time() - started, 3),
        "images_per_second_this_run": round(shown.rate, 2),
    }
    out.finish(summary)
    return summary
