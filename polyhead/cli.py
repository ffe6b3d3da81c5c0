"""The ``polyhead`` command line: data, train, evaluate, export (training) and serve (serving).

Training commands import torch lazily, inside the command, so a serving host without torch can
run ``polyhead serve``; there, a training command says which extra to install
(``polyhead.errors``). Help text is rendered as Rich markup: square brackets are tags, so
defaults are written in parentheses.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from polyhead.errors import user_errors
from polyhead.help import TidyCommand, TidyGroup

app = typer.Typer(no_args_is_help=True, add_completion=False, cls=TidyGroup)
data_app = typer.Typer(
    no_args_is_help=True,
    cls=TidyGroup,
    help="Datasets: write synthetic scenes, convert real datasets.",
)
app.add_typer(data_app, name="data")

F = TypeVar("F", bound=Callable[..., Any])

#: Our loggers, at INFO without --verbose; every other library's stays at WARNING.
OWN_LOGGERS = ("polyhead", "training", "serving")

# Options of the commands that reach a model backend (serve, score): one definition each.
BackendOption = Annotated[str | None, typer.Option(help="onnxruntime (default) or triton.")]
TritonUrlOption = Annotated[
    str | None, typer.Option(help="Triton's host:port, with --backend triton.")
]
ThreadsOption = Annotated[
    int | None, typer.Option(help="ONNX Runtime intra-op threads (0 = auto).")
]
ProvidersOption = Annotated[
    str | None, typer.Option(help="Comma-separated ONNX Runtime providers, in preference order.")
]
EnvFileOption = Annotated[Path | None, typer.Option(help="A POLYHEAD_* settings file.")]


def _command(group: typer.Typer, path: str, extra: str | None) -> Callable[[F], F]:
    """Register a command at ``path`` (``train``, ``data synth``) that needs ``extra``.

    The errors a user can cause become one line and exit code 2 (``polyhead.errors``).
    """

    def decorate(fn: F) -> F:
        wrapped = user_errors(f"polyhead {path}", extra)(fn)
        group.command(path.split()[-1], cls=TidyCommand)(wrapped)
        return wrapped

    return decorate


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Debug logging, every library's included.")
    ] = False,
) -> None:
    """Multi-task models: train, evaluate, export (training extra); serve, score (no torch)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        for name in OWN_LOGGERS:
            logging.getLogger(name).setLevel(logging.INFO)


def _settings(env_file: Path | None, **options: Any) -> Any:
    """Server settings: the options given on the command line over POLYHEAD_* and defaults."""
    from pydantic import ValidationError

    from serving.settings import load_settings

    try:
        return load_settings(env_file, **{k: v for k, v in options.items() if v is not None})
    except ValidationError as e:
        from serving.manifest import render_errors

        typer.echo(render_errors(e, "error: invalid settings"), err=True)
        raise typer.Exit(2) from e


@_command(data_app, "data synth", "train")
def data_synth(
    out: Annotated[Path, typer.Option(help="Folder to write the dataset to.")],
    n: Annotated[int, typer.Option(min=1, help="Number of scenes.")] = 2000,
    size: Annotated[int, typer.Option(min=16, max=1024, help="Image side in pixels.")] = 128,
    seed: Annotated[int, typer.Option(help="Seed; the same seed writes identical files.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
) -> None:
    """Write procedural multi-task scenes (semseg, depth, normals, edges, labels)."""
    from training.cli import synth

    synth(out, n, size, seed, overwrite)


@_command(data_app, "data convert", "train")
def data_convert(
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="Source layout: nyud, pascal_context, cityscapes, nyuv2_mtan or cityscapes_mtan.",
        ),
    ],
    src: Annotated[Path, typer.Option(help="The dataset folder in its original layout.")],
    out: Annotated[Path, typer.Option(help="Folder to write the polyhead dataset to.")],
    size: Annotated[
        int | None,
        typer.Option(min=8, max=4096, help="Resize every image to N x N (default: keep)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing dataset.")] = False,
) -> None:
    """Convert NYUD-v2, PASCAL-Context or Cityscapes to the polyhead dataset format."""
    from training.cli import convert

    convert(format_, src, out, size, overwrite)


