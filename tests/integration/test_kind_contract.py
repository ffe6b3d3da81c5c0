"""Every registered task kind on every route, against a real gateway, with and without graph decoding.

A model with one task of every registered kind (``tests/toy_kind.py`` adds one that nothing
else in the code base knows) is published twice with the same weights: version 1 as exported
before graph decoding (the CPU decoders serve it), version 2 with the decoded outputs in the
graph. For each kind: both versions give the same /v1 prediction; v2's decoded outputs over
HTTP (JSON and binary) and gRPC equal /v1's maps; scored rows give back /v1's predictions; and
a response over the output budget is a 413 (gRPC RESOURCE_EXHAUSTED, an error row in scoring).
"""

from __future__ import annotations

import io
import os

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image
from tritonclient.utils import InferenceServerException

import tests.toy_kind  # noqa: F401 - registers the toy kind
from serving.api.app import create_app
from serving.codecs import decode_array
from serving.kinds import KINDS, get_kind
from serving.scoring import ScoreJob, ScoreOptions, prediction_from_row, score
from serving.settings import Settings
from tests.gateway import gateway_thread
from tests.onnx_models import task_of, write_version

KIND_NAMES = sorted(KINDS)
HW = (48, 64)
TASKS = [task_of(k, name=f"t_{k}") for k in KIND_NAMES]
BUDGET = 4 * 1024 * 1024
NULL = open(os.devnull, "w")  # noqa: SIM115 - the scoring progress line, for the whole module


