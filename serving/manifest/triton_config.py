"""Triton's ``config.pbtxt`` as small frozen dataclasses: one generator, one parser.

The generator writes the config of an ONNX Runtime model from its manifest; the parser reads
back what we generate plus what a person may add by hand (comments, fields we do not model,
which are kept in ``extra`` as parsed values).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from serving.manifest import Manifest

DataType = str  # "TYPE_FP32", "TYPE_FP16", ...
InstanceKind = Literal["KIND_AUTO", "KIND_CPU", "KIND_GPU"]


@dataclass(frozen=True)
class TensorConfig:
    """One input or output: name, Triton data type, dims without the batch axis."""

    name: str
    data_type: DataType
    dims: tuple[int, ...]


@dataclass(frozen=True)
class DynamicBatching:
    """Triton's server-side batching of concurrent requests."""

    preferred_batch_size: tuple[int, ...] = ()
    max_queue_delay_microseconds: int = 0


@dataclass(frozen=True)
class InstanceGroup:
    """How many copies of the model run, and where."""

    count: int = 1
    kind: InstanceKind = "KIND_AUTO"


@dataclass(frozen=True)
class ModelConfig:
    """The parts of Triton's ModelConfig that polyhead writes and reads."""

    name: str
    platform: str
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    dynamic_batching: DynamicBatching | None = None
    instance_groups: tuple[InstanceGroup, ...] = ()
    # TensorRT on GPU instances ("FP16" or "FP32"); None: plain ONNX Runtime
    tensorrt_precision: str | None = None
    # batch sizes Triton runs zeros through before it marks the model ready
    warmup_batch_sizes: tuple[int, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


#: Triton data type of each NumPy dtype a graph output may have.
TRITON_DTYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "uint8": "TYPE_UINT8"}


