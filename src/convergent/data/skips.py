"""Counting and naming skipped samples (torch-free): every dataset that passes over bad input
counts it by reason (all of it) and names where it was (the first :data:`MAX_LISTED`).

:class:`SkipLog` is a dataset's record (``dataset.skips``, see :mod:`convergent.data.protocol`);
:func:`skip` is the same rule on a bare ``(Counter, list)`` pair, for the torch-free indexers
(:mod:`convergent.data.lines`, the pairs-file reader) that hand theirs to a dataset.
A reader that finds a sample unusable for a reason of its own raises :class:`SkipSample`;
:func:`failure` turns whatever a reader raised into the ``(reason, detail)`` that is counted.
"""

from collections import Counter
from collections.abc import Iterable, Sequence

MAX_LISTED = 1000
"""Skipped samples named in a ``skipped`` list; the counts always cover all of them."""


def skip(counts: Counter, skipped: list, where: str, reason: str, detail: str | None = None) -> None:
    """Count one sample skipped for ``reason``; name it in ``skipped`` as ``(where, detail or
    reason)`` while that holds fewer than :data:`MAX_LISTED`."""
    counts[reason] += 1
    if len(skipped) < MAX_LISTED:
        skipped.append((where, detail or reason))


class SkipSample(Exception):
    """Raised by a reader for a sample to pass over for a named reason: ``str(e)`` is the detail
    ``"<reason> (<what was found>)"`` and :attr:`reason` the count's key (e.g.
    :class:`~convergent.data.images.ImageTooLarge`, ``"too large"``)."""

    reason = "skipped"


def failure(error: Exception, kind: str) -> tuple[str, str]:
    """``(reason, detail)`` of a sample whose reading raised ``error``: a :class:`SkipSample`
    names its own; anything else is counted as ``kind``, detailed ``"<kind> (<Type>: <message>)"``."""
    if isinstance(error, SkipSample):
        return error.reason, str(error)
    return kind, f"{kind} ({type(error).__name__}: {error})"


def describe_counts(counts: Counter, reasons: Sequence[str]) -> str:
    """``"3 empty, 1 not UTF-8"`` (in the order of ``reasons``); ``"none"`` if nothing was skipped."""
    return ", ".join(f"{counts[r]} {r}" for r in reasons if counts.get(r)) or "none"


def reason_of(detail: str) -> str:
    """The reason (the count's key) of a detail ``"<reason> (<what was found>)"``: the text
    before the first ``" ("`` (``"unreadable image (OSError: ...)"`` -> ``"unreadable image"``)."""
    return detail.split(" (")[0]


class SkipLog:
    """The samples one dataset passed over: :attr:`counts` by reason (all of them) and
    :attr:`listed`, ``(where, detail)`` of the first :data:`MAX_LISTED`.

    Samples skipped while the dataset is built are :meth:`add`-ed, each once. Samples found
    unusable while reading (an image that does not decode) are :meth:`found`: counted once per
    ``where``, however often they are met again (another epoch, the same file reported by a
    DataLoader worker through :meth:`merge`). ``counts`` and ``listed`` may be given: what an
    indexer already counted (its list is kept as it is, even when longer than the cap).
    """

    def __init__(self, counts: Counter | None = None, listed: Iterable[tuple[str, str]] = ()):
        self.counts: Counter = Counter(counts or {})
        """Skipped samples by reason."""
        self.listed: list[tuple[str, str]] = list(listed)
        """``(where, detail)`` of the first skipped samples (the counts cover all)."""
        self._seen: set[str] = {where for where, _ in self.listed}  # named or found: never counted again

    @property
    def total(self) -> int:
        """Samples skipped, all reasons."""
        return sum(self.counts.values())

    def add(self, where: str, reason: str, detail: str | None = None) -> None:
        """Count one sample skipped for ``reason`` (named ``(where, detail or reason)`` while
        fewer than :data:`MAX_LISTED` are)."""
        named = len(self.listed)
        skip(self.counts, self.listed, where, reason, detail)
        if len(self.listed) > named:
            self._seen.add(where)

    def found(self, where: str, reason: str, detail: str | None = None) -> bool:
        """A sample found unusable while reading: :meth:`add` it unless ``where`` is already
        known; returns whether it was new."""
        if where in self._seen:
            return False
        self._seen.add(where)
        self.add(where, reason, detail)
        return True

    def merge(self, reports: Iterable[tuple[str, str]]) -> int:
        """:meth:`found` for each ``(where, detail)`` a batch carried out of a DataLoader worker
        (its ``"skipped"`` list; the reason is :func:`reason_of` the detail); returns how many
        were new."""
        return sum(self.found(where, reason_of(detail), detail) for where, detail in reports)

    def copy(self) -> "SkipLog":
        """An independent copy (datasets built from one cached read each keep their own)."""
        log = SkipLog(self.counts, self.listed)
        log._seen = set(self._seen)
        return log

    def describe(self, reasons: Sequence[str]) -> str:
        """:func:`describe_counts` of :attr:`counts`."""
        return describe_counts(self.counts, reasons)
