"""Open Inference Protocol (KServe v2) tensors: datatypes, and their JSON and binary forms.

One module for both transports: HTTP's JSON ``data`` lists and binary tensor extension, and
gRPC's ``raw_input_contents`` / typed ``contents``. BYTES tensors are numpy object arrays of
``bytes``; their binary form is each element as a 4-byte little-endian length then the bytes.
Every malformed tensor is a ``BadRequest`` naming the tensor and what is wrong.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.errors import BadRequest

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
_BY_KIND = {v.newbyteorder("<") if v.kind != "O" else v: k for k, v in DATATYPES.items()}

# Elements of a tensor; a bound so a forged shape cannot make us allocate without limit.
MAX_ELEMENTS = 1 << 30


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


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (object arrays are BYTES)."""
    if array.dtype.kind == "O":
        return "BYTES"
    dt = array.dtype if array.dtype.itemsize == 1 else array.dtype.newbyteorder("<")
    try:
        return _BY_KIND[dt]
    except KeyError:
        raise ValueError(f"no Open Inference Protocol datatype for numpy {array.dtype}") from None


def check_datatype(name: str, datatype: Any) -> np.dtype[Any]:
    """The numpy dtype of a protocol datatype; 400 for anything else."""
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise BadRequest(
            f"input {name!r}: unknown datatype {datatype!r}; known: {', '.join(DATATYPES)}"
        )
    return DATATYPES[datatype]


def check_shape(name: str, shape: Any) -> tuple[int, ...]:
    """A validated shape: a list of non-negative integers with a bounded element count."""
    if not isinstance(shape, list | tuple) or not all(
        isinstance(d, int) and not isinstance(d, bool) for d in shape
    ):
        raise BadRequest(f"input {name!r}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise BadRequest(f"input {name!r}: shape {list(shape)} has a negative dimension")
    if math.prod(shape) > MAX_ELEMENTS:
        raise BadRequest(f"input {name!r}: shape {list(shape)} is too large")
    return tuple(shape)


def _flatten(data: Any) -> list[Any]:
    """JSON ``data`` may be flat or nested row-major; both mean the same elements."""
    if not isinstance(data, list):
        return [data]
    if not any(isinstance(d, list) for d in data):
        return data
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def from_json(name: str, datatype: Any, shape: Any, data: Any) -> np.ndarray:
    """A tensor from the JSON ``data`` of an HTTP request."""
    dtype = check_datatype(name, datatype)
    dims = check_shape(name, list(shape))
    flat = _flatten(data)
    count = math.prod(dims)
    if len(flat) != count:
        raise BadRequest(
            f"input {name!r}: shape {list(dims)} needs {count} elements, data has {len(flat)}"
        )
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        for i, v in enumerate(flat):
            if not isinstance(v, str):
                raise BadRequest(
                    f"input {name!r}: BYTES data must be strings, got {type(v).__name__}"
                )
            out[i] = v.encode()
        return out.reshape(dims)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise BadRequest(f"input {name!r}: BOOL data must be true/false")
    elif dtype.kind in "iu":
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            raise BadRequest(f"input {name!r}: {datatype} data must be integers")
    elif not all(isinstance(v, int | float) and not isinstance(v, bool) for v in flat):
        raise BadRequest(f"input {name!r}: {datatype} data must be numbers")
    try:
        return np.asarray(flat, dtype=dtype).reshape(dims)
    except (OverflowError, ValueError) as e:
        raise BadRequest(f"input {name!r}: values do not fit {datatype}: {e}") from e


def from_bytes(name: str, datatype: Any, shape: Any, raw: bytes | memoryview) -> np.ndarray:
    """A tensor from its binary form (HTTP binary extension, gRPC raw contents)."""
    dtype = check_datatype(name, datatype)
    dims = check_shape(name, list(shape))
    count = math.prod(dims)
    if datatype == "BYTES":
        return deserialize_bytes(name, raw, count).reshape(dims)
    need = count * dtype.itemsize
    if len(raw) != need:
        raise BadRequest(
            f"input {name!r}: {datatype} shape {list(dims)} needs {need} bytes, got {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype).reshape(dims)
    if datatype == "BOOL" and array.size and (array.view(np.uint8) > 1).any():
        raise BadRequest(f"input {name!r}: BOOL bytes must be 0 or 1")
    return array


def deserialize_bytes(name: str, raw: bytes | memoryview, count: int) -> np.ndarray:
    """``count`` length-prefixed elements, exactly filling ``raw``."""
    view = memoryview(raw)
    out = np.empty(count, dtype=object)
    pos = 0
    for i in range(count):
        if pos + 4 > len(view):
            raise BadRequest(f"input {name!r}: BYTES data ends inside element {i} of {count}")
        (size,) = struct.unpack_from("<I", view, pos)
        pos += 4
        if pos + size > len(view):
            raise BadRequest(
                f"input {name!r}: BYTES element {i} declares {size} bytes, "
                f"only {len(view) - pos} remain"
            )
        out[i] = bytes(view[pos : pos + size])
        pos += size
    if pos != len(view):
        raise BadRequest(
            f"input {name!r}: {len(view) - pos} bytes left over after {count} BYTES elements"
        )
    return out


def serialize_bytes(array: np.ndarray) -> bytes:
    """BYTES elements, each as a 4-byte little-endian length then the bytes."""
    parts = []
    for v in array.ravel():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def to_bytes(tensor: Tensor) -> bytes:
    """The binary form of an output tensor."""
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.array)
    dtype = DATATYPES[tensor.datatype]
    return np.ascontiguousarray(tensor.array, dtype=dtype).tobytes()


def to_json_data(tensor: Tensor) -> list[Any]:
    """The flat JSON ``data`` list of an output tensor (BYTES as UTF-8 strings)."""
    flat = tensor.array.ravel()
    if tensor.datatype == "BYTES":
        return [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in flat]
    if tensor.datatype in ("FP16", "FP32", "FP64"):
        return flat.astype(np.float64).tolist()
    return flat.tolist()
