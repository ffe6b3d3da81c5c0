"""The model manifest: the contract between training (which writes it) and serving (which reads it).

``model_repo/NAME/VERSION/manifest.json`` says everything the server needs and nothing it must
guess: the input (size, normalisation, resize policy), every task (kind, ONNX output name,
labels, thresholds, units, and the decoded outputs the graph computes beside the raw one), the
metrics measured at export, and where the model came from. Only pydantic and the standard
library are imported at module level: both sides depend on this module. What each task kind
requires comes from its module in ``serving.kinds`` (imported when a task is validated).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

FORMAT_VERSION: Literal[1] = 1


def _kind(name: str) -> Any:
    """The registered serving kind (imported here, lazily: the kinds import this module)."""
    from serving.kinds import get_kind

    return get_kind(name)


def _positive_std(v: tuple[float, float, float]) -> tuple[float, float, float]:
    if min(v) <= 0:
        raise ValueError(f"every std must be > 0, got {list(v)}")
    return v


#: Per-channel normalisation std (every value > 0), shared with the training config.
Std = Annotated[tuple[float, float, float], AfterValidator(_positive_std)]
#: A task name: an identifier, since it names ONNX outputs, columns and config keys.
TaskName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
#: A model name: a repository folder and a part of URLs; lowercase, so that it names one folder
#: on a case-insensitive file system too.
MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]*$"


class ManifestError(ValueError):
    """A manifest is missing, unreadable or inconsistent; the message names the field."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InputSpec(_Frozen):
    """The model input and how raw RGB pixels become it: ``(pixel * scale - mean) / std``."""

    name: str = "image"
    dtype: Literal["float32"] = "float32"
    layout: Literal["NCHW"] = "NCHW"
    channels: Literal[3] = 3
    color: Literal["RGB"] = "RGB"
    height: int = Field(gt=0, le=8192)
    width: int = Field(gt=0, le=8192)
    scale: float = Field(1.0 / 255.0, gt=0.0)
    mean: tuple[float, float, float]
    std: Std
    resize: Literal["stretch", "letterbox", "center_crop"] = "stretch"


class DecodedOutput(_Frozen):
    """A decoded output the graph computes beside a task's raw output (see serving.kinds)."""

    name: str  # the kind's decoded tensor, e.g. "classes"
    output: str = Field(min_length=1)  # its ONNX output name, e.g. "semseg.classes"
    dtype: Literal["uint8", "float16", "float32"]
    shape: tuple[int, ...]  # without the batch axis


