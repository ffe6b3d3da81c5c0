"""The binary form of tensors: HTTP's binary tensor extension and gRPC's raw contents.

Fixed-size datatypes are their little-endian element bytes, row-major. BYTES elements are each a
4-byte little-endian length followed by that many bytes. Decoding checks that the sizes agree
exactly, so a short, long or mis-framed buffer is a ``BadRequest`` naming the tensor.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from serving.api.v2.wire import DATATYPES, Tensor, check_datatype, check_shape, element_count
from serving.errors import BadRequest


def from_bytes(name: str, datatype: Any, shape: Any, raw: bytes | memoryview) -> np.ndarray:
    """A tensor from its binary form."""
    dtype = check_datatype(name, datatype)
    dims = check_shape(name, shape)
    count = element_count(dims)
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
    """``count`` length-prefixed elements that exactly fill ``raw``."""
    view = memoryview(raw)
    if count * 4 > len(view):
        raise BadRequest(
            f"input {name!r}: {count} BYTES elements need at least {count * 4} bytes, "
            f"got {len(view)}"
        )
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
    """The binary form of a tensor (any layout in memory: it is made row-major first)."""
    if tensor.datatype == "BYTES":
        return serialize_bytes(tensor.array)
    dtype = DATATYPES[tensor.datatype]
    return np.ascontiguousarray(tensor.array, dtype=dtype).tobytes()
