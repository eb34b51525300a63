"""Opening an image without decoding more than a pixel cap allows.

``Image.open`` reads only the header; :func:`open_image` checks the size it declares against the
cap (``data.max_image_pixels``, default :data:`~convergent.data.limits.MAX_IMAGE_PIXELS`) before
the caller decodes anything (``draft``, ``load``, ``convert``), so a 12000 × 12000 image costs a
header read instead of seconds and hundreds of MiB. It is refused with :class:`ImageTooLarge`, a
:class:`~convergent.data.skips.SkipSample` every reader counts as ``"too large"``. Pillow's own
decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) ends the same way: its
``DecompressionBombError`` becomes :class:`ImageTooLarge`, and its ``DecompressionBombWarning``
is silenced while a cap of ours decides.
"""

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

import numpy as np
from PIL import Image

from convergent.data.limits import MAX_IMAGE_PIXELS
from convergent.data.skips import SkipSample

IMAGE_EXTENSIONS = frozenset(
    {".bmp", ".gif", ".jpeg", ".jpg", ".png", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp"}
)
"""File name endings read as images (lower case)."""
_PILLOW_SIZE = re.compile(r"Image size \((\d+) pixels\)")
"""The pixel count in the message of Pillow's ``DecompressionBombError``."""


class ImageTooLarge(SkipSample):
    """An image declaring more pixels than allowed: ``"too large (<W>x<H> = <N> pixels > <cap>)"``."""

    reason = "too large"


def check_size(size: tuple[int, int], max_pixels: int | None) -> None:
    """Raise :class:`ImageTooLarge` when ``size`` ``(width, height)`` holds more than
    ``max_pixels`` pixels (None: no cap)."""
    w, h = size
    if max_pixels is not None and w * h > max_pixels:
        raise ImageTooLarge(f"too large ({w}x{h} = {w * h:,} pixels > {max_pixels:,})")


@contextmanager
def open_image(source: str | IO[bytes], max_pixels: int | None = MAX_IMAGE_PIXELS) -> Iterator[Image.Image]:
    """``Image.open(source)`` (a path or a binary file), closed on exit; :class:`ImageTooLarge`
    before any pixel is decoded when its header declares more than ``max_pixels`` (None: no cap
    but Pillow's own)."""
    try:
        with warnings.catch_warnings():
            if max_pixels is not None:  # the cap decides; Pillow's warning would only foretell it
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source)
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(_pillow_detail(e)) from e
    with img:
        check_size(img.size, max_pixels)
        yield img


def _pillow_detail(error: Image.DecompressionBombError) -> str:
    """The detail of an image Pillow itself refused as a decompression bomb."""
    found = _PILLOW_SIZE.search(str(error))
    pixels = f"{int(found[1]):,} pixels" if found else str(error)
    return f"too large ({pixels} > Pillow's limit, twice PIL.Image.MAX_IMAGE_PIXELS)"


def decode_array(source: str | IO[bytes], img_size: int, in_chans: int,
                 max_pixels: int | None = MAX_IMAGE_PIXELS) -> np.ndarray:  # fmt: skip
    """``(img_size, img_size, in_chans)`` uint8: RGB (alpha flattened onto white) or L,
    centre-cropped to a square and resized (bilinear, antialiased) to ``img_size``. ``source``: a
    file name or a binary file. :class:`ImageTooLarge` before decoding when the header declares
    more than ``max_pixels`` pixels (None: no cap but Pillow's). Torch-free, so a deployment that
    runs a model with onnxruntime reads images exactly as training did."""
    with open_image(source, max_pixels) as img:
        img.draft("RGB" if in_chans == 3 else "L", (img_size, img_size))  # JPEG: decode at reduced scale
        if img.mode in ("LA", "La", "PA", "RGBa") or "transparency" in img.info:
            img = img.convert("RGBA")  # palette/L/RGB with a transparent colour, or alpha
        if img.mode == "RGBA":
            white = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, img)
        img = img.convert("RGB" if in_chans == 3 else "L")
        w, h = img.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2  # centred square, whole pixels
        if side != w or side != h:
            img = img.crop((left, top, left + side, top + side))  # so no pixel outside bleeds in
        img = img.resize((img_size, img_size), Image.BILINEAR)
        return np.asarray(img, dtype=np.uint8).reshape(img_size, img_size, in_chans).copy()