class TaskSpec(_Frozen):
    """One task head: its kind, ONNX output and how to decode it."""

    name: TaskName
    kind: str
    output: str = Field(min_length=1)
    channels: int = Field(ge=1)
    labels: list[str] | None = None
    threshold: float | None = Field(None, gt=0.0, lt=1.0)
    units: str | None = None
    value_range: tuple[float, float] | None = None
    primary_metric: str | None = None
    higher_is_better: bool | None = None
    # empty for versions exported before graph decoding: served through the CPU decoders
    decoded: list[DecodedOutput] = Field(default_factory=list)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        _kind(v)
        return v

    @field_validator("value_range")
    @classmethod
    def _ordered(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not v[0] < v[1]:
            raise ValueError(f"must be (low, high) with low < high, got {list(v)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _default_threshold(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("threshold") is not None:
            return data
        try:
            thresholded = _kind(data.get("kind", "")).thresholded
        except ValueError:  # reported by the kind's own validator
            return data
        return {**data, "threshold": 0.5} if thresholded else data

    @model_validator(mode="after")
    def _consistent(self) -> TaskSpec:
        kind = _kind(self.kind)
        kind.validate(self)
        names = [d.name for d in self.decoded]
        if len(set(names)) != len(names):
            raise ValueError(f"decoded: duplicate names {names}")
        for d in self.decoded:
            tensor = kind.tensor(d.name)
            if not tensor.ops:
                raise ValueError(f"decoded.{d.name}: is the raw output itself, not a graph output")
            if d.dtype != tensor.dtype:
                raise ValueError(f"decoded.{d.name}: dtype is {tensor.dtype}, got {d.dtype}")
        if self.labels is not None:
            if len(self.labels) != self.channels:
                raise ValueError(f"labels: {len(self.labels)} labels for {self.channels} channels")
            dupes = sorted({x for x in self.labels if self.labels.count(x) > 1})
            if dupes:
                raise ValueError(f"labels: duplicates {dupes}")
        return self

    @property
    def dense(self) -> bool:
        """True when the output is a per-pixel map at input resolution."""
        return bool(_kind(self.kind).dense)

    def decoded_output(self, name: str) -> str | None:
        """The ONNX output of the decoded tensor ``name``, or None when the graph lacks it."""
        for d in self.decoded:
            if d.name == name:
                return d.output
        return None


class Provenance(_Frozen):
    """Where a model version came from."""

    config: dict[str, Any]
    data: dict[str, Any]
    git_commit: str | None = None
    created_at: AwareDatetime
    onnx_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    opset: int = Field(ge=7)
    exporter: str
    framework: str
    polyhead_version: str


class Manifest(_Frozen):
    """Everything the server needs to load, run and decode one model version."""

    format_version: Literal[1] = FORMAT_VERSION
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    version: int = Field(ge=1)
    input: InputSpec
    tasks: list[TaskSpec] = Field(min_length=1)
    max_batch_size: int = Field(8, ge=1)
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    provenance: Provenance

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        names = [t.name for t in self.tasks]
        outputs = [t.output for t in self.tasks] + [d.output for t in self.tasks for d in t.decoded]
        for what, values in (("names", names), ("outputs", outputs)):
            dupes = sorted({v for v in values if values.count(v) > 1})
            if dupes:
                raise ValueError(f"tasks: duplicate task {what} {dupes}")
        if self.input.name in outputs:
            raise ValueError(f"tasks: an output is named like the input {self.input.name!r}")
        for t in self.tasks:
            raw = self.output_shape(t.name)
            for d in t.decoded:
                want = _kind(t.kind).tensor(d.name).row_shape(raw)
                if d.shape != want:
                    raise ValueError(
                        f"tasks.{t.name}.decoded.{d.name}: shape {list(d.shape)}, "
                        f"expected {list(want)}"
                    )
        unknown = sorted(set(self.metrics) - set(names))
        if unknown:
            raise ValueError(f"metrics: for unknown tasks {unknown}; tasks are {names}")
        for task, measured in self.metrics.items():
            bad = sorted(k for k, v in measured.items() if not math.isfinite(v))
            if bad:
                raise ValueError(f"metrics.{task}: non-finite values for {bad}")
        return self

    @property
    def task_names(self) -> list[str]:
        """Task names, in output order."""
        return [t.name for t in self.tasks]

    @property
    def output_names(self) -> list[str]:
        """ONNX output names, in task order."""
        return [t.output for t in self.tasks]

    def task(self, name: str) -> TaskSpec:
        """The task called ``name``; unknown names list the tasks."""
        for t in self.tasks:
            if t.name == name:
                return t
        raise ManifestError(f"unknown task {name!r}; tasks: {', '.join(self.task_names)}")

    @property
    def graph_outputs(self) -> list[tuple[str, str, tuple[int, ...]]]:
        """Every ONNX output (name, NumPy dtype, shape without batch axis): raw, then decoded."""
        raw = [(t.output, "float32", self.output_shape(t.name)) for t in self.tasks]
        return raw + [(d.output, d.dtype, d.shape) for t in self.tasks for d in t.decoded]

    def output_shape(self, task: str) -> tuple[int, ...]:
        """Output shape without the batch axis: (C, H, W) for dense tasks, (C,) otherwise."""
        t = self.task(task)
        if t.dense:
            return (t.channels, self.input.height, self.input.width)
        return (t.channels,)

    @classmethod
    def load(cls, path: str | Path) -> Manifest:
        """Read and validate a manifest.json; every problem is a ManifestError."""
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise ManifestError(f"manifest not found: {path}") from e
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ManifestError(f"manifest {path} is not readable JSON: {e}") from e
        return cls.parse(raw, source=str(path))

    @classmethod
    def parse(cls, raw: Any, source: str = "<manifest>") -> Manifest:
        """Validate a manifest already parsed from JSON."""
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            raise ManifestError(render_errors(e, f"invalid manifest {source}")) from e

    def dump(self, path: str | Path) -> None:
        """Write as indented JSON."""
        Path(path).write_text(self.model_dump_json(indent=2) + "\n")


def check_model_name(name: str) -> str:
    """``name`` if it can name a model (:data:`MODEL_NAME_PATTERN`); a ManifestError if not."""
    if re.fullmatch(MODEL_NAME_PATTERN, name) is None:
        raise ManifestError(
            f"invalid model name {name!r}: lowercase letters, digits, '_', '.' and '-', "
            f"starting with a letter or digit (e.g. {_suggest_name(name)!r})"
        )
    return name


def _suggest_name(name: str) -> str:
    suggestion = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-_.")
    return suggestion or "scenes"


def version_number(text: str) -> int | None:
    """A model version written in ASCII digits (``"3"``) as an int >= 1; None for anything else.

    One rule for version directories and for versions in URLs and gRPC fields: ``str.isdigit``
    alone also takes other scripts' digits and superscripts (``"١"``, ``"²"``).
    """
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    number = int(text)
    return number if number >= 1 else None


def render_errors(e: ValidationError, title: str) -> str:
    """One ``field.path: message`` line per validation error."""
    lines = [f"{title}:"]
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        msg = re.sub(r"^Value error, ", "", err["msg"])
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


__all__ = [
    "FORMAT_VERSION",
    "MODEL_NAME_PATTERN",
    "DecodedOutput",
    "InputSpec",
    "Manifest",
    "ManifestError",
    "Provenance",
    "TaskSpec",
    "check_model_name",
    "render_errors",
    "version_number",
]
