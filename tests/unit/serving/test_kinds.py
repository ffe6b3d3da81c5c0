"""The task-kind contract, parametrised over every registered kind (a new kind needs no new test).

For each kind: its CPU decoder gives the tensors it declares; dense maps come back at the
requested resolution with the box that lays them on the image; the size bound of a response
holds for every encoding; scored rows give back the /v1 prediction; v2 lists its outputs.
"""

from __future__ import annotations

import numpy as np
import orjson
import pyarrow.parquet as pq
import pytest

from serving.api.v2.outputs import output_plans
from serving.codecs import decode_array
from serving.decoding import decode_predictions, laid_back, parse_options, task_bytes
from serving.errors import BadRequest
from serving.geometry import Geometry
from serving.kinds import KINDS, DecodeOptions, get_kind
from serving.kinds.maps import target_size
from serving.manifest import InputSpec, Manifest, TaskSpec
from serving.scoring.columns import RowLayout, prediction_from_row

GRID = (16, 24)  # model input (H, W)
IMAGE = (300, 400)  # an uploaded image (H, W)
GEOMETRIES = {
    "stretch": Geometry(IMAGE, GRID, (0, 0)),
    "letterbox": Geometry(IMAGE, (16, 21), (0, 1)),
    "center_crop": Geometry(IMAGE, GRID, (0, 0), crop=(16, 0, 267, 400)),
}
OPTIONS = [
    DecodeOptions(),
    DecodeOptions(resolution="original"),
    DecodeOptions(resolution="original", max_side=100),
    DecodeOptions(encoding="png"),
    DecodeOptions(encoding="json", resolution="original", max_side=50),
]


def task_for(kind: str, name: str = "t") -> TaskSpec:
    k = get_kind(kind)
    channels = k.channels or 4
    labels = [f"label {i}" for i in range(channels)] if k.labelled else None
    return TaskSpec(name=name, kind=kind, output=name, channels=channels, labels=labels)


def manifest_for(tasks: list[TaskSpec]) -> Manifest:
    return Manifest.model_construct(
        name="m",
        version=1,
        input=InputSpec(height=GRID[0], width=GRID[1], mean=(0.5,) * 3, std=(0.2,) * 3),
        tasks=tasks,
        max_batch_size=8,
    )


def raw_output(task: TaskSpec, n: int, seed: int = 0) -> np.ndarray:
    shape = (n, task.channels, *GRID) if task.dense else (n, task.channels)
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 3