@_command(app, "train", "train")
def train(
    config: Annotated[Path, typer.Option(help="YAML training config.")],
    out: Annotated[Path, typer.Option(help="Run directory to write.")],
    resume: Annotated[
        bool, typer.Option(help="Continue the run in --out from its last checkpoint.")
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", metavar="KEY=VALUE", help="Override a config key: --set optim.lr=0.001"
        ),
    ] = None,
    baselines: Annotated[
        bool,
        typer.Option(
            help="Also train each task's single-task baseline (same backbone and budget) "
            "in OUT/baselines/TASK, for the multi-task delta."
        ),
    ] = False,
) -> None:
    """Train a multi-task model (under torchrun: data-parallel, one process per device)."""
    from training.cli import train as run_train

    run_train(config, out, resume, set_ or [], baselines)


@_command(app, "list", "train")
def list_(
    what: Annotated[str, typer.Argument(help="weightings, architectures, backbones or tasks.")],
) -> None:
    """List what is registered: weighting strategies, architectures, backbones, task kinds."""
    from training.cli import list_registry

    rows = list_registry(what)
    width = max(len(n) for n, _ in rows)
    for name, doc in rows:
        typer.echo(f"{name:<{width}}  {doc}")


@_command(app, "evaluate", "train")
def evaluate(
    run: Annotated[Path | None, typer.Option(help="A training run directory (PyTorch).")] = None,
    model: Annotated[
        Path | None,
        typer.Option(help="An exported model: repo/NAME or repo/NAME/VERSION (ONNX Runtime)."),
    ] = None,
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: the one trained on).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    baseline: Annotated[
        list[str] | None,
        typer.Option(metavar="TASK=RUN_DIR", help="Single-task baseline (repeatable)."),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    out: Annotated[Path | None, typer.Option(help="Write the metrics JSON here.")] = None,
) -> None:
    """Per-task metrics, and the multi-task delta against single-task baselines."""
    from training.cli import evaluate as run_evaluate

    run_evaluate(run, model, data, split, baseline or [], batch_size, out)


@_command(app, "compare", "train")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to compare.")],
    out: Annotated[
        Path, typer.Option(help="Folder for compare.md, compare.json and plots.")
    ] = Path("compare"),
    data: Annotated[
        Path | None, typer.Option(help="Dataset folder (default: each run's own).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "test",
    baselines: Annotated[
        Path | None,
        typer.Option(
            help="Folder of single-task baselines (TASK/ run folders) for runs without "
            "their own RUN/baselines."
        ),
    ] = None,
) -> None:
    """Compare runs: per-task metrics, multi-task delta, parameters, latency; loss/weight plots."""
    from training.cli import compare as run_compare

    run_compare(runs, out, data, split, baselines)


# Options of the task-relationship commands (affinity, group): one definition each.
AffinityBaselinesOption = Annotated[
    Path | None,
    typer.Option(
        help="Folder of single-task baselines (TASK/ run folders) (default: RUN/baselines)."
    ),
]
AffinityImagesOption = Annotated[
    int,
    typer.Option(help="Held-out images RSA compares representations on (fewer if the split is)."),
]
AffinityDataOption = Annotated[
    Path | None, typer.Option(help="Dataset folder (default: the one trained on).")
]
AffinitySplitOption = Annotated[
    str | None, typer.Option(help="Split of the images (default: the run's validation split).")
]


@_command(app, "affinity", "train")
def affinity(
    run: Annotated[Path, typer.Argument(help="A training run directory.")],
    baselines: AffinityBaselinesOption = None,
    images: AffinityImagesOption = 100,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for affinity.json and the heat maps (default: RUN/affinity)."),
    ] = None,
    data: AffinityDataOption = None,
    split: AffinitySplitOption = None,
) -> None:
    """Which tasks help each other: RSA per backbone stage and TAG (if the run measured it)."""
    from training.cli import affinity as run_affinity

    run_affinity(run, baselines, images, out, data, split)


