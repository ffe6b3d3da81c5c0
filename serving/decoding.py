"""From a forward pass to decoded predictions, through the task kinds; and the output budget.

Which graph outputs a request needs (a task's decoded outputs when the graph has them, else its
raw output), the decoded tensors of every task (the graph's, or the kind's CPU decoder's), the
dense ones laid back onto each image at the requested resolution, and each kind's summary: the
``/v1`` prediction. The size of a response is bounded before anything is decoded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from serving.codecs import ENCODINGS
from serving.errors import BadRequest, PayloadTooLarge
from serving.geometry import Geometry
from serving.kinds import DecodeOptions, get_kind
from serving.kinds.base import Maps
from serving.kinds.maps import lay_back, placement, target_size
from serving.manifest import TaskSpec

RESOLUTIONS = ("model", "original")
MAX_SIDE_LIMIT = 65536


def parse_options(
    encoding: str | None,
    resolution: str | None,
    top_k: int | None,
    max_side: int | None = None,
) -> DecodeOptions:
    """Validated decode options (bad values are a 400 naming the choices).

    ``max_side`` caps the long side of maps at the image's resolution; given alone it means
    ``resolution=original``.
    """
    enc = encoding or "float16"
    if enc not in ENCODINGS:
        raise BadRequest(f"encoding must be one of {', '.join(ENCODINGS)}, got {enc!r}")
    if resolution is not None and resolution not in RESOLUTIONS:
        raise BadRequest(f"resolution must be 'model' or 'original', got {resolution!r}")
    if max_side is not None:
        if not 1 <= max_side <= MAX_SIDE_LIMIT:
            raise BadRequest(f"max_side must be between 1 and {MAX_SIDE_LIMIT}, got {max_side}")
        if resolution == "model":
            raise BadRequest(
                "max_side caps maps at the image's resolution: use it with resolution=original "
                "(or alone), not with resolution=model"
            )
    res = resolution or ("original" if max_side is not None else "model")
    k = 5 if top_k is None else top_k
    if not 1 <= k <= 1000:
        raise BadRequest(f"top_k must be between 1 and 1000, got {k}")
    return DecodeOptions(encoding=enc, resolution=res, max_side=max_side, top_k=k)


# ---- which outputs, which tensors -------------------------------------------------------------


def task_outputs(task: TaskSpec) -> list[str]:
    """The graph outputs decoding ``task`` needs: its decoded outputs, or its raw output."""
    names = []
    for d in get_kind(task.kind).decoded:
        graph = task.decoded_output(d.name) if d.ops else None
        names.append(graph or task.output)
    return list(dict.fromkeys(names))


def needed_outputs(tasks: Sequence[TaskSpec]) -> list[str]:
    """The graph outputs decoding ``tasks`` needs, without repeats."""
    return list(dict.fromkeys(o for t in tasks for o in task_outputs(t)))


def task_tensors(task: TaskSpec, outputs: dict[str, np.ndarray]) -> Maps:
    """A batch's decoded tensors of ``task``, from the graph or from its raw output on the CPU.

    ``outputs`` are the graph outputs by ONNX name.
    """
    kind = get_kind(task.kind)
    tensors: Maps = {}
    cpu: Maps | None = None
    for d in kind.decoded:
        graph = task.decoded_output(d.name) if d.ops else task.output
        if graph is not None and graph in outputs:
            tensors[d.name] = outputs[graph]
        else:  # a version exported before graph decoding
            cpu = cpu if cpu is not None else kind.cpu_decode(outputs[task.output])
            tensors[d.name] = cpu[d.name]
    return tensors


def laid_back(
    task: TaskSpec, row: Maps, g: Geometry, options: DecodeOptions
) -> tuple[Maps, dict[str, Any] | None]:
    """One image's decoded tensors with dense maps at the requested size, and their placement."""
    kind = get_kind(task.kind)
    if not kind.dense:
        return row, None
    size = target_size(g, options.resolution, options.max_side)
    maps: Maps = {}
    for d in kind.decoded:
        a = row[d.name]
        if d.resample is not None:
            a = lay_back(a, g, size, d.resample)
            if size != g.resized:  # resized in float32: back to the tensor's own dtype
                a = kind.resampled(d.name, a).astype(d.dtype, copy=False)
        maps[d.name] = a
    return maps, placement(g)


def decode_task(task: TaskSpec, row: Maps, g: Geometry, options: DecodeOptions) -> dict[str, Any]:
    """The ``/v1`` prediction of one task for one image."""
    maps, where = laid_back(task, row, g, options)
    return {"kind": task.kind, **get_kind(task.kind).summarize(task, maps, options, where)}


def decode_predictions(
    outputs: dict[str, np.ndarray],
    tasks: Sequence[TaskSpec],
    geometries: Sequence[Geometry],
    options: DecodeOptions,
) -> list[dict[str, Any]]:
    """Each image's decoded predictions, as ``/v1`` returns them: width, height and tasks.

    ``outputs`` holds the batch's graph outputs by ONNX name, row i for image i.
    """
    tensors = {t.name: task_tensors(t, outputs) for t in tasks}
    return [
        {
            "width": g.original[1],
            "height": g.original[0],
            "tasks": {
                t.name: decode_task(t, {k: v[i] for k, v in tensors[t.name].items()}, g, options)
                for t in tasks
            },
        }
        for i, g in enumerate(geometries)
    ]


# ---- the output budget ----------------------------------------------------------------------


def task_bytes(task: TaskSpec, g: Geometry, options: DecodeOptions) -> int:
    """An upper bound on one task's JSON for one image."""
    kind = get_kind(task.kind)
    size = target_size(g, options.resolution, options.max_side) if kind.dense else (0, 0)
    return kind.response_bytes(task, size, options) + len(task.name) + len(task.kind) + 40


def response_bytes(
    tasks: Sequence[TaskSpec], geometries: Sequence[Geometry], options: DecodeOptions
) -> int:
    """An upper bound on the ``/v1`` response's size, known before decoding."""
    per_image = (100 + sum(task_bytes(t, g, options) for t in tasks) for g in geometries)
    return 200 + sum(per_image)


def check_budget(size: int, limit: int, shrink: str) -> None:
    """413 when a response of ``size`` bytes would exceed ``limit``; ``shrink`` says how not to."""
    if size > limit:
        raise PayloadTooLarge(
            f"the response would be up to {size / 2**20:.1f} MiB ({size} bytes), over the "
            f"limit of {limit} bytes (POLYHEAD_MAX_RESPONSE_BYTES): {shrink}"
        )


#: How a /v1 (or scoring) request makes its response smaller.
V1_SHRINK = (
    "ask for resolution=model (the default) or a smaller max_side, encoding=float16 or png "
    "instead of json, fewer tasks, or fewer images per request"
)
