"""The Open Inference Protocol's wire types, transport-neutral, and the checks every field gets.

A tensor is a name, a protocol datatype and a NumPy array (BYTES: an object array of ``bytes``).
Requests and responses are plain dataclasses; ``serving.api.v2.http_codec`` and
``serving.api.v2.grpc_codec`` turn them into and out of bytes. Every check raises a
``BadRequest`` that names the field, so no malformed request reaches the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.errors import BadRequest
from serving.manifest import version_number

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}
_BY_DTYPE = {v: k for k, v in DATATYPES.items() if k != "BYTES"}

#: Elements of one tensor at most: a forged shape cannot make the server allocate without bound.
MAX_ELEMENTS = 1 << 30
#: Dimensions of one tensor at most.
MAX_RANK = 16


@dataclass
class Tensor:
    """A named tensor: ``datatype`` is the protocol's name, ``array`` holds the values."""

    name: str
    datatype: str
    array: np.ndarray

    @property
    def shape(self) -> list[int]:
        """The shape as the protocol lists it."""
        return [int(d) for d in self.array.shape]


@dataclass
class RequestedOutput:
    """An output the client asked for; ``binary`` None means the request's default."""

    name: str
    binary: bool | None = None
    classification: Any = None  # the classification extension's top-k count, when asked


@dataclass
class InferRequest:
    """A v2 inference request."""

    model: str
    version: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    binary_default: bool = True  # outputs not marked otherwise go binary (gRPC: always)

    def binary(self, output: str) -> bool:
        """Whether ``output`` goes in binary form."""
        for o in self.outputs or []:
            if o.name == output and o.binary is not None:
                return o.binary
        return self.binary_default


@dataclass
class InferResponse:
    """A v2 inference response."""

    model: str
    version: str
    outputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a NumPy array (object arrays are BYTES)."""
    if array.dtype.kind == "O":
        return "BYTES"
    dt = array.dtype if array.dtype.itemsize == 1 else array.dtype.newbyteorder("<")
    try:
        return _BY_DTYPE[dt]
    except KeyError:
        raise ValueError(f"no Open Inference Protocol datatype for numpy {array.dtype}") from None


def check_name(what: str, name: Any) -> str:
    """A tensor name: a non-empty string."""
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{what}: 'name' must be a non-empty string, got {name!r}")
    return name


def check_datatype(name: str, datatype: Any) -> np.dtype[Any]:
    """The NumPy dtype of a protocol datatype; 400 for anything else."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(
            f"input {name!r}: 'datatype' must be one of {', '.join(DATATYPES)}, got {datatype!r}"
        )
    return DATATYPES[datatype]


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """A shape: a list of non-negative integers whose product fits ``MAX_ELEMENTS``.

    Each dimension is bounded too, so a zero-element shape cannot smuggle in huge ones.
    """
    if not isinstance(shape, list | tuple):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of integers, got {shape!r}")
    if len(shape) > MAX_RANK:
        raise BadRequest(
            f"input {name!r}: 'shape' has {len(shape)} dimensions (at most {MAX_RANK})"
        )
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadRequest(f"input {name!r}: 'shape' must be a list of integers, got {list(shape)!r}")
    if any(d < 0 for d in shape):
        raise BadRequest(f"input {name!r}: 'shape' {list(shape)} has a negative dimension")
    if any(d > MAX_ELEMENTS for d in shape) or math.prod(shape) > MAX_ELEMENTS:
        raise BadRequest(
            f"input {name!r}: 'shape' {list(shape)} is too large (at most {MAX_ELEMENTS} elements)"
        )
    return tuple(int(d) for d in shape)


def element_count(shape: tuple[int, ...]) -> int:
    """Elements of a checked shape (1 for a scalar)."""
    return math.prod(shape)


def parse_version(version: str | None) -> int | None:
    """A URL or gRPC version string as an int (None or empty: the newest)."""
    if version is None or version == "":
        return None
    number = version_number(version)
    if number is None:
        raise BadRequest(
            f"model version must be a positive integer in ASCII digits, got {version[:40]!r}"
        )
    return number


def check_model_name(name: str) -> str:
    """A model name from a URL or a gRPC field."""
    if not name or len(name) > 256:
        raise BadRequest("model name must be 1 to 256 characters")
    return name
