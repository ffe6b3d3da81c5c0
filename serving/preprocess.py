"""Images in, model input out: decode safely, orient, convert to RGB, resize, normalise.

The same functions serve the HTTP API and batch scoring. Decoding is guarded: the header is
checked against the pixel limit before any pixel is decoded (decompression bombs), truncated
and corrupt files are errors, EXIF orientation is applied.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from serving.errors import InvalidImage, PayloadTooLarge
from serving.manifest import InputSpec

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")


@dataclass(frozen=True)
class Geometry:
    """How an original image maps onto the model input (to map dense outputs back)."""

    original: tuple[int, int]  # (H, W) after EXIF orientation
    resized: tuple[int, int]  # (H, W) of the image content inside the model input
    offset: tuple[int, int]  # (top, left) of that content inside the model input
    crop: tuple[int, int, int, int] | None = None  # (top, left, H, W) of the original kept


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image, refusing anything unsafe or broken."""
    if not data:
        raise InvalidImage("empty image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
            w, h = img.size
            if w * h > max_pixels:
                raise PayloadTooLarge(
                    f"image is {w}x{h} = {w * h} pixels; the limit is {max_pixels}"
                )
            img.load()
    except PayloadTooLarge:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise PayloadTooLarge(f"image rejected as a decompression bomb: {e}") from e
    except UnidentifiedImageError as e:
        raise InvalidImage(
            f"not a supported image (accepted: {', '.join(ACCEPTED_FORMATS)})"
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InvalidImage(f"corrupt or truncated image: {e}") from e
    if img.width < 1 or img.height < 1:
        raise InvalidImage("image has no pixels")
    # a broken EXIF block is no reason to refuse the pixels
    with contextlib.suppress(OSError, ValueError, SyntaxError):
        img = ImageOps.exif_transpose(img) or img
    if img.mode != "RGB":
        if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
            rgba = img.convert("RGBA")
            background = Image.new("RGB", rgba.size, (0, 0, 0))
            background.paste(rgba, mask=rgba.getchannel("A"))
            img = background
        else:
            img = img.convert("RGB")
    return img


def resize_for_model(img: Image.Image, spec: InputSpec) -> tuple[np.ndarray, Geometry]:
    """Resize per the manifest's policy; returns HxWx3 uint8 at model size and the geometry."""
    H, W = spec.height, spec.width
    w, h = img.size
    if spec.resize == "stretch":
        out = img.resize((W, H), Image.Resampling.BILINEAR)
        return np.asarray(out), Geometry((h, w), (H, W), (0, 0))
    if spec.resize == "letterbox":
        s = min(W / w, H / h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        canvas = np.zeros((H, W, 3), np.uint8)
        top, left = (H - nh) // 2, (W - nw) // 2
        canvas[top : top + nh, left : left + nw] = np.asarray(
            img.resize((nw, nh), Image.Resampling.BILINEAR)
        )
        return canvas, Geometry((h, w), (nh, nw), (top, left))
    # center_crop: scale so the image covers the input, then crop the middle
    s = max(W / w, H / h)
    cw, ch = min(w, round(W / s)), min(h, round(H / s))
    left, top = (w - cw) // 2, (h - ch) // 2
    out = img.crop((left, top, left + cw, top + ch)).resize((W, H), Image.Resampling.BILINEAR)
    return np.asarray(out), Geometry((h, w), (H, W), (0, 0), crop=(top, left, ch, cw))


def normalise(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32 ``(pixel * scale - mean) / std``."""
    x = pixels.astype(np.float32) * np.float32(spec.scale)
    x -= np.asarray(spec.mean, np.float32)
    x /= np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(data: bytes, spec: InputSpec, max_pixels: int) -> tuple[np.ndarray, Geometry]:
    """Encoded image bytes -> (3xHxW float32 model input, geometry)."""
    pixels, geometry = resize_for_model(decode_image(data, max_pixels), spec)
    return normalise(pixels, spec), geometry
