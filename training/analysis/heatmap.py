"""A square matrix drawn as a PNG heat map: task names on both axes, the value in each cell.

Pillow and numpy only. A diverging colour map centred on 0 (blue below, red above, white at
0), symmetric about 0 so that a sign reads the same in every figure; each figure's scale is
its largest magnitude unless given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# ColorBrewer RdBu's ends and middle: negative, zero, positive
_NEGATIVE = np.array([33, 102, 172], dtype=np.float64)
_ZERO = np.array([247, 247, 247], dtype=np.float64)
_POSITIVE = np.array([178, 24, 43], dtype=np.float64)
_FONT_SIZE = 13
_PAD = 8


def colour(value: float, limit: float) -> tuple[int, int, int]:
    """The colour of ``value`` on a scale from ``-limit`` (blue) to ``+limit`` (red)."""
    t = 0.0 if limit <= 0 or not math.isfinite(value) else max(-1.0, min(1.0, value / limit))
    end = _POSITIVE if t >= 0 else _NEGATIVE
    rgb = _ZERO + abs(t) * (end - _ZERO)
    r, g, b = (int(v) for v in np.rint(rgb))
    return (r, g, b)


def decimals(values: np.ndarray) -> int:
    """Decimals that show about three significant digits of the largest magnitude (2 to 5)."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    if top <= 0:
        return 2
    return int(min(5, max(2, 2 - math.floor(math.log10(top)))))


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_size(
    draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont
) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return int(right - left), int(bottom - top)


def draw_heatmap(
    matrix: np.ndarray,
    labels: Sequence[str],
    title: str,
    path: Path,
    caption: str = "",
    limit: float | None = None,
    places: int | None = None,
) -> Path:
    """Write ``matrix`` (rows x columns, both over ``labels``) as a PNG at ``path``.

    Args:
        matrix: The values; NaN cells are drawn grey and left blank.
        labels: Row and column names, in order.
        title: The line above the figure.
        path: Where to write the PNG.
        caption: A line under the figure (e.g. which axis is the source).
        limit: The magnitude drawn at full colour; default, the largest magnitude.
        places: Decimals written in the cells; default, about three significant digits.
    """
    values = np.asarray(matrix, dtype=np.float64)
    finite = values[np.isfinite(values)]
    scale = limit if limit is not None else (float(np.abs(finite).max()) if finite.size else 1.0)
    places = decimals(values) if places is None else places
    texts = [["" if not math.isfinite(v) else f"{v:.{places}f}" for v in row] for row in values]
    font = _font(_FONT_SIZE)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max([_text_size(probe, t, font)[0] for row in texts for t in row] + [1])
    label_w = max(_text_size(probe, name, font)[0] for name in labels)
    line_h = _text_size(probe, "Ag", font)[1] + 4
    cell = max(text_w + 2 * _PAD, line_h + 2 * _PAD, 40)
    left = label_w + 2 * _PAD
    top = line_h * 2 + label_w + 2 * _PAD
    legend_h = line_h * 3 + 12
    n = len(labels)
    width = max(left + n * cell + _PAD, _text_size(probe, title, font)[0] + 2 * _PAD)
    width = max(width, _text_size(probe, caption, font)[0] + 2 * _PAD)
    height = top + n * cell + legend_h
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    draw.text((_PAD, _PAD), title, fill="black", font=font)
    for k, name in enumerate(labels):
        w, h = _text_size(draw, name, font)
        y = top + k * cell + (cell - h) // 2
        draw.text((left - _PAD - w, y), name, fill="black", font=font)
        # a column label, written sideways
        strip = Image.new("L", (w + 4, line_h), 0)
        ImageDraw.Draw(strip).text((2, 0), name, fill=255, font=font)
        strip = strip.rotate(90, expand=True)
        x = left + k * cell + (cell - strip.width) // 2
        image.paste((0, 0, 0), (x, top - _PAD - strip.height), strip)
    for i in range(n):
        for j in range(n):
            v = values[i, j]
            x0, y0 = left + j * cell, top + i * cell
            fill = colour(v, scale) if math.isfinite(v) else (200, 200, 200)
            draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), fill=fill, outline="white")
            if texts[i][j]:
                luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
                w, h = _text_size(draw, texts[i][j], font)
                draw.text(
                    (x0 + (cell - w) // 2, y0 + (cell - h) // 2),
                    texts[i][j],
                    fill="black" if luminance > 140 else "white",
                    font=font,
                )
    _legend(draw, font, left, top + n * cell + 8, max(n * cell, 120), line_h, scale, places)
    if caption:
        draw.text((_PAD, height - line_h - 2), caption, fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return path


def _legend(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    x: int,
    y: int,
    width: int,
    line_h: int,
    scale: float,
    places: int,
) -> None:
    """A colour bar from ``-scale`` to ``+scale`` with its two ends and 0 written under it."""
    bar_h = line_h // 2 + 2
    for k in range(width):
        v = (2.0 * k / max(width - 1, 1) - 1.0) * scale
        draw.line((x + k, y, x + k, y + bar_h), fill=colour(v, scale))
    for v, anchor in ((-scale, 0.0), (0.0, 0.5), (scale, 1.0)):
        text = f"{v:+.{places}f}" if v else "0"
        w, _ = _text_size(draw, text, font)
        tx = x + int(anchor * (width - 1)) - int(anchor * w)
        draw.text((tx, y + bar_h + 2), text, fill="black", font=font)
