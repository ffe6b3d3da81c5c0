"""Scored rows hold the /v1 decoded prediction of every task kind, and give it back exactly."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.manifest import TASK_KINDS, InputSpec, Manifest, TaskSpec
from serving.postprocess import DecodeOptions
from serving.preprocess import Geometry
from serving.scoring.columns import RowLayout, prediction_from_row
from serving.service import decode_predictions

TASKS = [
    TaskSpec(name="seg", kind="segmentation", output="seg", channels=3, labels=["a", "b", "c"]),
    TaskSpec(name="dep", kind="depth", output="dep", channels=1, units="m"),
    TaskSpec(name="nor", kind="normals", output="nor", channels=3),
    TaskSpec(name="edg", kind="edges", output="edg", channels=1),
    TaskSpec(name="sal", kind="saliency", output="sal", channels=1, threshold=0.3),
    TaskSpec(
        name="cls", kind="classification", output="cls", channels=4, labels=["p", "q", "r", "s"]
    ),
    TaskSpec(name="mul", kind="multilabel", output="mul", channels=2, labels=["x y", "z"]),
    TaskSpec(name="reg", kind="regression", output="reg", channels=2, units="kg"),
]


def manifest() -> Manifest:
    return Manifest.model_construct(
        name="m",
        version=3,
        input=InputSpec(height=16, width=16, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2)),
        tasks=TASKS,
        max_batch_size=8,
    )


def test_every_task_kind_has_a_layout():
    assert {t.kind for t in TASKS} == set(TASK_KINDS)


@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("encoding", ["float16", "png", "json"])
def test_rows_written_to_parquet_give_back_the_v1_predictions(tmp_path, encoding, binary):
    """Rows from the scoring decode (maps as bytes) read back as the /v1 JSON (base64)."""
    m = manifest()
    options = DecodeOptions(encoding=encoding, top_k=2, binary=binary)
    layout = RowLayout(m, TASKS, options)
    rng = np.random.default_rng(0)
    outputs = {
        t.name: rng.standard_normal((2, *m.output_shape(t.name))).astype(np.float32) for t in TASKS
    }
    outputs["dep"] = np.abs(outputs["dep"]) + 1
    geometries = [Geometry((16, 16), (16, 16), (0, 0)), Geometry((30, 20), (16, 16), (0, 0))]
    predictions = decode_predictions(outputs, TASKS, geometries, options)
    as_v1 = decode_predictions(
        outputs, TASKS, geometries, DecodeOptions(encoding=encoding, top_k=2)
    )

    rows = []
    for i, p in enumerate(predictions):
        row = {
            "id": f"r{i}",
            "path": "p",
            "model": "m",
            "version": 3,
            "error": None,
            "width": p["width"],
            "height": p["height"],
            **layout.empty_row(),
        }
        for t in TASKS:
            for column, cell in zip(
                layout.columns[t.name], layout.task_cells(t, p["tasks"][t.name]), strict=True
            ):
                row[column.name] = cell
        rows.append(row)
    pq.write_table(layout.table(rows), tmp_path / "t.parquet")

    table = pq.read_table(tmp_path / "t.parquet")
    assert table.schema.field("cls.label").type == pa.string()
    assert table.schema.field("mul.scores").type.num_fields == 2
    for row, want in zip(table.to_pylist(), as_v1, strict=True):
        assert prediction_from_row(row, table.schema) == want


def test_an_error_row_has_null_task_columns():
    layout = RowLayout(manifest(), TASKS, DecodeOptions())
    row = {
        "id": "x",
        "path": "p",
        "model": "m",
        "version": 3,
        "error": "corrupt",
        "width": None,
        "height": None,
        **layout.empty_row(),
    }
    assert layout.table([row]).to_pylist()[0]["seg.map"] is None
