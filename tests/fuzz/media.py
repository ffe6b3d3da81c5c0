"""Image bytes for the fuzz suite: small valid images in many modes and formats, and broken ones.

Valid: PNG, JPEG, WebP, GIF, BMP, TIFF in RGB, RGBA, L, LA, P (with transparency), 1-bit,
16-bit, 32-bit int and float, CMYK and YCbCr, with EXIF orientations (legal and not), sizes
from 1x1 to thin strips. Broken: truncated, bytes flipped, random bytes (with and without a
format's magic), headers declaring huge dimensions with a tiny payload, junk EXIF blocks, and
two large legal images (a 36-megapixel 1-bit PNG, a 12-megapixel JPEG) that must decode in time.
"""

from __future__ import annotations

import io
import struct
import zlib
from functools import cache

import numpy as np
from hypothesis import strategies as st
from PIL import Image

# (mode, format) pairs Pillow can write
SAVABLE = [
    ("RGB", "PNG"),
    ("RGBA", "PNG"),
    ("L", "PNG"),
    ("LA", "PNG"),
    ("P", "PNG"),
    ("1", "PNG"),
    ("I;16", "PNG"),
    ("I", "PNG"),
    ("RGB", "JPEG"),
    ("L", "JPEG"),
    ("CMYK", "JPEG"),
    ("RGB", "WEBP"),
    ("RGBA", "WEBP"),
    ("P", "GIF"),
    ("L", "GIF"),
    ("RGB", "BMP"),
    ("P", "BMP"),
    ("1", "BMP"),
    ("RGB", "TIFF"),
    ("CMYK", "TIFF"),
    ("I;16", "TIFF"),
    ("F", "TIFF"),
    ("LA", "TIFF"),
    ("YCbCr", "TIFF"),
    ("I", "TIFF"),
    ("RGB", "PPM"),  # decodable by Pillow, not an accepted format
    ("RGB", "ICO"),
]
EXIF_FORMATS = {"JPEG", "PNG", "WEBP", "TIFF"}
ORIENTATIONS = [1, 2, 3, 4, 5, 6, 7, 8, 0, 9, 255, 65535]


def _pixels(mode: str, w: int, h: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    rgb[h // 3 : h // 2 + 1, w // 4 : w // 2 + 1] = (220, 30, 40)  # something to see
    img = Image.fromarray(rgb)
    # Image.fromarray picks the mode from the dtype: uint16 I;16, int32 I, float32 F
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, size=(h, w), dtype=np.uint16))
    if mode == "I":
        return Image.fromarray(rng.integers(-(2**20), 2**20, size=(h, w), dtype=np.int32))
    if mode == "F":
        return Image.fromarray(rng.standard_normal((h, w)).astype(np.float32) * 1e3)
    if mode == "P":
        return img.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return img.convert(mode)


@cache
def encoded(mode: str, fmt: str, w: int, h: int, seed: int, orientation: int | None) -> bytes:
    """A valid image (falls back to RGB PNG when Pillow cannot write the combination)."""
    img = _pixels(mode, w, h, seed)
    buf = io.BytesIO()
    kwargs: dict = {}
    if fmt == "JPEG":
        kwargs["quality"] = 85
    if mode == "P" and fmt in ("PNG", "GIF"):
        kwargs["transparency"] = 0
    if orientation is not None and fmt in EXIF_FORMATS:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    try:
        img.save(buf, format=fmt, **kwargs)
    except (OSError, ValueError, KeyError, TypeError):
        buf = io.BytesIO()
        img.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


ACCEPTED = [(m, f) for m, f in SAVABLE if f not in ("PPM", "ICO")]


