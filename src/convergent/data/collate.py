"""Batching dict items, and passing over unreadable samples (the reports of them leave
DataLoader workers in the items' ``"skipped"`` lists, joined by :func:`collate`; the dataset's
:class:`~convergent.data.skips.SkipLog` merges them)."""

import logging
from collections.abc import Callable
from typing import Any

import torch

from convergent.data.skips import failure

log = logging.getLogger(__name__)


def collate(items: list[dict]) -> dict:
    """Stack a list of item dicts into one batch dict.

    Tensors are stacked ``(B, ...)``; ints become int64 ``(B,)``, floats float32 ``(B,)``;
    the ``"skipped"`` lists of ``(path, reason)`` are concatenated; anything else (e.g.
    strings) becomes a list. Every item must have the same keys.
    """
    if not items:
        raise ValueError("collate: empty list of items")
    keys = items[0].keys()
    for k, item in enumerate(items):
        if item.keys() != keys:
            raise KeyError(f"collate: item {k} has keys {sorted(item)}, item 0 has {sorted(keys)}")
    batch = {}
    for key in keys:
        values = [item[key] for item in items]
        first = values[0]
        if key == "skipped":
            batch[key] = [entry for v in values for entry in v]
        elif isinstance(first, torch.Tensor):
            batch[key] = torch.stack(values)
        elif isinstance(first, bool):
            batch[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(first, int):
            batch[key] = torch.tensor(values, dtype=torch.int64)
        elif isinstance(first, float):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = values
    return batch


def read_next(dataset, i: int, read: Callable[[int], Any], kind: str) -> tuple[int, Any, list[tuple[str, str]]]:
    """``(j, read(j), passed)`` for the first ``j`` of ``i, i+1, ...`` (wrapping around) that ``read``
    does not raise on: deterministic, so the same index always yields the same sample. ``passed``
    names every sample passed over, ``(path, reason)``; one found unreadable now is noted with
    :func:`note_unreadable`, counted as ``kind`` (detail ``"<kind> (<error>)"``) or, when ``read``
    raised a :class:`~convergent.data.skips.SkipSample` (an image too large), as its reason.
    ``dataset`` has ``paths``, ``skips``, ``source`` and ``_bad`` (index -> reason, what this
    process found)."""
    n = len(dataset.paths)
    passed = []
    for j in range(i, i + n):
        j %= n
        if j not in dataset._bad:
            try:
                return j, read(j), passed
            except Exception as e:  # Pillow raises many types for bad data; all mean "skip"
                reason, detail = failure(e, kind)
                note_unreadable(dataset, j, detail, reason)
        passed.append((dataset.paths[j], dataset._bad[j]))
    raise RuntimeError(f"none of the {n} image files could be decoded: {dataset.source}")


def note_unreadable(dataset, j: int, reason: str, kind: str) -> None:
    """Note sample ``j`` of ``dataset`` as unreadable in this process (``dataset._bad``), count
    it once as ``kind`` in ``dataset.skips`` (named with ``reason``), and log it."""
    dataset._bad[j] = reason
    path = dataset.paths[j]
    dataset.skips.found(path, kind, reason)
    log.warning("skipping %s: %s", path, reason)
