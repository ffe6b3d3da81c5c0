"""The Parquet layout of scored rows: the /v1 decoded predictions, flattened into typed columns.

Every row has ``id``, ``path``, ``model``, ``version``, ``error`` (null when the image scored),
``width`` and ``height`` (of the image), then, per task, one column per field of the /v1
decoded prediction that varies from image to image, named ``TASK.FIELD``. Each task kind says
which (``Kind.columns`` in ``serving.kinds``):

| kind | columns |
|---|---|
| segmentation | ``classes`` (list of {index, label, share}), ``map`` |
| depth | ``min``, ``max``, ``mean``, ``map`` (+ ``map_value_min/max`` with PNG) |
| normals | ``map`` |
| edges, saliency | ``fraction_above_threshold``, ``probability`` |
| classification | ``label``, ``probability``, ``top_k`` (list of {label, index, probability}) |
| multilabel | ``labels`` (list of {label, probability}), ``scores`` ({label: probability}) |
| regression | ``values`` |

Dense maps are the bytes the API would base64 (a PNG file, or little-endian float16 / uint8
values), or, with the json encoding, the flattened values; beside each, ``FIELD_shape``,
``FIELD_box`` (left, top, width, height of the image it covers) and ``FIELD_image`` (the
image's width and height). What is the same for every row (kind, units,
thresholds, labels, each map's encoding and dtype) is stored once, in the file's metadata
(``polyhead.template``): :func:`prediction_from_row` puts a row back together into exactly the
JSON ``/v1`` returns.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pyarrow as pa

from serving.decoding import decode_task
from serving.geometry import identity
from serving.kinds import Column, DecodeOptions, get_kind
from serving.manifest import Manifest, TaskSpec

#: The columns every row has, before the task columns.
BASE_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("path", pa.string(), nullable=False),
    pa.field("model", pa.string(), nullable=False),
    pa.field("version", pa.int32(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
]


def task_columns(task: TaskSpec, encoding: str) -> list[Column]:
    """The columns of one task, as its kind lays them out."""
    return get_kind(task.kind).columns(task, encoding)


def _get(d: dict[str, Any], key: tuple[str, ...]) -> Any:
    for k in key:
        d = d[k]
    return d


def _set(d: dict[str, Any], key: tuple[str, ...], value: Any) -> None:
    for k in key[:-1]:
        d = d.setdefault(k, {})
    d[key[-1]] = value


def _pop(d: dict[str, Any], key: tuple[str, ...]) -> None:
    for k in key[:-1]:
        d = d[k]
    d.pop(key[-1], None)


def _options_meta(options: DecodeOptions) -> dict[str, Any]:
    return {
        "encoding": options.encoding,
        "resolution": options.resolution,
        "max_side": options.max_side,
        "top_k": options.top_k,
    }


class RowLayout:
    """The schema of one run (model, tasks, options) and the row <-> prediction mapping."""

    def __init__(self, manifest: Manifest, tasks: list[TaskSpec], options: DecodeOptions) -> None:
        """Lay out ``tasks`` of ``manifest`` as decoded with ``options``."""
        self.manifest = manifest
        self.tasks = tasks
        self.options = options
        self.columns = {t.name: task_columns(t, options.encoding) for t in tasks}
        self.templates = {t.name: self._template(t) for t in tasks}
        fields = list(BASE_FIELDS)
        for t in tasks:
            fields += [pa.field(c.name, c.type) for c in self.columns[t.name]]
        metadata = {
            "polyhead.model": manifest.name,
            "polyhead.version": str(manifest.version),
            "polyhead.tasks": json.dumps([t.name for t in tasks]),
            "polyhead.task_specs": json.dumps([t.model_dump(mode="json") for t in tasks]),
            "polyhead.options": json.dumps(_options_meta(options)),
            "polyhead.template": json.dumps(self.templates),
        }
        self.schema = pa.schema(fields, metadata=metadata)

    def _template(self, task: TaskSpec) -> dict[str, Any]:
        """What every decoded prediction of ``task`` shares: a decode with the columns removed."""
        m = self.manifest
        raw = np.zeros((1, *m.output_shape(task.name)), np.float32)
        tensors = {k: v[0] for k, v in get_kind(task.kind).cpu_decode(raw).items()}
        sample = decode_task(task, tensors, identity(m.input.height, m.input.width), self.options)
        for c in self.columns[task.name]:
            _pop(sample, c.key)
        return sample

    def task_cells(self, task: TaskSpec, decoded: dict[str, Any]) -> list[Any]:
        """The cells of one decoded prediction of ``task``, in column order."""
        return [c.to_cell(_get(decoded, c.key)) for c in self.columns[task.name]]

    def table(self, rows: list[dict[str, Any]]) -> pa.Table:
        """Rows (dicts keyed by column name; missing = null) as a table of this schema."""
        return pa.Table.from_pylist(rows, schema=self.schema)

    def empty_row(self) -> dict[str, Any]:
        """Task columns all null (for rows with an error)."""
        return {c.name: None for cols in self.columns.values() for c in cols}


def prediction_from_row(row: dict[str, Any], schema: pa.Schema) -> dict[str, Any]:
    """A scored row back as the ``/v1`` prediction of its image: width, height and tasks.

    ``schema`` is the Parquet file's (its metadata holds what every row shares). A row with an
    error (a corrupt or unreadable image) has no prediction: it gives ``{"error": "..."}``, the
    body ``/v1`` answers for that image alone, so a loop over every row needs no special case.
    """
    if row.get("error") is not None:
        return {"error": row["error"]}
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    templates: dict[str, dict[str, Any]] = json.loads(meta["polyhead.template"])
    encoding = json.loads(meta["polyhead.options"])["encoding"]
    specs = {s["name"]: TaskSpec.model_validate(s) for s in json.loads(meta["polyhead.task_specs"])}
    tasks: dict[str, Any] = {}
    for name, template in templates.items():
        decoded = copy.deepcopy(template)
        for c in task_columns(specs[name], encoding):
            _set(decoded, c.key, c.from_cell(row[c.name], row))
        tasks[name] = decoded
    return {"width": row["width"], "height": row["height"], "tasks": tasks}