@st.composite
def valid_images(draw, max_side: int = 160, strict: bool = False) -> bytes:
    """A small valid image in some mode, format, size and EXIF orientation.

    ``strict``: one the gateway must accept (an accepted format, each side at least 8 pixels);
    otherwise also tiny ones, thin strips and formats Pillow reads but the gateway refuses.
    """
    mode, fmt = draw(st.sampled_from(ACCEPTED if strict else SAVABLE))
    sizes = [st.tuples(st.integers(8, max_side), st.integers(8, max_side))]
    if not strict:
        sizes.append(st.tuples(st.integers(1, 12), st.integers(1, 12)))
        sizes.append(st.sampled_from([(1, 1), (7, 200), (400, 8), (1000, 9), (128, 128)]))
    size = draw(st.one_of(sizes))
    orientation = draw(st.none() | st.sampled_from(ORIENTATIONS))
    return encoded(mode, fmt, size[0], size[1], draw(st.integers(0, 3)), orientation)


@cache
def scene_png(w: int = 64, h: int = 48) -> bytes:
    """A small RGB PNG that must always be accepted."""
    return encoded("RGB", "PNG", w, h, 0, None)


# ---- crafted headers: huge declared dimensions, tiny payloads ---------------------------------

DIMS = [0, 1, 8, 4096, 65535, 65536, 100_000, 2**24, 2**31 - 1, 2**31, 2**32 - 1]
DIMS16 = [0, 1, 8, 4096, 20000, 65535]


def _png_chunk(kind: bytes, data: bytes, crc_ok: bool = True) -> bytes:
    crc = zlib.crc32(kind + data) ^ (0 if crc_ok else 0xFFFF)
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def png_declared(w: int, h: int, depth: int, color: int, payload: bytes, crc_ok: bool) -> bytes:
    """A PNG whose IHDR says ``w`` x ``h`` over whatever ``payload`` inflates to."""
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr, crc_ok)
        + _png_chunk(b"IDAT", zlib.compress(payload))
        + _png_chunk(b"IEND", b"")
    )


def gif_declared(w: int, h: int, iw: int, ih: int) -> bytes:
    """A GIF with a logical screen and one frame of the given sizes, a few pixels of data."""
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", w, h, 0x80, 0, 0)
        + b"\x00\x00\x00\xff\xff\xff"
        + b","
        + struct.pack("<HHHHB", 0, 0, iw, ih, 0)
        + b"\x02\x02\x4c\x01\x00;"
    )


def bmp_declared(w: int, h: int, bpp: int, pixels: bytes) -> bytes:
    """A BMP (BITMAPINFOHEADER) declaring ``w`` x ``h`` (``h`` may be negative: top-down)."""
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, 0, len(pixels), 2835, 2835, 0, 0)
    offset = 14 + len(info)
    return b"BM" + struct.pack("<IHHI", offset + len(pixels), 0, 0, offset) + info + pixels


def tiff_declared(w: int, h: int, data: bytes) -> bytes:
    """A minimal little-endian grayscale TIFF declaring ``w`` x ``h``."""
    entries = [
        (256, 4, 1, w),  # ImageWidth LONG
        (257, 4, 1, h),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample SHORT
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # BlackIsZero
        (273, 4, 1, 8 + 2 + 12 * 8 + 4),  # StripOffsets
        (278, 4, 1, h),  # RowsPerStrip
        (279, 4, 1, len(data)),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value & 0xFFFFFFFF)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + data


def webp_declared(w: int, h: int) -> bytes:
    """A WebP VP8X header declaring a ``w`` x ``h`` canvas (1..2^24 each), no image data."""
    vp8x = struct.pack("<I", 0) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    chunk = b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def jpeg_redeclared(jpeg: bytes, w: int, h: int) -> bytes:
    """A valid baseline JPEG with its SOF0 rewritten to say ``w`` x ``h`` (0..65535)."""
    i = jpeg.find(b"\xff\xc0")
    if i < 0:
        return jpeg
    return jpeg[: i + 5] + struct.pack(">HH", h, w) + jpeg[i + 9 :]


def jpeg_with_app1(jpeg: bytes, payload: bytes) -> bytes:
    """A JPEG with an extra APP1 (EXIF) segment right after SOI."""
    segment = b"\xff\xe1" + struct.pack(">H", min(len(payload) + 2, 65535)) + payload[:65533]
    return jpeg[:2] + segment + jpeg[2:]


