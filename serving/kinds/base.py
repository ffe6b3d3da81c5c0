"""The task-kind protocol of the serving side: everything serving knows about one kind.

A kind (one module in ``serving/kinds/``, registered by name) owns:
- the contract: per pixel or per image, labels or a threshold required, fixed channels;
- its graph decoding: the decoded outputs ``polyhead export`` appends to the ONNX graph, each a
  sequence of ops (``serving.kinds.ops``), which are also its CPU decoder for versions
  exported without them;
- how its maps are laid back onto the image (nearest or bilinear, and any fix after resizing);
- the ``/v1`` JSON of one image's prediction and its encodings, with a bound on its size;
- its v2 decoded tensors, its scoring columns, and how the page draws it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from serving.codecs import encode_json, encode_png, encode_raw
from serving.kinds import ops
from serving.kinds.maps import Resample

if TYPE_CHECKING:
    from serving.manifest import TaskSpec

Maps = dict[str, np.ndarray]
Decoded = dict[str, Any]


#: Keys of a kind's ``view`` whose values name fields of its ``/v1`` prediction (``stats`` a list
#: of them), where the page reads what it draws: ``map`` a map, ``legend`` the classes present,
#: ``items`` ranked labels, scores or values, ``label`` the top label, ``present`` the labels over
#: the threshold, ``threshold``, ``share`` of pixels over it, ``units``.
VIEW_FIELDS = ("map", "legend", "items", "label", "present", "threshold", "share", "units", "stats")


@dataclass(frozen=True)
class DecodeOptions:
    """Per-request choices: map encoding, map resolution, how many labels."""

    # float16 by default: base64 of the array costs well under 1% of the model's time, where
    # PNG costs 10-25% (measured in bench/); PNG is one query parameter away.
    encoding: str = "float16"  # float16 | png | json
    # model: dense maps at the model's grid (the response does not grow with the photo);
    # original: at the image's own size, capped to ``max_side`` on the long side if given
    resolution: str = "model"
    max_side: int | None = None
    top_k: int = 5
    # maps' data as bytes instead of base64 text (batch scoring writes bytes to Parquet)
    binary: bool = False


@dataclass(frozen=True)
class DecodedTensor:
    """One decoded output of a kind: ``ops`` applied to the raw output.

    With ops, export appends it to the graph as output ``TASK.NAME``; without, it is the raw
    output itself. ``resample`` says how a dense map is resized (None: not a map).
    """

    name: str
    ops: tuple[str, ...]
    resample: Resample | None = None

    def __post_init__(self) -> None:
        ops.check(self.ops)

    @property
    def dtype(self) -> str:
        """NumPy dtype of the tensor."""
        return ops.dtype(self.ops)

    def row_shape(self, raw_row_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of one row, from the raw output's per-row shape."""
        return ops.row_shape(self.ops, raw_row_shape)


@dataclass(frozen=True)
class V2Output:
    """A v2 decoded output beyond the decoded tensors, computed per image from them."""

    suffix: str
    datatype: str
    shape: Callable[[TaskSpec], list[int]]  # per row
    fn: Callable[[Maps, TaskSpec], np.ndarray]


@dataclass(frozen=True)
class Column:
    """One scoring column: where its value sits in the decoded dict, and how it is stored.

    ``to_cell`` turns the decoded value into the cell; ``from_cell(cell, row)`` turns it back
    (``row`` holds the row's other cells, e.g. a map's shape).
    """

    name: str  # TASK.FIELD
    type: Any  # a pyarrow DataType
    key: tuple[str, ...]  # path into the task's decoded dict
    to_cell: Callable[[Any], Any] = lambda v: v
    from_cell: Callable[[Any, dict[str, Any]], Any] = lambda c, row: c


class Kind:
    """Base of every task kind. Subclasses set the class attributes and the three methods."""

    name: ClassVar[str]
    dense: ClassVar[bool]
    labelled: ClassVar[bool] = False  # the manifest must give labels
    thresholded: ClassVar[bool] = False  # has a threshold (0.5 unless the manifest says)
    channels: ClassVar[int | None] = None  # fixed number of channels
    max_channels: ClassVar[int | None] = None
    decoded: ClassVar[tuple[DecodedTensor, ...]] = ()
    #: How the page draws a prediction of this kind (see serving/api/static/page.js): ``draw``
    #: names the renderer; the keys in :data:`VIEW_FIELDS` name fields of the prediction; the
    #: rest are literals (``caption``, ``opacity``, ``colormap``, ``colour``, ``axes``).
    view: ClassVar[dict[str, Any]] = {}

    # ---- the contract ----------------------------------------------------------------------

    def validate(self, task: TaskSpec) -> None:
        """Raise ValueError when ``task`` does not fit this kind."""
        if self.channels is not None and task.channels != self.channels:
            raise ValueError(
                f"channels: a {self.name} task has {self.channels}, got {task.channels}"
            )
        if self.max_channels is not None and task.channels > self.max_channels:
            raise ValueError(
                f"channels: a {self.name} task has at most {self.max_channels}, got {task.channels}"
            )
        if self.labelled and not task.labels:
            raise ValueError(f"labels: required for a {self.name} task")

    def tensor(self, name: str) -> DecodedTensor:
        """The decoded tensor called ``name``."""
        for d in self.decoded:
            if d.name == name:
                return d
        known = ", ".join(d.name for d in self.decoded) or "none"
        raise ValueError(f"a {self.name} task has no decoded output {name!r}; it has: {known}")

    # ---- decoding ------------------------------------------------------------------------

    def cpu_decode(self, raw: np.ndarray) -> Maps:
        """Every decoded tensor of a batch of raw outputs, as the graph would compute it."""
        return {d.name: ops.apply(d.ops, raw) if d.ops else raw for d in self.decoded}

    def resampled(self, name: str, array: np.ndarray) -> np.ndarray:
        """A dense map after resizing (a kind may restore an invariant, e.g. unit length)."""
        return array

    def summarize(
        self, task: TaskSpec, maps: Maps, options: DecodeOptions, placement: dict[str, Any] | None
    ) -> Decoded:
        """The ``/v1`` prediction of one image (``maps`` are its decoded tensors, laid back)."""
        raise NotImplementedError

    def response_bytes(self, task: TaskSpec, size: tuple[int, int], options: DecodeOptions) -> int:
        """An upper bound on the size of :meth:`summarize`'s JSON with maps of ``size`` (H, W)."""
        raise NotImplementedError

    def columns(self, task: TaskSpec, encoding: str) -> list[Column]:
        """The scoring columns of a task of this kind."""
        raise NotImplementedError

    def v2_extra(self, task: TaskSpec) -> tuple[V2Output, ...]:
        """v2 decoded outputs besides the decoded tensors."""
        return ()


