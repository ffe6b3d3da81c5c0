import io

import numpy as np
import pytest
from PIL import Image

from serving.codecs import decode_array
from serving.errors import InvalidImage, PayloadTooLarge
from serving.manifest import InputSpec, TaskSpec
from serving.postprocess import DECODERS, DecodeOptions, decode
from serving.preprocess import Geometry, decode_image, preprocess, resize_for_model

SPEC = InputSpec(height=32, width=48, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def encoded(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_normalisation_matches_the_manifest():
    img = Image.new("RGB", (48, 32), (255, 0, 128))
    x, g = preprocess(encoded(img), SPEC, 10**6)
    assert x.shape == (3, 32, 48) and x.dtype == np.float32
    assert np.allclose(x[0], (1.0 - 0.5) / 0.25)
    assert np.allclose(x[1], (0.0 - 0.5) / 0.25)
    assert g == Geometry((32, 48), (32, 48), (0, 0))


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    decoded = decode_image(encoded(img, "JPEG", exif=exif), 10**6)
    assert decoded.size == (20, 40)


def test_grayscale_and_rgba_become_rgb():
    assert decode_image(encoded(Image.new("L", (9, 9), 7)), 10**6).mode == "RGB"
    assert decode_image(encoded(Image.new("RGBA", (9, 9), (1, 2, 3, 0))), 10**6).mode == "RGB"


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImage),
        (b"not an image at all", InvalidImage),
        (encoded(Image.new("RGB", (64, 64)))[:60], InvalidImage),
    ],
)
def test_bad_bytes_are_invalid_images(data, error):
    with pytest.raises(error):
        decode_image(data, 10**6)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(PayloadTooLarge, match="pixels; the limit is 100"):
        decode_image(encoded(Image.new("RGB", (20, 20))), 100)


@pytest.mark.parametrize("policy", ["stretch", "letterbox", "center_crop"])
def test_resize_policies_fill_the_model_input(policy):
    spec = SPEC.model_copy(update={"resize": policy})
    pixels, g = resize_for_model(Image.new("RGB", (100, 20), (9, 9, 9)), spec)
    assert pixels.shape == (32, 48, 3)
    if policy == "letterbox":
        assert g.resized[1] == 48 and g.resized[0] < 32 and g.offset[0] > 0
    if policy == "center_crop":
        assert g.crop is not None and g.crop[2] == 20


def task(kind, channels, labels=None):
    return TaskSpec(name="t", kind=kind, output="t", channels=channels, labels=labels)


def test_every_kind_has_a_decoder():
    from serving.manifest import TASK_KINDS

    assert set(DECODERS) == set(TASK_KINDS)


@pytest.mark.parametrize("encoding", ["png", "float16", "json"])
def test_segmentation_resized_to_original_with_shares(encoding):
    logits = np.zeros((3, 4, 4), np.float32)
    logits[2, :, :2] = 5.0  # left half class 2, right half class 0
    g = Geometry(original=(8, 8), resized=(4, 4), offset=(0, 0))
    out = decode(
        logits, task("segmentation", 3, ["a", "b", "c"]), g, DecodeOptions(encoding=encoding)
    )
    m = decode_array(out["map"])
    assert m.shape == (8, 8)
    assert (m[:, :4] == 2).all() and (m[:, 4:] == 0).all()
    assert {c["label"]: c["share"] for c in out["classes"]} == {"c": 0.5, "a": 0.5}


def test_depth_png_round_trips_within_quantisation():
    depth = np.linspace(1, 5, 16, dtype=np.float32).reshape(1, 4, 4)
    g = Geometry((4, 4), (4, 4), (0, 0))
    out = decode(depth, task("depth", 1), g, DecodeOptions(encoding="png"))
    q = decode_array(out["map"]).astype(np.float64)
    back = out["map"]["value_min"] + q / 65535 * (out["map"]["value_max"] - out["map"]["value_min"])
    assert np.allclose(back, depth[0], atol=1e-3)
    assert out["min"] == pytest.approx(1.0) and out["max"] == pytest.approx(5.0)


def test_letterbox_bars_are_dropped_from_dense_maps():
    maps = np.zeros((1, 8, 8), np.float32)
    maps[0, 2:6] = 3.0  # content rows 2..5, bars above and below
    g = Geometry(original=(4, 8), resized=(4, 8), offset=(2, 0))
    out = decode(maps, task("depth", 1), g, DecodeOptions(encoding="float16"))
    assert decode_array(out["map"]).shape == (4, 8)
    assert out["min"] == pytest.approx(3.0)


def test_normals_are_unit_vectors():
    n = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
    out = decode(
        n, task("normals", 3), Geometry((4, 4), (4, 4), (0, 0)), DecodeOptions(encoding="float16")
    )
    v = decode_array(out["map"]).astype(np.float32)
    assert np.allclose(np.linalg.norm(v, axis=-1), 1.0, atol=2e-3)


def test_classification_and_multilabel():
    logits = np.array([0.0, 3.0, 1.0], np.float32)
    c = decode(
        logits,
        task("classification", 3, ["x", "y", "z"]),
        Geometry((1, 1), (1, 1), (0, 0)),
        DecodeOptions(top_k=2),
    )
    assert c["label"] == "y" and [t["label"] for t in c["top_k"]] == ["y", "z"]
    assert sum(np.exp(logits) / np.exp(logits).sum()) == pytest.approx(1.0)
    m = decode(
        np.array([-3.0, 2.0, 0.5], np.float32),
        task("multilabel", 3, ["x", "y", "z"]),
        Geometry((1, 1), (1, 1), (0, 0)),
        DecodeOptions(),
    )
    assert [t["label"] for t in m["labels"]] == ["y", "z"]
    assert m["scores"]["x"] < 0.5
