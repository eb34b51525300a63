"""One indexing pass over a text or JSONL file: the byte offsets of its usable lines, their
labels, and every unusable line with the reason (torch-free).

A line is usable when it is valid UTF-8, holds no control byte but tab, line breaks and form
feed (binary files do: NUL, ...), has at most ``max_chars`` characters, is not empty or
whitespace, and (JSONL) is a JSON object whose ``text_field`` is a non-empty string and whose
``label_field``, if present and not null or -1, is a class name (str) or index (int >= 0).
Anything else is skipped and counted by reason (:data:`REASONS`), never raised. A line longer
than the limit is never held whole: it is read in bounded pieces and passed over.

Offsets let a dataset read line ``i`` later by seeking (:func:`read_line`), so only 16 bytes
per usable line (offset + label) stay in memory, whatever the file size.
"""

import functools
import itertools
import json
import re
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convergent.data.skips import skip

MAX_CHARS = 100_000
"""Default longest usable line, in characters."""
REASONS = ("empty", "not UTF-8", "binary", "too long", "invalid JSON", "missing field", "bad label")
"""Reasons a line is skipped, the keys of :attr:`FileIndex.counts`."""
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_SUFFIXES = (".txt", ".text")
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".zip")
_BOM = b"\xef\xbb\xbf"
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1f]")
"""Control bytes that do not occur in text (tab, newlines, form feed are allowed): a binary line."""
_PIECE = 1 << 20  # bytes read at a time while passing over a too-long line


@dataclass
class FileIndex:
    """The usable lines of one file."""

    path: str
    fmt: str
    """``"text"`` (one document per line) or ``"jsonl"``."""
    offsets: np.ndarray
    """``(N,)`` int64 byte offset of each usable line."""
    labels: np.ndarray
    """``(N,)`` int64: class index (int labels), index into :attr:`names` (str labels), or -1."""
    names: tuple[str, ...] = ()
    """String labels in order of first appearance (empty unless labels are names)."""
    label_kind: str = "none"
    """``"none"``, ``"int"`` or ``"str"``."""
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """``("path:line", reason)`` of the first :data:`~convergent.data.skips.MAX_LISTED` skipped lines."""
    counts: Counter = field(default_factory=Counter)
    """Skipped lines by reason (all of them)."""


def file_format(path: str | Path) -> str:
    """``"jsonl"`` for ``.jsonl``/``.ndjson`` files, ``"text"`` otherwise; ValueError if compressed."""
    suffix = Path(path).suffix.lower()
    if suffix in COMPRESSED_SUFFIXES:
        raise ValueError(f"{path}: compressed files cannot be read by seeking; decompress it first")
    return "jsonl" if suffix in JSONL_SUFFIXES else "text"


def index_file(
    path: str | Path,
    fmt: str | None = None,
    text_field: str = "text",
    label_field: str | None = "label",
    max_chars: int = MAX_CHARS,
) -> FileIndex:
    """Index ``path`` (``fmt`` None: from the suffix, see :func:`file_format`). Results are cached
    by path, size and modification time, so building several splits re-reads nothing.
    FileNotFoundError if ``path`` is not a file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = fmt or file_format(path)
    if fmt not in ("text", "jsonl"):
        raise ValueError(f"{path}: unknown format {fmt!r}; expected 'text' or 'jsonl'")
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    stat = path.stat()
    return _index_cached(str(path), stat.st_size, stat.st_mtime_ns, fmt, text_field, label_field, max_chars)


@functools.lru_cache(maxsize=16)
def _index_cached(path, _size, _mtime, fmt, text_field, label_field, max_chars) -> FileIndex:
    found = _scan(path, fmt, text_field, label_field, max_chars)
    found.offsets.setflags(write=False)  # shared by every dataset built from the cache
    found.labels.setflags(write=False)
    return found


def _scan(path: str, fmt: str, text_field: str, label_field: str | None, max_chars: int) -> FileIndex:
    offsets, labels = array("q"), array("q")
    names: dict[str, int] = {}
    kinds: set[str] = set()
    index = FileIndex(path, fmt, np.zeros(0, np.int64), np.zeros(0, np.int64))
    limit = 4 * max_chars + 2  # UTF-8 needs at most 4 bytes a character, plus "\r\n"
    with open(path, "rb") as f:
        pos = len(_BOM) if f.read(len(_BOM)) == _BOM else 0  # a UTF-8 byte-order mark is not text
        f.seek(pos)
        for lineno in itertools.count(1):
            raw = f.readline(limit)
            if not raw:
                break
            start, pos = pos, pos + len(raw)
            if len(raw) == limit and not raw.endswith(b"\n"):  # cut at the limit: pass over the rest
                pos += _pass_over(f)
                reason, detail, label = "too long", f"too long (> {max_chars} characters)", None
            else:
                reason, detail, label = _check(raw, fmt, text_field, label_field, max_chars)
            if reason is not None:
                skip(index.counts, index.skipped, f"{path}:{lineno}", reason, detail)
                continue
            offsets.append(start)
            if label is None:
                labels.append(-1)
            else:
                kinds.add("str" if isinstance(label, str) else "int")
                labels.append(names.setdefault(label, len(names)) if isinstance(label, str) else label)
    if len(kinds) > 1:
        raise ValueError(f"{path}: {label_field!r} holds both class names and integers; use one kind")
    index.offsets = np.frombuffer(offsets, dtype=np.int64).copy()
    index.labels = np.frombuffer(labels, dtype=np.int64).copy()
    index.names, index.label_kind = tuple(names), kinds.pop() if kinds else "none"
    return index


def _pass_over(f) -> int:
    """Read the rest of the current line in bounded pieces; returns the bytes read."""
    n = 0
    while piece := f.readline(_PIECE):
        n += len(piece)
        if piece.endswith(b"\n"):
            break
    return n


def _check(raw: bytes, fmt: str, text_field: str, label_field: str | None, max_chars: int):
    """``(reason, detail, label)``: reason None when the line is usable (label: None, int or str)."""
    if m := _CONTROL.search(raw):
        return "binary", f"binary (control byte {m.group()[0]:#04x} at column {m.start() + 1})", None
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return "not UTF-8", f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})", None
    line = line.strip()
    if not line:
        return "empty", "empty line", None
    if len(line) > max_chars:
        return "too long", f"too long ({len(line)} > {max_chars} characters)", None
    if fmt == "text":
        return None, None, None
    try:
        obj = json.loads(line)
    except ValueError as e:
        return "invalid JSON", f"invalid JSON ({e})", None
    if not isinstance(obj, dict):
        return "missing field", f"not a JSON object ({type(obj).__name__})", None
    text = obj.get(text_field)
    if not isinstance(text, str):
        return "missing field", f"no string field {text_field!r}", None
    if not text.strip():
        return "empty", f"empty {text_field!r}", None
    if m := _CONTROL.search(text.encode("utf-8")):
        return "binary", f"binary (control character {m.group()[0]:#04x} in {text_field!r})", None
    label = obj.get(label_field) if label_field else None
    if label is None or label == -1:  # unlabelled
        return None, None, None
    if not (isinstance(label, str) and label) and not (type(label) is int and label >= 0):
        return "bad label", f"bad label {label!r} (expected a class name or an index >= 0)", None
    return None, None, label


def read_line(f, offset: int, fmt: str, text_field: str, max_chars: int) -> str:
    """The text of the usable line at ``offset`` of the open binary file ``f``."""
    f.seek(offset)
    line = f.readline(4 * max_chars + 2).decode("utf-8").strip()
    if fmt == "jsonl":
        line = json.loads(line)[text_field].strip()
    return line

