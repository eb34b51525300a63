"""Limits on what a dataset reads, in one torch- and Pillow-free place (the registry and the
run config name them without importing either).

:data:`MAX_IMAGE_PIXELS` — the default pixel cap of every image reader (``data.max_image_pixels``).
An image whose header declares more pixels (width × height) is skipped as ``"too large"`` before
anything is decoded (see :mod:`convergent.data.images`). The value, 64 Mi pixels (8192 × 8192):

* admits every camera photo (a 61-megapixel full-frame sensor is 9504 × 6336) and 8K frames;
* bounds the memory of one decode: 192 MiB as RGB (256 MiB with alpha, plus the copies made
  flattening it), per process (each DataLoader worker decodes its own), and a few seconds of work;
* is below Pillow's own warning limit (``PIL.Image.MAX_IMAGE_PIXELS``, 89.5 megapixels), so no
  ``DecompressionBombWarning`` reaches a run, and far below its error limit (twice that), which
  is counted as ``"too large"`` as well.

Images fed to a model are 32-384 px a side; anything this large is a scan, a panorama or a
malicious file, not a training sample. Raise the cap (or set it to None) for such data; above
twice ``PIL.Image.MAX_IMAGE_PIXELS`` Pillow refuses the file itself unless that is raised too.
"""

MAX_IMAGE_PIXELS = 64 * 1024 * 1024
"""Default cap on width × height of an image read by a dataset (64 Mi = 67,108,864 pixels)."""
