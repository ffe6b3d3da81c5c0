"""A real gateway on loopback serving the bundled model: what a client sees."""

import base64
import io
import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from serving.codecs import decode_array
from serving.manifest import Manifest
from serving.preprocess import preprocess
from tests.gateway import ROOT, gateway_process

BUNDLED = ROOT / "model_repo" / "scenes"
TASKS = ["semseg", "depth", "normals", "edges", "shapes", "background"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(BUNDLED, root / "scenes")
    # a second version (same graph) to pin
    v2 = root / "scenes" / "2"
    shutil.copytree(root / "scenes" / "1", v2)
    manifest = json.loads((v2 / "manifest.json").read_text())
    manifest["version"] = 2
    (v2 / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture(scope="module")
def url(repo):
    with gateway_process(repo, reload_interval_s="0") as u:
        yield u


def scene_png(seed: int, size=(128, 128)) -> bytes:
    from training.data.synth import SceneConfig, render_scene

    img = Image.fromarray(
        render_scene(np.random.default_rng([99, seed]), SceneConfig(size=128)).image
    )
    if size != (128, 128):
        img = img.resize(size)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def direct(image: bytes, version=1):
    """Run the ONNX model directly on the gateway's own pre-processing."""
    m = Manifest.load(BUNDLED / str(version) / "manifest.json")
    x, _ = preprocess(image, m.input, 10**8)
    sess = ort.InferenceSession(
        str(BUNDLED / str(version) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    return dict(zip(m.output_names, sess.run(m.output_names, {"image": x[None]}), strict=True))


def test_one_image_every_task_decoded(url):
    r = httpx.post(
        f"{url}/v1/models/scenes/predict?encoding=png",
        files={"file": ("a.png", scene_png(1), "image/png")},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "scenes" and body["version"] == 2
    (pred,) = body["predictions"]
    t = pred["tasks"]
    assert list(t) == TASKS
    assert decode_array(t["semseg"]["map"]).shape == (128, 128)
    depth = decode_array(t["depth"]["map"])  # metres, as a float16 map gives them
    assert depth.dtype == np.float32 and t["depth"]["min"] <= depth.min() <= depth.max()
    assert depth.max() <= t["depth"]["max"] + 1e-4
    assert decode_array(t["normals"]["map"]).shape == (128, 128, 3)
    assert decode_array(t["edges"]["probability"]).shape == (128, 128)
    assert t["background"]["label"] in {"stripes", "checker", "noise", "gradient"}
    assert set(t["shapes"]["scores"]) == {"circle", "square", "triangle", "star"}
    assert abs(sum(c["share"] for c in t["semseg"]["classes"]) - 1) < 1e-3


def test_predictions_equal_running_the_onnx_model_directly(url):
    image = scene_png(2)
    r = httpx.post(
        f"{url}/v1/models/scenes/predict?encoding=float16&resolution=model",
        content=image,
        headers={"content-type": "image/png"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    t = r.json()["predictions"][0]["tasks"]
    ref = direct(image)
    assert np.array_equal(
        decode_array(t["semseg"]["map"]), ref["semseg"][0].argmax(0).astype(np.uint8)
    )
    assert np.allclose(
        decode_array(t["depth"]["map"]).astype(np.float32), ref["depth"][0, 0], rtol=1e-3, atol=1e-3
    )
    p = np.exp(ref["background"][0] - ref["background"][0].max())
    p /= p.sum()
    assert t["background"]["probability"] == pytest.approx(float(p.max()), rel=1e-4)
    sig = 1 / (1 + np.exp(-ref["shapes"][0]))
    assert [
        t["shapes"]["scores"][k] for k in ("circle", "square", "triangle", "star")
    ] == pytest.approx(sig.tolist(), rel=1e-4)


def test_default_encoding_is_float16_and_json_lists_on_request(url):
    image = scene_png(4)
    default = httpx.post(
        f"{url}/v1/models/scenes/predict?tasks=depth,semseg",
        content=image,
        headers={"content-type": "image/png"},
        timeout=30,
    ).json()
    as_json = httpx.post(
        f"{url}/v1/models/scenes/predict?tasks=depth,semseg&encoding=json",
        content=image,
        headers={"content-type": "image/png"},
        timeout=30,
    ).json()
    d, j = default["predictions"][0]["tasks"], as_json["predictions"][0]["tasks"]
    assert d["depth"]["map"]["encoding"] == "float16" and d["semseg"]["map"]["encoding"] == "raw"
    assert j["depth"]["map"]["encoding"] == "json" and isinstance(j["depth"]["map"]["data"], list)
    assert np.allclose(
        decode_array(d["depth"]["map"]).astype(np.float32),
        decode_array(j["depth"]["map"]),
        atol=5e-3,
    )
    assert np.array_equal(decode_array(d["semseg"]["map"]), decode_array(j["semseg"]["map"]))


def test_several_images_multipart_and_json(url):
    images = [scene_png(i, size=(100 + 10 * i, 90)) for i in range(3)]
    files = [("files", (f"{i}.png", im, "image/png")) for i, im in enumerate(images)]
    a = httpx.post(
        f"{url}/v1/models/scenes/predict?tasks=background,semseg", files=files, timeout=30
    )
    b = httpx.post(
        f"{url}/v1/models/scenes/predict?tasks=background,semseg",
        json={"images": [base64.b64encode(im).decode() for im in images]},
        timeout=30,
    )
    for r in (a, b):
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
        assert len(preds) == 3
        for i, p in enumerate(preds):
            assert list(p["tasks"]) == ["background", "semseg"]
            assert (p["width"], p["height"]) == (100 + 10 * i, 90)
            seg = p["tasks"]["semseg"]["map"]
            assert decode_array(seg).shape == (128, 128)  # the model's grid, by default
            assert seg["box"] == {"left": 0, "top": 0, "width": 100 + 10 * i, "height": 90}
            assert seg["image"] == {"width": 100 + 10 * i, "height": 90}
    assert a.json()["predictions"] == b.json()["predictions"]
    r = httpx.post(
        f"{url}/v1/models/scenes/predict?tasks=semseg&resolution=original", files=files, timeout=30
    )
    for i, p in enumerate(r.json()["predictions"]):
        assert decode_array(p["tasks"]["semseg"]["map"]).shape == (90, 100 + 10 * i)


def test_tasks_filter_and_pinned_version(url):
    r = httpx.post(
        f"{url}/v1/models/scenes/predict?tasks=depth&version=1",
        content=scene_png(3),
        headers={"content-type": "image/png"},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 1
    assert list(r.json()["predictions"][0]["tasks"]) == ["depth"]


def test_model_listing_and_metadata(url):
    models = httpx.get(f"{url}/v1/models").json()
    assert models["models"] == [{"name": "scenes", "versions": [1, 2], "latest": 2}]
    meta = httpx.get(f"{url}/v1/models/scenes").json()
    assert meta["device"] == "CPUExecutionProvider"
    assert [t["name"] for t in meta["tasks"]] == TASKS
    assert meta["input"]["height"] == 128
    assert httpx.get(f"{url}/v1/models/scenes?version=1").json()["version"] == 1


def test_64_concurrent_requests_each_get_their_own_rows(url):
    images = [scene_png(100 + i) for i in range(64)]

    def call(i):
        r = httpx.post(
            f"{url}/v1/models/scenes/predict?tasks=background,shapes",
            content=images[i],
            headers={"content-type": "image/png"},
            timeout=60,
        )
        assert r.status_code == 200, r.text
        return r.json()["predictions"][0]["tasks"]

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(call, range(64)))
    for i in (0, 17, 42, 63):  # spot-check against the model run alone
        ref = direct(images[i])
        sig = 1 / (1 + np.exp(-ref["shapes"][0]))
        got = [results[i]["shapes"]["scores"][k] for k in ("circle", "square", "triangle", "star")]
        assert got == pytest.approx(sig.tolist(), rel=1e-4, abs=1e-6)
    metrics = httpx.get(f"{url}/metrics").text
    sizes = {}
    for line in metrics.splitlines():
        if line.startswith("polyhead_batch_size_bucket"):
            le = line.split('le="')[1].split('"')[0]
            sizes[le] = float(line.rsplit(" ", 1)[1])
    assert sizes["1.0"] < sizes["+Inf"], "some forward passes held more than one image"


def test_docs_and_page(url):
    assert httpx.get(f"{url}/docs").status_code == 200
    spec = httpx.get(f"{url}/openapi.json").json()
    assert "/v1/models/{name}/predict" in spec["paths"]
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and "polyhead" in page.text
    assert page.headers["content-type"].startswith("text/html")
    for asset in ("static/page.js", "static/page.css"):
        assert asset in page.text
        assert httpx.get(f"{url}/{asset}").status_code == 200


def test_the_page_can_draw_every_kind(url):
    """Each kind's view names a renderer the page has (the page draws what the kinds say)."""
    import re

    from serving.kinds import KINDS

    script = httpx.get(f"{url}/static/page.js").text
    block = script[script.index("const RENDERERS = {") :]
    renderers = set(re.findall(r"^  async (\w+)\(", block, flags=re.M))
    assert renderers
    for name, kind in KINDS.items():
        assert kind.view.get("draw") in renderers, name
    described = httpx.get(f"{url}/v1/models/scenes").json()["tasks"]
    assert all(t["view"]["draw"] in renderers for t in described)
