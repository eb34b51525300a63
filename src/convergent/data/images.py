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

from PIL import Image

from convergent.data.limits import MAX_IMAGE_PIXELS
from convergent.data.skips import SkipSample

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