def _preferred_sizes(max_batch_size: int) -> tuple[int, ...]:
    sizes, b = [], 2
    while b < max_batch_size:
        sizes.append(b)
        b *= 2
    return (*[s for s in sizes if s >= max_batch_size // 2], max_batch_size)


def config_from_manifest(
    m: Manifest,
    *,
    max_queue_delay_microseconds: int = 2000,
    instance_kind: InstanceKind = "KIND_AUTO",
    instance_count: int = 1,
    tensorrt_precision: str | None = None,
    warmup: bool = True,
) -> ModelConfig:
    """Triton config for the ONNX model a manifest describes.

    ``warmup`` makes Triton run zeros at batch 1 and the max batch size before it reports the
    model ready (first requests then do not pay for lazy initialisation); ``tensorrt_precision``
    asks ONNX Runtime's TensorRT accelerator on GPU instances (ignored on CPU instances).
    """
    if tensorrt_precision not in (None, "FP16", "FP32"):
        raise ValueError(f"tensorrt_precision must be FP16, FP32 or None, got {tensorrt_precision}")
    inp = m.input
    return ModelConfig(
        name=m.name,
        platform="onnxruntime_onnx",
        max_batch_size=m.max_batch_size,
        inputs=(TensorConfig(inp.name, "TYPE_FP32", (inp.channels, inp.height, inp.width)),),
        outputs=tuple(
            TensorConfig(name, TRITON_DTYPES[dtype], shape)
            for name, dtype, shape in m.graph_outputs
        ),
        dynamic_batching=DynamicBatching(
            preferred_batch_size=_preferred_sizes(m.max_batch_size),
            max_queue_delay_microseconds=max_queue_delay_microseconds,
        ),
        instance_groups=(InstanceGroup(instance_count, instance_kind),),
        tensorrt_precision=tensorrt_precision,
        warmup_batch_sizes=tuple(sorted({1, m.max_batch_size})) if warmup else (),
    )


def _tensors(key: str, tensors: tuple[TensorConfig, ...]) -> list[str]:
    lines = [f"{key} ["]
    for i, t in enumerate(tensors):
        lines += [
            "  {",
            f'    name: "{t.name}"',
            f"    data_type: {t.data_type}",
            f"    dims: [ {', '.join(str(d) for d in t.dims)} ]",
            "  }" + ("," if i < len(tensors) - 1 else ""),
        ]
    return [*lines, "]"]


def to_pbtxt(c: ModelConfig) -> str:
    """Triton text-protobuf for ``c``."""
    lines = [
        f'name: "{c.name}"',
        f'platform: "{c.platform}"',
        f"max_batch_size: {c.max_batch_size}",
        *_tensors("input", c.inputs),
        *_tensors("output", c.outputs),
    ]
    if c.dynamic_batching is not None:
        db = c.dynamic_batching
        lines.append("dynamic_batching {")
        if db.preferred_batch_size:
            sizes = ", ".join(str(s) for s in db.preferred_batch_size)
            lines.append(f"  preferred_batch_size: [ {sizes} ]")
        lines += [f"  max_queue_delay_microseconds: {db.max_queue_delay_microseconds}", "}"]
    if c.instance_groups:
        lines.append("instance_group [")
        for i, g in enumerate(c.instance_groups):
            sep = "," if i < len(c.instance_groups) - 1 else ""
            lines += ["  {", f"    count: {g.count}", f"    kind: {g.kind}", "  }" + sep]
        lines.append("]")
    if c.tensorrt_precision is not None:
        lines += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "tensorrt"',
            f'        parameters {{ key: "precision_mode" value: "{c.tensorrt_precision}" }}',
            '        parameters { key: "max_workspace_size_bytes" value: "1073741824" }',
            "      }",
            "    ]",
            "  }",
            "}",
        ]
    if c.warmup_batch_sizes and c.inputs:
        lines.append("model_warmup [")
        for i, b in enumerate(c.warmup_batch_sizes):
            sep = "," if i < len(c.warmup_batch_sizes) - 1 else ""
            lines += ["  {", f'    name: "zeros_batch_{b}"', f"    batch_size: {b}"]
            for t in c.inputs:
                dims = ", ".join(str(d) for d in t.dims)
                lines += [
                    "    inputs {",
                    f'      key: "{t.name}"',
                    f"      value: {{ data_type: {t.data_type} dims: [ {dims} ] zero_data: true }}",
                    "    }",
                ]
            lines.append("  }" + sep)
        lines.append("]")
    return "\n".join(lines) + "\n"


# ---- parsing -------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>[ \t\r,;]+)|(?P<nl>\n)|(?P<comment>\#[^\n]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
    |(?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
    |(?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
    |(?P<punct>[{}\[\]:<>])""",
    re.VERBOSE,
)


class PbtxtError(ValueError):
    """Malformed text protobuf; the message has the line number."""


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens, pos, line = [], 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PbtxtError(f"line {line}: unexpected character {text[pos]!r}")
        kind = m.lastgroup
        assert kind is not None
        if kind == "nl":
            line += 1
        elif kind not in ("ws", "comment"):
            tokens.append((kind, m.group(), line))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            last = self.tokens[-1][2] if self.tokens else 1
            raise PbtxtError(f"line {last}: unexpected end of text, expected {value or 'a value'}")
        if value is not None and tok[1] != value:
            raise PbtxtError(f"line {tok[2]}: expected {value!r}, got {tok[1]!r}")
        self.i += 1
        return tok

    def message(self, close: str | None) -> dict[str, list[Any]]:
        fields: dict[str, list[Any]] = {}
        while True:
            tok = self.peek()
            if tok is None:
                if close is not None:
                    self.take(close)
                return fields
            if close is not None and tok[1] == close:
                self.take()
                return fields
            kind, name, line = self.take()
            if kind != "ident":
                raise PbtxtError(f"line {line}: expected a field name, got {name!r}")
            nxt = self.peek()
            if nxt is not None and nxt[1] == ":":
                self.take()
                nxt = self.peek()
            if nxt is not None and nxt[1] == "[":
                self.take()
                values = []
                while (p := self.peek()) is not None and p[1] != "]":
                    values.append(self.value())
                self.take("]")
                fields.setdefault(name, []).extend(values)
            else:
                fields.setdefault(name, []).append(self.value())

    def value(self) -> Any:
        kind, text, line = self.take()
        if text in ("{", "<"):
            return self.message("}" if text == "{" else ">")
        if kind == "string":
            return bytes(text[1:-1], "utf-8").decode("unicode_escape")
        if kind == "number":
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "ident":
            return {"true": True, "false": False}.get(text, text)
        raise PbtxtError(f"line {line}: unexpected {text!r}")


def _one(fields: dict[str, list[Any]], key: str, default: Any = None) -> Any:
    values = fields.get(key)
    return values[-1] if values else default


def _tensor(fields: dict[str, list[Any]]) -> TensorConfig:
    return TensorConfig(
        name=str(_one(fields, "name", "")),
        data_type=str(_one(fields, "data_type", "TYPE_INVALID")),
        dims=tuple(int(d) for d in fields.get("dims", [])),
    )


_KNOWN = {"name", "platform", "backend", "max_batch_size", "input", "output"}
_KNOWN |= {"dynamic_batching", "instance_group", "model_warmup"}


def _tensorrt(fields: dict[str, list[Any]]) -> str | None:
    """The TensorRT precision of a config's GPU accelerators, if it asks for TensorRT."""
    for opt in fields.get("optimization", []):
        for acc in opt.get("execution_accelerators", []) if isinstance(opt, dict) else []:
            for gpu in acc.get("gpu_execution_accelerator", []) if isinstance(acc, dict) else []:
                if isinstance(gpu, dict) and _one(gpu, "name") == "tensorrt":
                    params = {_one(p, "key"): _one(p, "value") for p in gpu.get("parameters", [])}
                    return str(params.get("precision_mode", "FP32"))
    return None


def parse_pbtxt(text: str) -> ModelConfig:
    """Parse Triton text protobuf into a ModelConfig (unmodelled fields go to ``extra``)."""
    fields = _Parser(text).message(None)
    db_fields = _one(fields, "dynamic_batching")
    dynamic = None
    if isinstance(db_fields, dict):
        dynamic = DynamicBatching(
            preferred_batch_size=tuple(int(s) for s in db_fields.get("preferred_batch_size", [])),
            max_queue_delay_microseconds=int(_one(db_fields, "max_queue_delay_microseconds", 0)),
        )
    groups = tuple(
        InstanceGroup(count=int(_one(g, "count", 1)), kind=_one(g, "kind", "KIND_AUTO"))
        for g in fields.get("instance_group", [])
    )
    return ModelConfig(
        name=str(_one(fields, "name", "")),
        platform=str(_one(fields, "platform", _one(fields, "backend", ""))),
        max_batch_size=int(_one(fields, "max_batch_size", 0)),
        inputs=tuple(_tensor(t) for t in fields.get("input", [])),
        outputs=tuple(_tensor(t) for t in fields.get("output", [])),
        dynamic_batching=dynamic,
        instance_groups=groups,
        tensorrt_precision=_tensorrt(fields),
        warmup_batch_sizes=tuple(
            int(_one(w, "batch_size", 1)) for w in fields.get("model_warmup", [])
        ),
        extra={k: v for k, v in fields.items() if k not in _KNOWN},
    )


def load_config(path: str | Path) -> ModelConfig:
    """Read and parse a config.pbtxt file."""
    path = Path(path)
    try:
        return parse_pbtxt(path.read_text())
    except PbtxtError as e:
        raise PbtxtError(f"{path}: {e}") from e