KIND_NAMES = sorted(KINDS)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_cpu_decoder_gives_the_declared_tensors(kind):
    task = task_for(kind)
    raw = raw_output(task, 3)
    tensors = get_kind(kind).cpu_decode(raw)
    assert set(tensors) == {d.name for d in get_kind(kind).decoded}
    for d in get_kind(kind).decoded:
        assert tensors[d.name].dtype == np.dtype(d.dtype)
        assert tensors[d.name].shape == (3, *d.row_shape(raw.shape[1:]))
        assert (d.resample is not None) == (task.dense and len(d.row_shape(raw.shape[1:])) >= 2)


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("policy", sorted(GEOMETRIES))
@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: f"{o.encoding}-{o.resolution}-{o.max_side}"
)
def test_maps_come_at_the_requested_size_with_their_box(kind, policy, options):
    task = task_for(kind)
    g = GEOMETRIES[policy]
    [prediction] = decode_predictions({"t": raw_output(task, 1)}, [task], [g], options)
    assert (prediction["width"], prediction["height"]) == (IMAGE[1], IMAGE[0])
    decoded = prediction["tasks"]["t"]
    assert decoded["kind"] == kind
    maps = [v for v in decoded.values() if isinstance(v, dict) and "encoding" in v]
    assert bool(maps) == task.dense
    want = target_size(g, options.resolution, options.max_side)
    if options.resolution == "model":
        assert want == g.resized
    elif options.max_side:
        assert max(want) <= options.max_side
    left, top, width, height = g.box
    for m in maps:
        assert tuple(m["shape"][:2]) == want
        assert m["box"] == {"left": left, "top": top, "width": width, "height": height}
        assert m["image"] == {"width": IMAGE[1], "height": IMAGE[0]}
        assert decode_array(m).shape == tuple(m["shape"])


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: f"{o.encoding}-{o.resolution}-{o.max_side}"
)
def test_the_size_bound_holds(kind, options):
    task = task_for(kind)
    for seed in range(3):  # random, and the worst case of each encoding's variance
        for g in GEOMETRIES.values():
            out = decode_predictions(
                {"t": raw_output(task, 1, seed) * 10**seed}, [task], [g], options
            )
            actual = len(orjson.dumps(out[0]["tasks"]["t"]))
            assert actual <= task_bytes(task, g, options)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_v2_lists_every_decoded_output(kind):
    task = task_for(kind, "x")
    plans = output_plans(manifest_for([task]))
    names = {f"x.{d.name}" for d in get_kind(kind).decoded}
    names |= {f"x.{e.suffix}" for e in get_kind(kind).v2_extra(task)}
    assert names | {"x", "x.json", "image.box", "image.size"} == set(plans)


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("encoding", ["float16", "png", "json"])
@pytest.mark.parametrize("resolution", ["model", "original"])
def test_scored_rows_give_back_the_v1_prediction(tmp_path, kind, encoding, resolution):
    """Rows from the scoring decode (maps as bytes) read back as the /v1 JSON (base64)."""
    task = task_for(kind, "t")
    m = manifest_for([task])
    scoring = DecodeOptions(encoding=encoding, resolution=resolution, top_k=2, binary=True)
    v1 = DecodeOptions(encoding=encoding, resolution=resolution, top_k=2)
    layout = RowLayout(m, [task], scoring)
    outputs = {"t": raw_output(task, 3)}
    geometries = list(GEOMETRIES.values())
    rows = []
    for i, p in enumerate(decode_predictions(outputs, [task], geometries, scoring)):
        row = {"id": f"r{i}", "path": "p", "model": "m", "version": 1, "error": None}
        row |= {"width": p["width"], "height": p["height"], **layout.empty_row()}
        cells = layout.task_cells(task, p["tasks"]["t"])
        row |= {c.name: cell for c, cell in zip(layout.columns["t"], cells, strict=True)}
        rows.append(row)
    pq.write_table(layout.table(rows), tmp_path / "t.parquet")
    table = pq.read_table(tmp_path / "t.parquet")
    want = decode_predictions(outputs, [task], geometries, v1)
    for row, expected in zip(table.to_pylist(), want, strict=True):
        assert prediction_from_row(row, table.schema) == expected


def test_an_error_row_has_null_task_columns_and_no_prediction():
    tasks = [task_for(k, f"t{i}") for i, k in enumerate(KIND_NAMES)]
    layout = RowLayout(manifest_for(tasks), tasks, DecodeOptions())
    row = {"id": "x", "path": "p", "model": "m", "version": 1, "error": "corrupt"}
    row |= {"width": None, "height": None, **layout.empty_row()}
    got = layout.table([row]).to_pylist()[0]
    assert all(got[c.name] is None for cols in layout.columns.values() for c in cols)
    assert prediction_from_row(got, layout.schema) == {"error": "corrupt"}  # as /v1 answers it


# ---- options --------------------------------------------------------------------------------


def test_options_default_to_the_model_grid_and_max_side_means_original():
    assert parse_options(None, None, None) == DecodeOptions()
    assert DecodeOptions().resolution == "model"
    assert parse_options(None, None, None, 512).resolution == "original"
    for bad in [("huge", None), ("model", 512), (None, 0)]:
        with pytest.raises(BadRequest):
            parse_options(None, bad[0], None, bad[1])


# ---- what each kind promises ----------------------------------------------------------------


def _decode(task, raw, g, **options):
    return decode_predictions({task.output: raw[None]}, [task], [g], DecodeOptions(**options))[0][
        "tasks"
    ][task.name]


@pytest.mark.parametrize("encoding", ["png", "float16", "json"])
def test_segmentation_laid_back_at_the_original_size_with_shares(encoding):
    task = TaskSpec(name="s", kind="segmentation", output="s", channels=3, labels=["a", "b", "c"])
    logits = np.zeros((3, 4, 4), np.float32)
    logits[2, :, :2] = 5.0  # left half class 2, right half class 0
    g = Geometry(original=(8, 8), resized=(4, 4), offset=(0, 0))
    out = _decode(task, logits, g, encoding=encoding, resolution="original")
    m = decode_array(out["map"])
    assert m.shape == (8, 8)
    assert (m[:, :4] == 2).all() and (m[:, 4:] == 0).all()
    assert {c["label"]: c["share"] for c in out["classes"]} == {"c": 0.5, "a": 0.5}
    assert decode_array(_decode(task, logits, g, encoding=encoding)["map"]).shape == (4, 4)