@st.composite
def exif_junk(draw) -> bytes:
    """An EXIF block: the TIFF header, then IFD entries with odd types, counts and offsets."""
    order = draw(st.sampled_from([b"II*\x00", b"MM\x00*", b"II\x00\x00", b"XX*\x00"]))
    endian = ">" if order.startswith(b"MM") else "<"
    n = draw(st.integers(0, 6))
    body = struct.pack(endian + "I", draw(st.sampled_from([8, 0, 7, 2**31, 2**32 - 1])))
    body += struct.pack(endian + "H", draw(st.sampled_from([n, 0, 65535])))
    for _ in range(n):
        tag = draw(st.sampled_from([0x0112, 0x8769, 0x8825, 0x927C, 0xA005, 0x0100]))
        kind = draw(st.integers(0, 20))
        count = draw(st.sampled_from([0, 1, 2, 4, 1000, 2**31, 2**32 - 1]))
        value = draw(st.integers(0, 2**32 - 1))
        body += struct.pack(endian + "HHII", tag, kind, count, value)
    return b"Exif\x00\x00" + order + body + draw(st.binary(max_size=40))


@cache
def large_png() -> bytes:
    """A legal 6000x6000 1-bit PNG (36 megapixels, under the default 40M limit), ~5 KB."""
    buf = io.BytesIO()
    Image.new("1", (6000, 6000)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


@cache
def large_jpeg() -> bytes:
    """A legal 4000x3000 JPEG (decoded at reduced size by the gateway)."""
    buf = io.BytesIO()
    Image.new("RGB", (4000, 3000), (90, 140, 30)).save(buf, format="JPEG", quality=50)
    return buf.getvalue()


MAGIC = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"<svg",
    b"%PDF-1.4",
]


def _flip(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        if out:
            out[p % len(out)] ^= 0xA5
    return bytes(out)


def broken_images() -> st.SearchStrategy[bytes]:
    """Bytes that are not a decodable image, or one the gateway must refuse."""
    small = valid_images(max_side=64)
    jpeg = st.builds(
        encoded,
        st.just("RGB"),
        st.just("JPEG"),
        st.integers(8, 64),
        st.integers(8, 64),
        st.just(0),
        st.none(),
    )
    return st.one_of(
        st.tuples(small, st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])]),
        st.tuples(small, st.lists(st.integers(0, 10_000), min_size=1, max_size=8)).map(
            lambda t: _flip(*t)
        ),
        st.binary(max_size=2000),
        st.tuples(st.sampled_from(MAGIC), st.binary(max_size=500)).map(b"".join),
        st.builds(
            png_declared,
            st.sampled_from(DIMS),
            st.sampled_from(DIMS),
            st.sampled_from([1, 2, 4, 8, 16, 3, 0]),
            st.sampled_from([0, 2, 3, 4, 6, 1, 7]),
            st.binary(max_size=200),
            st.booleans(),
        ),
        st.builds(
            gif_declared,
            st.sampled_from(DIMS16),
            st.sampled_from(DIMS16),
            st.sampled_from(DIMS16),
            st.sampled_from(DIMS16),
        ),
        st.builds(
            bmp_declared,
            st.sampled_from([0, 1, 9, 65535, 2**31 - 1, -1, -(2**31)]),
            st.sampled_from([0, 1, 9, 65535, 2**31 - 1, -1, -(2**31)]),
            st.sampled_from([1, 4, 8, 16, 24, 32, 0, 7, 64]),
            st.binary(max_size=64),
        ),
        st.builds(
            tiff_declared, st.sampled_from(DIMS), st.sampled_from(DIMS), st.binary(max_size=64)
        ),
        st.builds(webp_declared, st.integers(1, 2**24), st.integers(1, 2**24)),
        st.builds(jpeg_redeclared, jpeg, st.sampled_from(DIMS16), st.sampled_from(DIMS16)),
        st.builds(jpeg_with_app1, jpeg, exif_junk()),
        st.sampled_from(["png", "jpeg"]).map(lambda k: large_png() if k == "png" else large_jpeg()),
    )


def images() -> st.SearchStrategy[bytes]:
    """Valid or broken image bytes, about half and half."""
    return st.one_of(valid_images(), broken_images())
