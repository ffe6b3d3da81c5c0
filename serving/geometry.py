"""How an uploaded image maps onto the model input, and back: the box a dense map covers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Geometry:
    """Where the image's content sits in the model input, and which part of the image it is.

    ``original`` is the image's (H, W) after EXIF orientation. ``resized`` and ``offset`` are the
    (H, W) and (top, left) of the image content inside the model input (letterbox leaves bars
    around it). ``crop`` is the (top, left, H, W) of the original that center-crop kept.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    crop: tuple[int, int, int, int] | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, width, height) in the original image's pixels that the content covers.

        A dense map of the content (at any resolution) is laid back on the image by stretching
        it over this box: the whole image after stretch or letterbox, the kept part after crop.
        """
        if self.crop is not None:
            top, left, h, w = self.crop
            return (left, top, w, h)
        return (0, 0, self.original[1], self.original[0])


def identity(height: int, width: int) -> Geometry:
    """The geometry of an input that is already the model's size (a v2 tensor, say)."""
    return Geometry((height, width), (height, width), (0, 0))