def test_depth_png_round_trips_within_quantisation():
    task = TaskSpec(name="d", kind="depth", output="d", channels=1, units="m")
    depth = np.linspace(1, 5, 16, dtype=np.float32).reshape(1, 4, 4)
    out = _decode(task, depth, Geometry((4, 4), (4, 4), (0, 0)), encoding="png")
    assert np.allclose(decode_array(out["map"]), depth[0], atol=3e-3)  # float16, then 16 bits
    assert out["min"] == pytest.approx(1.0) and out["max"] == pytest.approx(5.0)
    assert out["units"] == "m"


def test_letterbox_bars_are_dropped_from_dense_maps():
    task = TaskSpec(name="d", kind="depth", output="d", channels=1)
    maps = np.zeros((1, 8, 8), np.float32)
    maps[0, 2:6] = 3.0  # content rows 2..5, bars above and below
    g = Geometry(original=(4, 8), resized=(4, 8), offset=(2, 0))
    for resolution in ["model", "original"]:
        out = _decode(task, maps, g, resolution=resolution)
        assert decode_array(out["map"]).shape == (4, 8)
        assert out["min"] == pytest.approx(3.0)


def test_normals_are_unit_vectors_at_every_resolution():
    task = TaskSpec(name="n", kind="normals", output="n", channels=3)
    n = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
    g = Geometry((9, 7), (4, 4), (0, 0))
    for resolution in ["model", "original"]:
        v = decode_array(_decode(task, n, g, resolution=resolution)["map"]).astype(np.float32)
        assert np.allclose(np.linalg.norm(v, axis=-1), 1.0, atol=2e-3)


def test_classification_and_multilabel():
    g = Geometry((1, 1), (1, 1), (0, 0))
    cls = TaskSpec(name="c", kind="classification", output="c", channels=3, labels=["x", "y", "z"])
    c = _decode(cls, np.array([0.0, 3.0, 1.0], np.float32), g, top_k=2)
    assert c["label"] == "y" and [t["label"] for t in c["top_k"]] == ["y", "z"]
    assert sum(t["probability"] for t in _decode(cls, np.zeros(3, np.float32), g)["top_k"]) == (
        pytest.approx(1.0)
    )
    ml = TaskSpec(name="m", kind="multilabel", output="m", channels=3, labels=["x", "y", "z"])
    m = _decode(ml, np.array([-3.0, 2.0, 0.5], np.float32), g)
    assert [t["label"] for t in m["labels"]] == ["y", "z"]
    assert m["scores"]["x"] < 0.5 and m["threshold"] == 0.5


def test_laid_back_leaves_image_level_tasks_alone():
    task = task_for("classification")
    row = {"probabilities": np.array([0.1, 0.9], np.float32)}
    assert laid_back(task, row, GEOMETRIES["stretch"], DecodeOptions()) == (row, None)


@pytest.mark.parametrize("encoding", ["png", "float16", "json"])
def test_decode_array_gives_every_value_map_in_its_units_whatever_the_encoding(encoding):
    g = Geometry((4, 4), (4, 4), (0, 0))
    depth = np.linspace(1, 5, 16, dtype=np.float32).reshape(1, 4, 4)
    d = decode_array(
        _decode(
            TaskSpec(name="d", kind="depth", output="d", channels=1), depth, g, encoding=encoding
        )["map"]
    )
    assert np.allclose(d.astype(np.float32), depth[0], atol=3e-3)
    n = np.zeros((3, 4, 4), np.float32)
    n[0], n[2] = 0.6, 0.8
    got = decode_array(
        _decode(
            TaskSpec(name="n", kind="normals", output="n", channels=3), n, g, encoding=encoding
        )["map"]
    )
    assert np.allclose(got.astype(np.float32), np.moveaxis(n, 0, -1), atol=1e-2)  # 8 bits
    e = np.full((1, 4, 4), 2.0, np.float32)  # logit: p = 0.881
    p = decode_array(
        _decode(TaskSpec(name="e", kind="edges", output="e", channels=1), e, g, encoding=encoding)[
            "probability"
        ]
    )
    assert np.allclose(p.astype(np.float32), 1 / (1 + np.exp(-2.0)), atol=3e-3)