def photo(w: int, h: int, seed: int, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([x * 255 // w, y * 255 // h, (x + y) * 127 // (w + h)], -1)
    img = (img + rng.integers(0, 40, (h, w, 3))).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt)
    return buf.getvalue()


IMAGES = {"photo": photo(200, 150, 1), "small png": photo(64, 48, 2, "PNG")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("kinds")
    write_version(root, "allkinds", 1, TASKS, HW, decoded=False, seed=3)
    write_version(root, "allkinds", 2, TASKS, HW, decoded=True, seed=3)
    return root


@pytest.fixture(scope="module")
def gateway(repo):
    settings = Settings(
        repo=repo, reload_interval_s=0, grpc_port=0, max_versions=2, max_response_bytes=BUDGET
    )
    app = create_app(settings)
    with gateway_thread(app) as url:
        yield url, f"127.0.0.1:{app.state.grpc_port}"


def v1(url: str, image: bytes, version: int, query: str = "") -> dict:
    r = httpx.post(
        f"{url}/v1/models/allkinds/predict?version={version}{query}",
        content=image,
        headers={"content-type": "image/jpeg"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return r.json()["predictions"][0]


def same(a, b, path=""):
    """Equal, with float16 maps within 1e-3 and numbers within a relative 1e-3."""
    if isinstance(a, dict) and "encoding" in a and "data" in a:
        x, y = decode_array(a), decode_array(b)
        assert x.shape == y.shape and x.dtype == y.dtype, path
        if np.issubdtype(x.dtype, np.integer):
            assert np.array_equal(x, y), path
        else:
            assert np.allclose(x.astype(np.float32), y.astype(np.float32), atol=1e-3), path
        assert {k: v for k, v in a.items() if k != "data"} == {
            k: v for k, v in b.items() if k != "data"
        }, path
    elif isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=1e-3, abs=1e-4), path
    else:
        assert a == b, path


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("query", ["", "&resolution=original", "&encoding=png&max_side=100"])
def test_graph_decoding_and_cpu_decoders_give_the_same_prediction(gateway, kind, query):
    url, _ = gateway
    for image in IMAGES.values():
        cpu = v1(url, image, 1, query)["tasks"][f"t_{kind}"]
        graph = v1(url, image, 2, query)["tasks"][f"t_{kind}"]
        same(graph, cpu)


def test_the_manifest_says_which_version_decodes_in_the_graph(gateway):
    url, _ = gateway
    for version, expect in ((1, False), (2, True)):
        tasks = httpx.get(f"{url}/v1/models/allkinds?version={version}").json()["tasks"]
        for t in tasks:
            has_ops = any(d.ops for d in get_kind(t["kind"]).decoded)
            assert bool(t["decoded_in_graph"]) == (expect and has_ops)
            assert t["view"] == get_kind(t["kind"]).view


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_every_field_a_view_names_is_in_the_prediction(gateway, kind):
    """The page reads what a kind's view names (serving.kinds.base.VIEW_FIELDS) from /v1."""
    from serving.kinds.base import VIEW_FIELDS

    url, _ = gateway
    view = get_kind(kind).view
    assert isinstance(view.get("draw"), str), view
    decoded = v1(url, IMAGES["photo"], 2, "&encoding=png")["tasks"][f"t_{kind}"]
    for key in VIEW_FIELDS:
        if key in view:
            for field in view[key] if isinstance(view[key], list) else [view[key]]:
                assert field in decoded, (kind, key, field, sorted(decoded))
    if "map" in view:  # the page draws maps it asked for as PNG, laid on the image by their box
        enc = decoded[view["map"]]
        assert enc["encoding"] == "png" and {"box", "image"} <= set(enc), (kind, sorted(enc))


def _decoded_names(kind: str) -> list[str]:
    k = get_kind(kind)
    task = next(t for t in TASKS if t.kind == kind)
    return [f"t_{kind}.{d.name}" for d in k.decoded] + [
        f"t_{kind}.{x.suffix}" for x in k.v2_extra(task)
    ]


def _v1_tensor(prediction: dict, kind: str, name: str) -> np.ndarray | None:
    """The /v1 map of the decoded tensor ``name`` (dense), or None."""
    decoded = prediction["tasks"][f"t_{kind}"]
    maps = [v for v in decoded.values() if isinstance(v, dict) and "encoding" in v]
    if get_kind(kind).tensor(name).resample is None or not maps:
        return None
    return decode_array(maps[0])


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
@pytest.mark.parametrize("version", ["1", "2"])
def test_v2_decoded_outputs_equal_v1(gateway, kind, transport, version):
    url, grpc_url = gateway
    image = IMAGES["photo"]
    names = [*_decoded_names(kind), f"t_{kind}.json", "image.box", "image.size"]
    for params, query in (({}, ""), ({"resolution": "original"}, "&resolution=original")):
        want = v1(url, image, int(version), query)
        if transport == "grpc":
            client = grpcclient.InferenceServerClient(grpc_url)
            inp = grpcclient.InferInput("image_bytes", [1], "BYTES")
            inp.set_data_from_numpy(np.array([image], dtype=object))
            outs = [grpcclient.InferRequestedOutput(n) for n in names]
        else:
            client = httpclient.InferenceServerClient(url.removeprefix("http://"))
            inp = httpclient.InferInput("image_bytes", [1], "BYTES")
            inp.set_data_from_numpy(np.array([image], dtype=object), binary_data=True)
            binary = transport == "http-binary"
            outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
        r = client.infer("allkinds", [inp], model_version=version, outputs=outs, parameters=params)
        got = __import__("orjson").loads(r.as_numpy(f"t_{kind}.json")[0, 0])
        same(got, want["tasks"][f"t_{kind}"])
        assert r.as_numpy("image.size").tolist() == [[want["width"], want["height"]]]
        assert r.as_numpy("image.box").tolist() == [[0, 0, want["width"], want["height"]]]
        for d in get_kind(kind).decoded:
            array = r.as_numpy(f"t_{kind}.{d.name}")
            assert array.dtype == np.dtype(d.dtype)
            expected = _v1_tensor(want, kind, d.name)
            if expected is not None and expected.dtype == array.dtype:
                np.testing.assert_allclose(
                    array[0].astype(np.float32), expected.astype(np.float32), atol=1e-3
                )


def test_scored_rows_equal_v1(gateway, repo, tmp_path):
    url, _ = gateway
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(IMAGES["photo"])
    (folder / "b.png").write_bytes(IMAGES["small png"])
    for version in (1, 2):
        for options, query in (
            (ScoreOptions(), ""),
            (
                ScoreOptions(resolution="original", encoding="png"),
                "&resolution=original&encoding=png",
            ),
        ):
            out = tmp_path / f"out-{version}-{options.resolution}"
            score(
                ScoreJob(
                    repo=repo,
                    model="allkinds",
                    source=str(folder),
                    output=out,
                    version=version,
                    options=options,
                ),
                progress_stream=NULL,
            )
            table = pq.read_table(out)
            for row in table.to_pylist():
                image = (folder / row["id"]).read_bytes()
                assert prediction_from_row(row, table.schema) == v1(url, image, version, query)


BIG = photo(1280, 960, 5)


def test_a_response_over_the_budget_is_413_on_every_route(gateway, repo, tmp_path):
    url, grpc_url = gateway
    r = httpx.post(
        f"{url}/v1/models/allkinds/predict?resolution=original",
        content=BIG,
        headers={"content-type": "image/jpeg"},
        timeout=30,
    )
    assert r.status_code == 413
    assert "resolution=model" in r.json()["error"] and "MiB" in r.json()["error"]
    # the same image at the default resolution is small
    assert (
        len(
            httpx.post(
                f"{url}/v1/models/allkinds/predict",
                content=BIG,
                headers={"content-type": "image/jpeg"},
                timeout=30,
            ).content
        )
        < 300_000
    )

    dense = [f"t_{k}.json" for k in KIND_NAMES if get_kind(k).dense]
    for binary in (False, True):
        client = httpclient.InferenceServerClient(url.removeprefix("http://"))
        inp = httpclient.InferInput("image_bytes", [1], "BYTES")
        inp.set_data_from_numpy(np.array([BIG], dtype=object))
        outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in dense]
        with pytest.raises(InferenceServerException, match="POLYHEAD_MAX_RESPONSE_BYTES"):
            client.infer("allkinds", [inp], outputs=outs, parameters={"resolution": "original"})
    client = grpcclient.InferenceServerClient(grpc_url)
    inp = grpcclient.InferInput("image_bytes", [1], "BYTES")
    inp.set_data_from_numpy(np.array([BIG], dtype=object))
    with pytest.raises(InferenceServerException) as e:
        client.infer(
            "allkinds",
            [inp],
            outputs=[grpcclient.InferRequestedOutput(n) for n in dense],
            parameters={"resolution": "original"},
        )
    assert "RESOURCE_EXHAUSTED" in str(e.value.status())

    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "big.jpg").write_bytes(BIG)
    (folder / "ok.jpg").write_bytes(IMAGES["photo"])
    out = tmp_path / "scored"
    summary = score(
        ScoreJob(
            repo=repo,
            model="allkinds",
            source=str(folder),
            output=out,
            options=ScoreOptions(resolution="original", max_response_bytes=BUDGET),
        ),
        progress_stream=NULL,
    )
    assert summary["errors"] == 1
    rows = {r["id"]: r for r in pq.read_table(out).to_pylist()}
    assert "POLYHEAD_MAX_RESPONSE_BYTES" in rows["big.jpg"]["error"]
    assert rows["ok.jpg"]["error"] is None
    # and the gateway still serves
    assert v1(url, IMAGES["photo"], 2)["width"] == 200