@_command(app, "group", "train")
def group(
    run: Annotated[Path, typer.Argument(help="A training run directory.")],
    budget: Annotated[
        int, typer.Option(help="Trunks affordable: at most this many groups, one network each.")
    ],
    method: Annotated[
        str | None,
        typer.Option(
            help="Affinity to group by: tag (the run's affinity_tag.json) or rsa (single-task "
            "baselines) (default: tag if the run measured it)."
        ),
    ] = None,
    criterion: Annotated[
        str | None,
        typer.Option(
            help="Configs for the best partition (disjoint groups) or selection (overlapping) "
            "(default: the higher predicted total)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the configs and grouping.json (default: RUN/grouping)."),
    ] = None,
    baselines: AffinityBaselinesOption = None,
    images: AffinityImagesOption = 100,
    data: AffinityDataOption = None,
    split: AffinitySplitOption = None,
) -> None:
    """Which tasks belong together: groups within a budget, and configs to train them."""
    from training.cli import group as run_group

    run_group(run, budget, method, criterion, out, baselines, images, data, split)


@_command(app, "export", "train")
def export(
    run: Annotated[Path | None, typer.Option(help="A finished training run directory.")] = None,
    upgrade: Annotated[
        Path | None,
        typer.Option(
            help="Instead of a run: a version REPO/NAME/VERSION exported without decoded "
            "outputs, published again with them (same weights) as the next version of NAME."
        ),
    ] = None,
    repo: Annotated[
        Path | None, typer.Option(help="Model repository root (default: model_repo).")
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Model name in the repository (default: scenes).")
    ] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset for parity and metrics.")] = None,
    split: Annotated[
        str | None, typer.Option(help="Split whose metrics go in the manifest.")
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            help="Publish even if the versions beside it take another input size (Triton's "
            "config.pbtxt, rewritten for the new one, will no longer fit them)."
        ),
    ] = False,
) -> None:
    """Export to ONNX with decoded outputs, check parity with PyTorch, publish the next version."""
    from training.cli import export as run_export

    run_export(run, repo, name, data, split, upgrade, force=force)


