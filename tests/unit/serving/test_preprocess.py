"""Images in: safe decoding, orientation, colour, the resize policies and the fast JPEG path."""

import io

import numpy as np
import pytest
from PIL import Image

from serving.errors import InvalidImage, PayloadTooLarge
from serving.geometry import Geometry
from serving.manifest import InputSpec
from serving.preprocess import decode_image, needed_size, preprocess, resize_for_model

SPEC = InputSpec(height=32, width=48, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def encoded(img: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(w: int, h: int, seed: int = 0) -> Image.Image:
    """Smooth gradients with blobs: like a photo, not like noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    img = np.stack([x / w, y / h, 0.5 + 0.5 * np.sin(x / 37 + y / 23)], -1) * 200
    for _ in range(6):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.2) * w
        img[(x - cx) ** 2 + (y - cy) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return Image.fromarray(img.clip(0, 255).astype(np.uint8))


def test_normalisation_matches_the_manifest():
    img = Image.new("RGB", (48, 32), (255, 0, 128))
    x, g = preprocess(encoded(img), SPEC, 10**6)
    assert x.shape == (3, 32, 48) and x.dtype == np.float32
    assert np.allclose(x[0], (1.0 - 0.5) / 0.25)
    assert np.allclose(x[1], (0.0 - 0.5) / 0.25)
    assert g == Geometry((32, 48), (32, 48), (0, 0))


@pytest.mark.parametrize("size", [(40, 20), (1600, 800)])  # small, and large enough for DCT scaling
def test_exif_orientation_is_applied(size):
    img = Image.new("RGB", size, (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    data = encoded(img, "JPEG", exif=exif)
    assert decode_image(data, 10**7).image.size == (size[1], size[0])
    fast = decode_image(data, 10**7, SPEC)
    assert fast.original == (size[1], size[0])
    assert fast.image.width < fast.image.height  # still the shown orientation
    _, g = preprocess(data, SPEC, 10**7)
    assert g.original == (size[0], size[1])  # (H, W) as shown


def test_grayscale_and_rgba_become_rgb_and_transparent_is_black():
    assert decode_image(encoded(Image.new("L", (9, 9), 7)), 10**6).image.mode == "RGB"
    rgba = decode_image(encoded(Image.new("RGBA", (9, 9), (200, 2, 3, 0))), 10**6).image
    assert rgba.mode == "RGB" and rgba.getpixel((4, 4)) == (0, 0, 0)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", InvalidImage),
        (b"not an image at all", InvalidImage),
        (encoded(Image.new("RGB", (64, 64)))[:60], InvalidImage),
        (encoded(Image.new("RGB", (640, 480)), "JPEG")[:300], InvalidImage),
    ],
)
def test_bad_bytes_are_invalid_images(data, error):
    with pytest.raises(error):
        preprocess(data, SPEC, 10**6)


def test_pixel_limit_is_checked_before_decoding():
    with pytest.raises(PayloadTooLarge, match="pixels; the limit is 100"):
        decode_image(encoded(Image.new("RGB", (20, 20))), 100)
    # a JPEG header declaring 8000x8000 over a few bytes of data: refused, nothing decoded
    big = bytearray(encoded(Image.new("RGB", (16, 16)), "JPEG"))
    sof = big.index(b"\xff\xc0")
    big[sof + 5 : sof + 9] = (8000).to_bytes(2, "big") * 2
    with pytest.raises(PayloadTooLarge, match="8000x8000 = 64000000 pixels"):
        preprocess(bytes(big), SPEC, 40_000_000)


@pytest.mark.parametrize("policy", ["stretch", "letterbox", "center_crop"])
def test_resize_policies_fill_the_model_input(policy):
    spec = SPEC.model_copy(update={"resize": policy})
    pixels, g = resize_for_model(decode_image(encoded(Image.new("RGB", (100, 20))), 10**6), spec)
    assert pixels.shape == (32, 48, 3)
    if policy == "letterbox":
        assert g.resized[1] == 48 and g.resized[0] < 32 and g.offset[0] > 0
        assert g.box == (0, 0, 100, 20)
    if policy == "center_crop":
        assert g.crop is not None and g.crop[2] == 20
        assert g.box == (g.crop[1], 0, g.crop[3], 20)


@pytest.mark.parametrize("policy", ["stretch", "letterbox", "center_crop"])
def test_needed_size_never_asks_for_less_than_the_input_needs(policy):
    spec = SPEC.model_copy(update={"resize": policy})
    for w, h in [(640, 480), (4032, 3024), (100, 20), (20, 100), (30, 20)]:
        nw, nh = needed_size(spec, w, h)
        assert nw <= w and nh <= h
        if policy == "stretch":
            assert (nw, nh) == (min(w, 48), min(h, 32))
        else:
            s = (min if policy == "letterbox" else max)(48 / w, 32 / h)
            assert nw >= min(w, w * s) - 1e-9 and nh >= min(h, h * s) - 1e-9


@pytest.mark.parametrize("policy", ["stretch", "letterbox", "center_crop"])
@pytest.mark.parametrize("size", [(640, 480), (1920, 1080), (1000, 1000), (4032, 3024)])
@pytest.mark.parametrize(("model_hw", "tolerance"), [((32, 48), 4.0), ((128, 128), 1.5)])
def test_a_large_jpeg_is_decoded_at_reduced_size_with_the_same_geometry(
    policy, size, model_hw, tolerance
):
    spec = SPEC.model_copy(update={"resize": policy, "height": model_hw[0], "width": model_hw[1]})
    data = encoded(photo(*size), "JPEG", quality=92)
    fast = decode_image(data, 10**8, spec)
    full = decode_image(data, 10**8)
    assert fast.original == full.original == size
    assert needed_size(spec, *size)[0] <= fast.image.width < size[0]
    x_fast, g_fast = preprocess(data, spec, 10**8)
    x_full, g_full = preprocess(data, spec, 10**8, fast=False)
    assert g_fast == g_full
    # against the reference (full-size decode, Pillow's antialiased bilinear) the model input
    # differs by what the choice of filter makes: a mean of a pixel level or two
    if policy == "stretch":
        ref = np.asarray(full.image.resize(model_hw[::-1], Image.Resampling.BILINEAR))
        got = np.round((x_fast * 0.25 + 0.5) * 255).transpose(1, 2, 0)
        assert np.abs(got - ref).mean() < tolerance
    # and against the same resize of the full-size decode (two antialiasing filters in a row)
    assert np.abs(x_fast - x_full).mean() * 0.25 * 255 < 2 * tolerance


def test_png_and_other_formats_still_work():
    img = photo(300, 200)
    for fmt in ["PNG", "WEBP", "BMP", "GIF", "TIFF"]:
        x, g = preprocess(encoded(img, fmt), SPEC, 10**6)
        assert x.shape == (3, 32, 48) and g.original == (200, 300)
