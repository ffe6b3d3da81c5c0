"""The Parquet layout of scored rows: the /v1 decoded predictions, flattened into typed columns.

Every row has ``id``, ``path``, ``model``, ``version``, ``error`` (null when the image scored),
``width`` and ``height`` (of the image), then, per task, one column per field of the /v1
decoded prediction that varies from image to image, named ``TASK.FIELD``:

| kind | columns |
|---|---|
| segmentation | ``classes`` (list of {index, label, share}), ``map``, ``map_shape`` |
| depth | ``min``, ``max``, ``mean``, ``map``, ``map_shape`` (+ ``map_value_min/max`` with PNG) |
| normals | ``map``, ``map_shape`` |
| edges, saliency | ``fraction_above_threshold``, ``probability``, ``probability_shape`` |
| classification | ``label``, ``probability``, ``top_k`` (list of {label, index, probability}) |
| multilabel | ``labels`` (list of {label, probability}), ``scores`` ({label: probability}) |
| regression | ``values`` |

Dense maps are the bytes the API would base64 (a PNG file, or little-endian float16 / uint8
values) with their shape, or, with the json encoding, the flattened values. What is the same for
every row (kind, units, thresholds, labels, each map's encoding and dtype) is stored once, in the
file's metadata (``polyhead.template``): :func:`prediction_from_row` puts a row back together
into exactly the JSON ``/v1`` returns.
"""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from serving.manifest import Manifest, TaskSpec
from serving.postprocess import DecodeOptions, decode
from serving.preprocess import Geometry

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

_F64 = pa.float64()
_LABEL_P = pa.list_(pa.struct([("label", pa.string()), ("probability", _F64)]))
_RANKED = pa.list_(
    pa.struct([("label", pa.string()), ("index", pa.int32()), ("probability", _F64)])
)
_CLASSES = pa.list_(pa.struct([("index", pa.int32()), ("label", pa.string()), ("share", _F64)]))


@dataclass(frozen=True)
class Column:
    """One task column: where its value sits in the decoded dict, and how it is stored."""

    name: str  # TASK.FIELD
    type: pa.DataType
    key: tuple[str, ...]  # path into the task's decoded dict
    to_cell: Callable[[Any], Any] = lambda v: v


def _map_columns(task: str, field: str, encoding: str, integer: bool) -> list[Column]:
    """A dense map: its bytes (or flattened values) and its shape."""
    shape = Column(f"{task}.{field}_shape", pa.list_(pa.int32()), (field, "shape"))
    if encoding == "json":
        values = Column(
            f"{task}.{field}",
            pa.list_(pa.int32() if integer else _F64),
            (field, "data"),
            to_cell=lambda v: np.asarray(v).ravel().tolist(),
        )
        return [values, shape]
    data = Column(
        f"{task}.{field}",
        pa.binary(),
        (field, "data"),
        to_cell=lambda v: v if isinstance(v, bytes) else base64.b64decode(v),
    )
    return [data, shape]


def _scalar(task: str, field: str, type_: pa.DataType) -> Column:
    return Column(f"{task}.{field}", type_, (field,))


def task_columns(task: TaskSpec, encoding: str) -> list[Column]:
    """The columns of one task, by its kind."""
    n = task.name
    if task.kind == "segmentation":
        return [
            Column(f"{n}.classes", _CLASSES, ("classes",)),
            *_map_columns(n, "map", encoding, True),
        ]
    if task.kind == "depth":
        cols = [_scalar(n, s, _F64) for s in ("min", "max", "mean")]
        cols += _map_columns(n, "map", encoding, False)
        if encoding == "png":
            cols += [
                Column(f"{n}.map_value_min", _F64, ("map", "value_min")),
                Column(f"{n}.map_value_max", _F64, ("map", "value_max")),
            ]
        return cols
    if task.kind == "normals":
        return _map_columns(n, "map", encoding, False)
    if task.kind in ("edges", "saliency"):
        return [
            _scalar(n, "fraction_above_threshold", _F64),
            *_map_columns(n, "probability", encoding, False),
        ]
    if task.kind == "classification":
        return [
            _scalar(n, "label", pa.string()),
            _scalar(n, "probability", _F64),
            Column(f"{n}.top_k", _RANKED, ("top_k",)),
        ]
    if task.kind == "multilabel":
        labels = task.labels or [str(i) for i in range(task.channels)]
        return [
            Column(f"{n}.labels", _LABEL_P, ("labels",)),
            Column(f"{n}.scores", pa.struct([(label, _F64) for label in labels]), ("scores",)),
        ]
    if task.kind == "regression":
        return [_scalar(n, "values", pa.list_(_F64))]
    raise ValueError(f"no column layout for task kind {task.kind!r}")


def _get(d: dict[str, Any], key: tuple[str, ...]) -> Any:
    for k in key:
        d = d[k]
    return d


def _pop(d: dict[str, Any], key: tuple[str, ...]) -> None:
    for k in key[:-1]:
        d = d[k]
    d.pop(key[-1], None)


class RowLayout:
    """The schema of one run (model, tasks, encoding) and the row <-> prediction mapping."""

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
            "polyhead.options": json.dumps(
                {
                    "encoding": options.encoding,
                    "resolution": options.resolution,
                    "top_k": options.top_k,
                }
            ),
            "polyhead.template": json.dumps(self.templates),
        }
        self.schema = pa.schema(fields, metadata=metadata)

    def _template(self, task: TaskSpec) -> dict[str, Any]:
        """What every decoded prediction of ``task`` shares: a decode with the columns removed."""
        shape = self.manifest.output_shape(task.name)
        hw = (self.manifest.input.height, self.manifest.input.width)
        sample = decode(np.zeros(shape, np.float32), task, Geometry(hw, hw, (0, 0)), self.options)
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

    ``schema`` is the Parquet file's (its metadata holds what every row shares).
    """
    meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    templates: dict[str, dict[str, Any]] = json.loads(meta["polyhead.template"])
    options = json.loads(meta["polyhead.options"])
    tasks: dict[str, Any] = {}
    for name, template in templates.items():
        decoded = copy.deepcopy(template)
        prefix = f"{name}."
        # the map's shape first: a json-encoded map is reshaped with it
        names = sorted(
            (f for f in schema.names if f.startswith(prefix)),
            key=lambda f: not f.endswith("_shape"),
        )
        for column in names:
            field = column[len(prefix) :]
            if field.endswith("_shape"):
                decoded.setdefault(field[: -len("_shape")], {})["shape"] = row[column]
            elif field in ("map", "probability") and isinstance(decoded.get(field), dict):
                parent = decoded[field]
                value = row[column]
                if options["encoding"] == "json":
                    parent["data"] = np.asarray(value).reshape(parent["shape"]).tolist()
                else:
                    parent["data"] = base64.b64encode(value).decode("ascii")
            elif field.startswith("map_value_"):
                decoded["map"][field[len("map_") :]] = row[column]
            else:
                decoded[field] = row[column]
        tasks[name] = decoded
    return {"width": row["width"], "height": row["height"], "tasks": tasks}
