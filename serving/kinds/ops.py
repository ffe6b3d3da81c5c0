"""The decoding ops a task kind's decoded outputs are built from, as NumPy (the CPU decoders).

A decoded output is a short sequence of these ops applied to a task's raw output (batch axis
first, then channels). ``polyhead export`` appends the same sequence to the ONNX graph
(``training.graph_decoding`` maps every op to ONNX nodes), so a model version either carries
its decoded outputs in the graph or gets them here, from its raw outputs; a test checks that
both agree. Adding an op means adding it here and there.

| op | NumPy / ONNX | shape (per row) |
|---|---|---|
| ``argmax`` | index of the largest channel, as uint8 / ArgMax + Cast | (C,H,W) -> (H,W) |
| ``sigmoid`` | 1 / (1 + e^-x) / Sigmoid | same |
| ``softmax`` | over channels / Softmax(axis=1) | same |
| ``l2_normalize`` | x / max(‖x‖ over channels, 1e-6) / ReduceL2, Max, Div | same |
| ``squeeze_channel`` | drop a channel axis of size 1 / Squeeze | (1,H,W) -> (H,W) |
| ``channels_last`` | move channels last / Transpose | (C,H,W) -> (H,W,C) |
| ``float16`` | cast / Cast | same |
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: Smallest norm ``l2_normalize`` divides by (a zero vector stays zero).
L2_EPS = 1e-6


def _argmax(x: np.ndarray) -> np.ndarray:
    return x.argmax(axis=1).astype(np.uint8)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(x.dtype, copy=False)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.square(x).sum(axis=1, keepdims=True))
    return (x / np.maximum(norm, np.asarray(L2_EPS, x.dtype))).astype(x.dtype, copy=False)


def _squeeze_channel(x: np.ndarray) -> np.ndarray:
    if x.shape[1] != 1:
        raise ValueError(f"squeeze_channel needs one channel, got shape {x.shape}")
    return x[:, 0]


def _channels_last(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, 1, -1))


def _float16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16)


#: op name -> NumPy implementation on a batch (axis 0 is the batch, axis 1 the channels).
NUMPY: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "argmax": _argmax,
    "sigmoid": _sigmoid,
    "softmax": _softmax,
    "l2_normalize": _l2_normalize,
    "squeeze_channel": _squeeze_channel,
    "channels_last": _channels_last,
    "float16": _float16,
}
OPS: tuple[str, ...] = tuple(NUMPY)


def check(ops: Sequence[str]) -> None:
    """Fail unless every op is known."""
    unknown = [op for op in ops if op not in NUMPY]
    if unknown:
        raise ValueError(f"unknown decoding ops {unknown}; known: {', '.join(OPS)}")


def apply(ops: Sequence[str], raw: np.ndarray) -> np.ndarray:
    """``raw`` (a batch of one task's raw output, float32) decoded by ``ops`` in order."""
    x = np.asarray(raw, dtype=np.float32)
    for op in ops:
        x = NUMPY[op](x)
    return x


def row_shape(ops: Sequence[str], raw_row_shape: Sequence[int]) -> tuple[int, ...]:
    """The per-row shape after ``ops``, from the raw output's per-row shape (C, ...)."""
    shape = list(raw_row_shape)
    for op in ops:
        if op in ("argmax", "squeeze_channel"):
            if op == "squeeze_channel" and shape[0] != 1:
                raise ValueError(f"squeeze_channel needs one channel, got {shape[0]}")
            shape = shape[1:]
        elif op == "channels_last":
            shape = [*shape[1:], shape[0]]
    return tuple(shape)


def dtype(ops: Sequence[str]) -> str:
    """The NumPy dtype name of the result of ``ops`` (raw outputs are float32)."""
    out = "float32"
    for op in ops:
        if op == "argmax":
            out = "uint8"
        elif op == "float16":
            out = "float16"
    return out
