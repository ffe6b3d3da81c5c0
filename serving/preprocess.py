"""Images in, model input out: decode safely, orient, convert to RGB, resize, normalise.

The same functions serve the HTTP API and batch scoring. Decoding is guarded: the header is
checked against the pixel limit before any pixel is decoded (decompression bombs), truncated
and corrupt files are errors, EXIF orientation is applied, transparent pixels become black.

A JPEG much larger than the model input is decoded at reduced size by libjpeg-turbo's DCT
scaling (Pillow's ``draft``: 1/2, 1/4 or 1/8, never below what the model input needs), which
skips most of the decoding work. The resize is OpenCV's (SIMD): bilinear with exact sub-pixel
placement, after area averaging when the image is more than twice the input. Geometry is
always in the original image's pixels.
"""

from __future__ import annotations

import contextlib
import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serving.errors import InvalidImage, PayloadTooLarge
from serving.geometry import Geometry
from serving.kinds.maps import cv2
from serving.manifest import InputSpec

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
_ORIENTATION = 0x0112
_TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


@dataclass(frozen=True)
class DecodedImage:
    """Decoded RGB pixels, perhaps at reduced size, and the image's full size (W, H).

    ``extent`` is how many of ``image``'s pixels the original spans, (x, y): the image size,
    unless a box reduction by a factor that does not divide it left a partial last pixel.
    """

    image: Image.Image
    original: tuple[int, int]  # (W, H) after EXIF orientation
    extent: tuple[float, float] | None = None

    @property
    def span(self) -> tuple[float, float]:
        """The original's extent in ``image``'s pixels."""
        return self.extent or (float(self.image.width), float(self.image.height))

    @property
    def scale(self) -> tuple[float, float]:
        """Original pixels per decoded pixel, (x, y): 1 unless decoded at reduced size."""
        x, y = self.span
        return (self.original[0] / x, self.original[1] / y)


def needed_size(spec: InputSpec, width: int, height: int) -> tuple[int, int]:
    """(W, H) an image of ``width`` x ``height`` must have for the model input, not less."""
    if spec.resize == "stretch":
        return (min(width, spec.width), min(height, spec.height))
    fit = min if spec.resize == "letterbox" else max
    s = min(1.0, fit(spec.width / width, spec.height / height))
    return (math.ceil(width * s), math.ceil(height * s))


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise InvalidImage("empty image")
    img: Image.Image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    w, h = img.size
    if w * h > max_pixels:
        raise PayloadTooLarge(f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}")
    return img


def _orientation(img: Image.Image) -> int:
    with contextlib.suppress(Exception):  # a broken EXIF block is no reason to refuse the pixels
        return int(img.getexif().get(_ORIENTATION, 1))
    return 1