@_command(app, "score", "serve")
def score(
    input_: Annotated[
        str,
        typer.Option(
            "--input",
            help="A folder (recursive), a glob, or a list file: .txt (a path per line), "
            ".jsonl or .parquet (a 'path' and an optional 'id').",
        ),
    ],
    output: Annotated[Path, typer.Option(help="Output folder of Parquet shards.")],
    repo: Annotated[Path, typer.Option(help="Model repository root.")] = Path("model_repo"),
    model: Annotated[str, typer.Option(help="Model name in the repository.")] = "scenes",
    version: Annotated[
        int | None, typer.Option(help="Model version (default: the newest).")
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated tasks to keep (default: all).")
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 16,
    workers: Annotated[
        int,
        typer.Option(min=0, help="Reading/decoding threads, or Ray actors (0: one per core)."),
    ] = 0,
    encoding: Annotated[
        str, typer.Option(help="Dense maps: png, float16 (raw bytes) or json (values).")
    ] = "float16",
    resolution: Annotated[
        str | None,
        typer.Option(
            help="Dense maps at the model's grid (model, the default) or the image's size "
            "(original)."
        ),
    ] = None,
    max_side: Annotated[
        int | None,
        typer.Option(help="Maps at the image's size, their long side at most this many pixels."),
    ] = None,
    top_k: Annotated[int, typer.Option(min=1, help="Labels kept for classification.")] = 5,
    shard_size: Annotated[
        int, typer.Option(min=1, help="Rows per Parquet shard (the unit of resumption).")
    ] = 500,
    extensions: Annotated[
        str | None,
        typer.Option(help="File endings a folder scan takes, comma-separated, or '*' for all."),
    ] = None,
    backend: BackendOption = None,
    triton_url: TritonUrlOption = None,
    threads: ThreadsOption = None,
    providers: ProvidersOption = None,
    ray: Annotated[
        str | None,
        typer.Option(
            help="Run on Ray Data: --ray alone starts a local Ray; --ray ADDRESS joins a cluster.",
        ),
    ] = None,
    gpus_per_actor: Annotated[
        float | None, typer.Option(help="GPUs per Ray actor (default: 1 if the cluster has any).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Discard a previous run in --output instead of resuming it.")
    ] = False,
    env_file: EnvFileOption = None,
) -> None:
    """Score images into Parquet: every task's predictions per image, resumable, exactly once.

    Re-running the same command after a crash resumes it; a finished run says so and exits.
    """
    import json
    import sys

    from serving.decoding import parse_options
    from serving.scoring import IMAGE_EXTENSIONS, ScoreJob, ScoreOptions
    from serving.scoring import score as run_score

    settings = _settings(
        env_file,
        backend=backend,
        triton_url=triton_url,
        intra_op_threads=threads,
        providers=providers.split(",") if providers else None,
    )
    decode = parse_options(encoding, resolution, top_k, max_side)
    if extensions is None:
        exts: tuple[str, ...] | None = IMAGE_EXTENSIONS
    elif extensions.strip() == "*":
        exts = None
    else:
        exts = tuple(
            e if e.startswith(".") else f".{e}" for e in extensions.split(",") if e.strip()
        )
    job = ScoreJob(
        repo=repo,
        model=model,
        source=input_,
        output=output,
        version=version,
        options=ScoreOptions(
            tasks=tuple(t.strip() for t in tasks.split(",") if t.strip()) if tasks else None,
            encoding=decode.encoding,
            resolution=decode.resolution,
            max_side=decode.max_side,
            top_k=decode.top_k,
            max_image_pixels=settings.max_image_pixels,
            min_image_side=settings.min_image_side,
            max_response_bytes=settings.max_response_bytes,
        ),
        batch_size=batch_size,
        workers=workers,
        shard_size=shard_size,
        extensions=exts,
        settings=settings.model_dump(
            include={
                "backend",
                "model_backends",
                "triton_url",
                "triton_protocol",
                "triton_timeout_s",
                "providers",
                "intra_op_threads",
            }
        ),
        ray=ray,
        gpus_per_actor=gpus_per_actor,
        overwrite=overwrite,
    )
    summary = run_score(job)
    typer.echo(
        f"{summary['rows']} rows ({summary['errors']} with errors) in {output}: "
        f"{summary['model']} v{summary['version']}, {summary['images_per_second_this_run']} img/s",
        err=True,
    )
    sys.stdout.write(json.dumps(summary) + "\n")


@_command(app, "serve", "serve")
def serve(
    repo: Annotated[
        Path | None, typer.Option(help="Model repository root (default: model_repo).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to bind (default: 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="HTTP port (default: 8000).")] = None,
    grpc_port: Annotated[
        int | None, typer.Option(help="Also serve KServe v2 gRPC on this port (off by default).")
    ] = None,
    backend: BackendOption = None,
    triton_url: TritonUrlOption = None,
    max_batch_size: Annotated[int | None, typer.Option(help="Rows per forward pass.")] = None,
    max_queue_delay_ms: Annotated[
        float | None, typer.Option(help="Wait for a fuller batch.")
    ] = None,
    max_queue_size: Annotated[int | None, typer.Option(help="Requests queued before 503.")] = None,
    threads: ThreadsOption = None,
    providers: ProvidersOption = None,
    env_file: EnvFileOption = None,
) -> None:
    """Serve the models of a repository over HTTP, and gRPC if asked (no torch needed).

    Options left out come from POLYHEAD_* environment variables (or --env-file), then defaults.
    """
    import uvicorn

    from serving.api.app import create_app
    from serving.api.http_protocol import protocol_class

    settings = _settings(
        env_file,
        repo=repo,
        host=host,
        port=port,
        grpc_port=grpc_port,
        backend=backend,
        triton_url=triton_url,
        max_batch_size=max_batch_size,
        max_queue_delay_ms=max_queue_delay_ms,
        max_queue_size=max_queue_size,
        intra_op_threads=threads,
        providers=providers.split(",") if providers else None,
    )
    if not settings.repo.is_dir():
        typer.echo(
            f"error: model repository not found: {settings.repo} "
            "(pass --repo PATH, or set POLYHEAD_REPO)",
            err=True,
        )
        raise typer.Exit(2)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        http=protocol_class(settings.max_header_bytes),
    )


def with_optional_values(argv: list[str]) -> list[str]:
    """``--ray`` with no value means ``--ray local``.

    Typer has no options with an optional value, so a bare ``--ray`` (last, or followed by
    another option) gets its default value here, before parsing.
    """
    out: list[str] = []
    for i, arg in enumerate(argv):
        out.append(arg)
        if arg == "--ray" and (i + 1 == len(argv) or argv[i + 1].startswith("-")):
            out.append("local")
    return out


def run() -> None:
    """The ``polyhead`` entry point."""
    app(args=with_optional_values(sys.argv[1:]), prog_name="polyhead")
