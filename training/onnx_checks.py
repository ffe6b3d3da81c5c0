"""Checks of an exported ONNX file that need only onnx and ONNX Runtime (no PyTorch).

- :func:`check_onnx`: the checker, one self-contained file, the input/output contract (raw
  outputs in task order, then the decoded outputs);
- :func:`check_decoded`: every decoded output of the graph equals the CPU decoder
  (``serving.kinds.ops.apply``) run on the graph's own raw output;
- :func:`check_same_raw`: two graphs give bit-identical raw outputs (an upgraded version
  against the one it came from).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from serving.kinds import get_kind, ops
from serving.manifest import TaskSpec
from training.errors import ExportError

if TYPE_CHECKING:
    from onnxruntime import InferenceSession

INPUT_NAME = "image"

#: Largest |graph - CPU decoder| of a float decoded output: one float16 step near 1 is 2^-11,
#: and the graph's kernels may round the float32 value before the cast the other way.
DECODED_ATOL = 1e-3


def check_onnx(
    path: Path, names: Sequence[str], size: tuple[int, int], decoded: Sequence[str] = ()
) -> None:
    """Checker, single file, and the contract: input ``image``, outputs ``names`` + ``decoded``."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ExportError(f"ONNX checker rejected the export: {e}") from e
    side_files = [
        p.name for p in path.parent.iterdir() if p.name != path.name and not p.name.startswith(".")
    ]
    if side_files:
        raise ExportError(f"export wrote side files {side_files}; expected one self-contained file")
    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != [INPUT_NAME]:
        raise ExportError(f"ONNX inputs are {inputs}, expected [{INPUT_NAME!r}]")
    expected = [*names, *decoded]
    if outputs != expected:
        raise ExportError(
            f"ONNX outputs are {outputs}, expected the tasks' raw outputs {list(names)}"
            + (f" then their decoded outputs {list(decoded)}" if decoded else "")
        )
    dims = graph.input[0].type.tensor_type.shape.dim
    shape = [d.dim_param or d.dim_value for d in dims]
    if not isinstance(shape[0], str) or shape[1:] != [3, *size]:
        raise ExportError(f"ONNX input shape {shape}, expected [batch, 3, {size[0]}, {size[1]}]")


@dataclass(frozen=True)
class Agreement:
    """How one decoded output of the graph compares with the CPU decoder."""

    values: int  # values compared
    # values not exactly equal; in a class map only where the two largest logits tie exactly
    differing: int
    max_abs_error: float  # largest |graph - CPU| among the values that must agree

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(
            self.values + other.values,
            self.differing + other.differing,
            max(self.max_abs_error, other.max_abs_error),
        )


def _session(path: Path) -> InferenceSession:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(session: InferenceSession, x: np.ndarray) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    out = session.run(names, {session.get_inputs()[0].name: x.astype(np.float32, copy=False)})
    return dict(zip(names, out, strict=True))


def check_decoded(
    path: Path,
    tasks: Sequence[TaskSpec],
    inputs: Iterable[np.ndarray],
    atol: float = DECODED_ATOL,
) -> dict[str, Agreement]:
    """Fail unless every decoded output equals the CPU decoder run on the graph's raw output.

    Class maps (uint8) must be identical except where the two largest logits are exactly
    equal; float outputs must agree within ``atol``. Dtypes and shapes must be the manifest's.

    Args:
        path: the ONNX file, with decoded outputs.
        tasks: the manifest's tasks, listing the decoded outputs.
        inputs: input batches (N, 3, H, W).
        atol: largest allowed absolute difference of a float output.

    Returns:
        The agreement of each decoded output, by ONNX output name.
    """
    session = _session(path)
    found: dict[str, Agreement] = {}
    for x in inputs:
        out = _run(session, x)
        for task in tasks:
            for d in task.decoded:
                tensor = get_kind(task.kind).tensor(d.name)
                missing = [n for n in (task.output, d.output) if n not in out]
                if missing:
                    raise ExportError(f"the graph has no outputs {missing}; it has {list(out)}")
                raw = out[task.output]
                want = ops.apply(tensor.ops, raw)
                got = out[d.output]
                expected = (np.dtype(d.dtype), (x.shape[0], *d.shape))
                for who, arr in (("graph", got), ("CPU decoder", want)):
                    if (arr.dtype, arr.shape) != expected:
                        raise ExportError(
                            f"decoded output {d.output!r}: the {who} gives {arr.dtype} "
                            f"{list(arr.shape)}, the manifest says {d.dtype} {list(expected[1])}"
                        )
                agreement = _compare(d.output, tensor.ops, raw, got, want, atol)
                found[d.output] = found[d.output] + agreement if d.output in found else agreement
    return found


def _ties(op_names: Sequence[str], raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Where the input of ``argmax`` has its two largest channels exactly equal."""
    if "argmax" not in op_names:
        return np.zeros(shape, bool)
    scores = ops.apply(op_names[: list(op_names).index("argmax")], raw)
    if scores.shape[1] < 2:
        return np.zeros(shape, bool)
    top = np.partition(scores, -2, axis=1)
    ties = top[:, -1] == top[:, -2]
    return ties if ties.shape == shape else np.zeros(shape, bool)


def _compare(
    output: str,
    op_names: Sequence[str],
    raw: np.ndarray,
    got: np.ndarray,
    want: np.ndarray,
    atol: float,
) -> Agreement:
    g, w = got.astype(np.float64), want.astype(np.float64)
    err = np.abs(g - w)
    both_nan = np.isnan(g) & np.isnan(w)
    err[both_nan] = 0.0
    if got.dtype == np.uint8:
        free = _ties(op_names, raw, got.shape)  # either index is right at an exact tie
        bad = (err != 0) & ~free
        limit = "identical class indices (except at exact ties)"
    else:
        free = np.zeros(got.shape, bool)
        bad = ~(err <= atol)
        limit = f"|graph - CPU| <= {atol}"
    if bad.any():
        raise ExportError(
            f"decoded output {output!r} disagrees with the CPU decoder at {int(bad.sum())} of "
            f"{got.size} values (needs {limit}; max abs error {float(err[~free].max()):.3g})"
        )
    return Agreement(
        values=int(got.size),
        differing=int((err != 0).sum()),
        max_abs_error=float(err[~free].max()) if (~free).any() else 0.0,
    )


def check_same_raw(
    original: Path, upgraded: Path, names: Sequence[str], inputs: Iterable[np.ndarray]
) -> dict[str, float]:
    """Fail unless both graphs give bit-identical raw outputs ``names`` on every input.

    Returns:
        The largest |upgraded - original| of each output (0.0 when identical).
    """
    before, after = _session(original), _session(upgraded)
    worst = dict.fromkeys(names, 0.0)
    for x in inputs:
        old, new = _run(before, x), _run(after, x)
        for n in names:
            a, b = old[n], new[n]
            if a.dtype != b.dtype or a.shape != b.shape or a.tobytes() != b.tobytes():
                diff = float(np.abs(a - b).max()) if a.shape == b.shape else float("inf")
                raise ExportError(
                    f"raw output {n!r} changed at batch {x.shape[0]}: {a.dtype} {list(a.shape)} "
                    f"before, {b.dtype} {list(b.shape)} after, max abs difference {diff:.3g}"
                )
            diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
            worst[n] = max(worst[n], float(np.nanmax(diff, initial=0.0)))
    return worst
