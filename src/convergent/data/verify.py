"""The up-front verification pass of ``data.verify``: every image of a map-style image dataset
(image-folder, image-text pairs) is opened and decoded once when the dataset is built, exactly as
a training step would read it; those that fail are counted in the dataset's
:class:`~convergent.data.skips.SkipLog` (``"too large"``, or the dataset's unreadable reason) and
dropped, so the skip count is known before training starts. Without it, unreadable images are
found only when a step reads them (:func:`~convergent.data.collate.read_next`).
"""

import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from convergent.data.collate import note_unreadable
from convergent.data.skips import describe_counts, failure


def verify_images(dataset, kind: str):
    """Decode every image of ``dataset`` once (``dataset.image(j)``, in this process); count
    those that fail in ``dataset.skips`` (reason ``kind``, or a
    :class:`~convergent.data.skips.SkipSample`'s such as ``"too large"``), drop them
    (``dataset.select``) and print one line with the counts (a rich progress bar meanwhile, on a
    terminal). Returns ``dataset``; ValueError naming its source if no image decodes.

    ``dataset`` has ``paths``, ``image(j)``, ``select(keep)``, ``skips``, ``source`` and
    ``_bad`` (see :func:`~convergent.data.collate.read_next`)."""
    n, t0 = len(dataset), time.perf_counter()
    good, found = [], Counter()
    with _progress(n) as advance:
        for j in range(n):
            try:
                dataset.image(j)
                good.append(j)
            except Exception as e:  # noqa: BLE001 - whatever a reader raises, the image is unusable
                reason, detail = failure(e, kind)
                note_unreadable(dataset, j, detail, reason)
                found[reason] += 1
            advance()
    why = describe_counts(found, sorted(found))
    if not good:
        raise ValueError(f"none of the {n} images could be decoded ({why}): {dataset.source}")
    dataset.select(good)
    print(f"verified {n} images in {time.perf_counter() - t0:.1f} s: {len(good)} readable, "
          f"{n - len(good)} skipped ({why})")  # fmt: skip
    return dataset


@contextmanager
def _progress(total: int) -> Iterator[Callable[[], None]]:
    """``advance()`` of a rich progress bar on a terminal; of nothing otherwise."""
    if not sys.stdout.isatty():
        yield lambda: None
        return
    bar = Progress(TextColumn("verify images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    task = bar.add_task("verify", total=total)
    with bar:
        yield lambda: bar.update(task, advance=1)
