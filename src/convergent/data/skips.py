"""Counting and naming skipped samples (torch-free): every dataset that passes over bad input
counts it by reason (all of it) and names where it was (the first :data:`MAX_LISTED`)."""

from collections import Counter
from collections.abc import Sequence

MAX_LISTED = 1000
"""Skipped samples named in a ``skipped`` list; the counts always cover all of them."""


def skip(counts: Counter, skipped: list, where: str, reason: str, detail: str | None = None) -> None:
    """Count one sample skipped for ``reason``; name it in ``skipped`` as ``(where, detail or
    reason)`` while that holds fewer than :data:`MAX_LISTED`."""
    counts[reason] += 1
    if len(skipped) < MAX_LISTED:
        skipped.append((where, detail or reason))


def describe_counts(counts: Counter, reasons: Sequence[str]) -> str:
    """``"3 empty, 1 not UTF-8"`` (in the order of ``reasons``); ``"none"`` if nothing was skipped."""
    return ", ".join(f"{counts[r]} {r}" for r in reasons if counts.get(r)) or "none"