def decode_image(data: bytes, max_pixels: int, spec: InputSpec | None = None) -> DecodedImage:
    """Decode encoded image bytes to RGB, refusing anything unsafe or broken.

    With ``spec``, a JPEG is decoded at the smallest DCT-scaled size that still covers what
    the model input needs; without, always at full size.
    """
    try:
        img = _open(data, max_pixels)
        full = img.size
        rotated = _orientation(img) in _TRANSPOSED
        if spec is not None and img.format == "JPEG":
            shown = (full[1], full[0]) if rotated else full
            need = needed_size(spec, *shown)
            img.draft(img.mode, (need[1], need[0]) if rotated else need)
        img.load()
    except PayloadTooLarge:
        raise
    except Image.DecompressionBombError as e:
        raise PayloadTooLarge(f"image rejected as a decompression bomb: {e}") from e
    except UnidentifiedImageError as e:
        raise InvalidImage(
            f"not a supported image (accepted: {', '.join(ACCEPTED_FORMATS)})"
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidImage(f"corrupt or truncated image: {e}") from e
    if img.width < 1 or img.height < 1:
        raise InvalidImage("image has no pixels")
    with contextlib.suppress(OSError, ValueError, SyntaxError):
        img = ImageOps.exif_transpose(img) or img
    original = (full[1], full[0]) if rotated else full
    return DecodedImage(_to_rgb(img), original)


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _fit(
    pixels: np.ndarray, box: tuple[float, float, float, float], size: tuple[int, int]
) -> np.ndarray:
    """The ``box`` (x0, y0, x1, y1, in ``pixels``' coordinates) of H×W×3 pixels at ``size`` (W, H).

    Bilinear with exact sub-pixel placement (an affine warp); a box more than twice the output
    is first shrunk by area averaging to within 2x, so nothing aliases.
    """
    cv = cv2()
    W, H = size
    x0, y0, x1, y1 = box
    h, w = pixels.shape[:2]
    if (x0, y0, x1, y1) == (0, 0, w, h) and (w, h) == (W, H):
        return pixels
    mx, my = int((x1 - x0) / W), int((y1 - y0) / H)
    if mx > 2 or my > 2:
        iw, ih = max(1, round(w / max(mx, 1))), max(1, round(h / max(my, 1)))
        pixels = cv.resize(np.ascontiguousarray(pixels), (iw, ih), interpolation=cv.INTER_AREA)
        sx, sy = iw / w, ih / h
        x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
    fx, fy = (x1 - x0) / W, (y1 - y0) / H
    # output pixel centre (u + 0.5) maps to source x0 + (u + 0.5) * fx, pixel centres at +0.5
    m = np.array([[fx, 0.0, x0 + 0.5 * fx - 0.5], [0.0, fy, y0 + 0.5 * fy - 0.5]])
    flags = cv.INTER_LINEAR | cv.WARP_INVERSE_MAP
    return cv.warpAffine(
        np.ascontiguousarray(pixels), m, (W, H), flags=flags, borderMode=cv.BORDER_REPLICATE
    )


def _reduced(decoded: DecodedImage, spec: InputSpec) -> DecodedImage:
    """Box-reduce by whole factors while the image stays at least what the model needs.

    Pillow's ``reduce`` on the decoded image, before it becomes a NumPy array: a 40-megapixel
    PNG is never copied at full size (memory stays at one decoded image per thread).
    """
    img = decoded.image
    nw, nh = needed_size(spec, img.width, img.height)
    mx, my = img.width // nw, img.height // nh
    if mx < 2 and my < 2:
        return decoded
    mx, my = max(mx, 1), max(my, 1)
    x, y = decoded.span
    return DecodedImage(img.reduce((mx, my)), decoded.original, (x / mx, y / my))


def resize_for_model(decoded: DecodedImage, spec: InputSpec) -> tuple[np.ndarray, Geometry]:
    """Resize per the manifest's policy; returns H×W×3 uint8 at model size and the geometry."""
    H, W = spec.height, spec.width
    w, h = decoded.original
    decoded = _reduced(decoded, spec)
    pixels = np.asarray(decoded.image)
    whole = (0.0, 0.0, *decoded.span)
    if spec.resize == "stretch":
        return _fit(pixels, whole, (W, H)), Geometry((h, w), (H, W), (0, 0))
    if spec.resize == "letterbox":
        s = min(W / w, H / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        canvas = np.zeros((H, W, 3), np.uint8)
        top, left = (H - nh) // 2, (W - nw) // 2
        canvas[top : top + nh, left : left + nw] = _fit(pixels, whole, (nw, nh))
        return canvas, Geometry((h, w), (nh, nw), (top, left))
    # center_crop: scale so the image covers the input, then crop the middle
    s = max(W / w, H / h)
    cw, ch = min(w, round(W / s)), min(h, round(H / s))
    left, top = (w - cw) // 2, (h - ch) // 2
    sx, sy = decoded.scale
    box = (left / sx, top / sy, (left + cw) / sx, (top + ch) / sy)
    out = _fit(pixels, box, (W, H))
    return out, Geometry((h, w), (H, W), (0, 0), crop=(top, left, ch, cw))


def normalise(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """H×W×3 uint8 -> 3×H×W float32 ``(pixel * scale - mean) / std``."""
    std = np.asarray(spec.std, np.float32)
    a = np.float32(spec.scale) / std
    b = -np.asarray(spec.mean, np.float32) / std
    x = pixels.astype(np.float32)
    x *= a
    x += b
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(
    data: bytes, spec: InputSpec, max_pixels: int, fast: bool = True
) -> tuple[np.ndarray, Geometry]:
    """Encoded image bytes -> (3×H×W float32 model input, geometry).

    ``fast`` False decodes JPEGs at full size (the reference the fast path is tested against).
    """
    decoded = decode_image(data, max_pixels, spec if fast else None)
    pixels, geometry = resize_for_model(decoded, spec)
    return normalise(pixels, spec), geometry
