"""Maps at the model's grid carry the box that lays them back on the image, exactly.

A segmentation model whose classes are the input's pure colours (black, red, green, blue) is
served with each resize policy. A scene of coloured rectangles is drawn at photo sizes; the
client takes the default response (the class map at the model's grid), lays it back onto the
image with nothing but the map's ``box`` and ``image`` fields, and compares with the scene.
"""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image, ImageDraw

from serving.codecs import decode_array
from tests.gateway import gateway_process
from tests.onnx_models import colour_weights, task_of, write_version

POLICIES = ["stretch", "letterbox", "center_crop"]
COLOURS = [(0, 0, 0), (255, 0, 0), (0, 255, 0), (0, 0, 255)]


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    seg = task_of("segmentation", "seg")
    for policy in POLICIES:
        write_version(
            root,
            f"colours-{policy.replace('_', '-')}",
            1,
            [seg],
            (96, 128),
            resize=policy,
            weights={"seg": colour_weights()},
        )
    with gateway_process(root, reload_interval_s="0") as u:
        yield u


def scene(w: int, h: int, seed: int) -> tuple[bytes, np.ndarray]:
    """PNG of coloured rectangles on black, and its true class map."""
    rng = np.random.default_rng(seed)
    img = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x0, y0 = int(rng.integers(0, w - w // 5)), int(rng.integers(0, h - h // 5))
        x1, y1 = x0 + int(rng.integers(w // 8, w // 3)), y0 + int(rng.integers(h // 8, h // 3))
        draw.rectangle([x0, y0, x1, y1], fill=COLOURS[int(rng.integers(1, 4))])
    pixels = np.asarray(img)
    truth = np.zeros((h, w), np.uint8)
    for k in (1, 2, 3):
        truth[(pixels == COLOURS[k]).all(-1)] = k
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue(), truth


def lay_back(classes: np.ndarray, m: dict) -> tuple[np.ndarray, np.ndarray]:
    """What a client does: stretch the map over its box (nearest, pixel centres)."""
    W, H = m["image"]["width"], m["image"]["height"]
    b = m["box"]
    mh, mw = classes.shape
    out = np.zeros((H, W), np.uint8)
    inside = np.zeros((H, W), bool)
    ys = np.arange(b["top"], b["top"] + b["height"])
    xs = np.arange(b["left"], b["left"] + b["width"])
    i = np.minimum(((ys - b["top"] + 0.5) * mh / b["height"]).astype(int), mh - 1)
    j = np.minimum(((xs - b["left"] + 0.5) * mw / b["width"]).astype(int), mw - 1)
    out[np.ix_(ys, xs)] = classes[np.ix_(i, j)]
    inside[np.ix_(ys, xs)] = True
    return out, inside


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("size", [(640, 480), (480, 640), (1000, 300)])
def test_the_box_lays_the_model_grid_map_back_onto_the_image(url, policy, size):
    model = f"colours-{policy.replace('_', '-')}"
    for seed in range(3):
        data, truth = scene(*size, seed)
        r = httpx.post(
            f"{url}/v1/models/{model}/predict",
            content=data,
            headers={"content-type": "image/png"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        m = r.json()["predictions"][0]["tasks"]["seg"]["map"]
        classes = decode_array(m)
        assert classes.shape[0] <= 96 and classes.shape[1] <= 128  # the model's grid
        assert m["image"] == {"width": size[0], "height": size[1]}
        back, inside = lay_back(classes, m)
        same_aspect = size[0] * 96 == size[1] * 128
        assert inside.all() == (policy != "center_crop" or same_aspect)
        agree = (back == truth)[inside].mean()
        # wrong pixels only along rectangle borders: a model pixel covers several image pixels
        assert agree > 0.97, (policy, size, seed, agree)
        # and the map at the image's resolution is the same thing, computed by the server
        o = httpx.post(
            f"{url}/v1/models/{model}/predict?resolution=original",
            content=data,
            headers={"content-type": "image/png"},
            timeout=30,
        ).json()["predictions"][0]["tasks"]["seg"]["map"]
        full = decode_array(o)
        b = o["box"]
        assert full.shape == (b["height"], b["width"])
        region = back[b["top"] : b["top"] + b["height"], b["left"] : b["left"] + b["width"]]
        assert (full == region).mean() > 0.99