# ---- helpers kinds share ----------------------------------------------------------------------


def labels_of(task: TaskSpec) -> list[str]:
    """The task's labels, or the channel indices as text."""
    return task.labels or [str(i) for i in range(task.channels)]


def threshold_of(task: TaskSpec) -> float:
    """The task's threshold (0.5 when it has none)."""
    return task.threshold if task.threshold is not None else 0.5


def encode_map(
    array: np.ndarray,
    options: DecodeOptions,
    placement: dict[str, Any] | None,
    png: np.ndarray | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A map in the requested encoding, with its placement on the image.

    ``png`` is the integer image to write when the encoding is PNG (defaults to ``array``).
    """
    extra = {**extra, **(placement or {})}
    if options.encoding == "json":
        return encode_json(array, **extra)
    if options.encoding == "png":
        return encode_png(array if png is None else png, binary=options.binary, **extra)
    return encode_raw(array, binary=options.binary, **extra)


#: JSON bytes of one map's fields besides its data (encoding, dtype, shape, box, image, ...).
MAP_OVERHEAD = 400


def map_bytes(
    shape: tuple[int, ...],
    encoding: str,
    *,
    raw_itemsize: int,
    png_itemsize: int,
    integer: bool,
) -> int:
    """An upper bound on one encoded map's JSON bytes (base64 data, or JSON lists)."""
    elements = math.prod(shape)
    rows = shape[0] if shape else 1
    if encoding == "json":
        per = 4 if integer else 16  # "255," / a float rounded to 4 decimals, with its comma
        return elements * per + 2 * rows * (2 if len(shape) > 2 else 1) + MAP_OVERHEAD
    if encoding == "png":
        # PNG at compression level 1 may not compress: the raw bytes, a filter byte per row,
        # deflate's block headers and the PNG chunks
        raw = elements * png_itemsize + rows
        data = raw + raw // 1000 + 1024
    else:
        data = elements * raw_itemsize
    return 4 * math.ceil(data / 3) + MAP_OVERHEAD


def json_bytes(value: Any) -> int:
    """Bytes of a small value as JSON (labels, thresholds...)."""
    import orjson

    return len(orjson.dumps(value))


def map_columns(task: str, field: str, encoding: str, integer: bool) -> list[Column]:
    """A dense map's columns: its bytes (or flattened values), its shape and its box."""
    import base64

    import pyarrow as pa

    shape = Column(f"{task}.{field}_shape", pa.list_(pa.int32()), (field, "shape"))
    box = Column(
        f"{task}.{field}_box",
        pa.list_(pa.int32()),
        (field, "box"),
        to_cell=lambda b: [b["left"], b["top"], b["width"], b["height"]],
        from_cell=lambda c, row: dict(zip(("left", "top", "width", "height"), c, strict=True)),
    )
    image = Column(
        f"{task}.{field}_image",
        pa.list_(pa.int32()),
        (field, "image"),
        to_cell=lambda i: [i["width"], i["height"]],
        from_cell=lambda c, row: dict(zip(("width", "height"), c, strict=True)),
    )
    shape_name = shape.name
    if encoding == "json":
        data = Column(
            f"{task}.{field}",
            pa.list_(pa.int32() if integer else pa.float64()),
            (field, "data"),
            to_cell=lambda v: np.asarray(v).ravel().tolist(),
            from_cell=lambda c, row: np.asarray(c).reshape(row[shape_name]).tolist(),
        )
    else:
        data = Column(
            f"{task}.{field}",
            pa.binary(),
            (field, "data"),
            to_cell=lambda v: v if isinstance(v, bytes) else base64.b64decode(v),
            from_cell=lambda c, row: base64.b64encode(c).decode("ascii"),
        )
    return [data, shape, box, image]


def scalar_column(task: str, field: str, type_: Any) -> Column:
    """A column holding one field of the decoded dict as it is."""
    return Column(f"{task}.{field}", type_, (field,))
