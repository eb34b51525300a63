"""One indexing pass over a text or JSONL file: the byte offsets of its usable lines, their
labels, and every unusable line with the reason (torch-free).

A line is usable when it is valid UTF-8, holds no control byte but tab, line breaks and form
feed (binary files do: NUL, ...), has at most ``max_chars`` characters, is not empty or
whitespace, and (JSONL) is a JSON object whose ``text_field`` is a non-empty string and whose
``label_field``, if present and not null or -1, is a class name (str) or index (int >= 0) of the
file's label kind. Anything else is skipped and counted by reason (:data:`REASONS`), never raised.

**One label kind.** Labels are class names or indices, not both: when a file holds both, the
kind most of its labelled lines hold wins (a tie: the kind met first) and the lines of the other
kind are skipped as ``"bad label"`` (``"path:line"``, e.g. ``bad label 'weird' (a class name
among integer labels)``); the file is read a second time to name them, only then.
:func:`one_label_kind` does the same across files. A line longer
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
    """``"none"``, ``"int"`` or ``"str"`` (never both: see the module docstring)."""
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
    label_kind: str | None = None,
) -> FileIndex:
    """Index ``path`` (``fmt`` None: from the suffix, see :func:`file_format`). Results are cached
    by path, size and modification time, so building several splits re-reads nothing.
    ``label_kind``: ``"int"`` or ``"str"`` skips lines labelled with the other kind; None: the
    kind most labelled lines hold. FileNotFoundError if ``path`` is not a file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    fmt = fmt or file_format(path)
    if fmt not in ("text", "jsonl"):
        raise ValueError(f"{path}: unknown format {fmt!r}; expected 'text' or 'jsonl'")
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    if label_kind not in (None, "int", "str"):
        raise ValueError(f"label_kind must be None, 'int' or 'str', got {label_kind!r}")
    stat = path.stat()
    return _index_cached(str(path), stat.st_size, stat.st_mtime_ns, fmt, text_field, label_field, max_chars,
                         label_kind)  # fmt: skip


@functools.lru_cache(maxsize=16)
def _index_cached(path, _size, _mtime, fmt, text_field, label_field, max_chars, label_kind) -> FileIndex:
    found, kinds = _scan(path, fmt, text_field, label_field, max_chars, label_kind)
    if len(kinds) > 1:  # class names and indices: read again, skipping the lines of the fewer kind
        found, _ = _scan(path, fmt, text_field, label_field, max_chars, majority(kinds))
    found.offsets.setflags(write=False)  # shared by every dataset built from the cache
    found.labels.setflags(write=False)
    return found


def _scan(
    path: str, fmt: str, text_field: str, label_field: str | None, max_chars: int, label_kind: str | None
) -> tuple[FileIndex, Counter]:
    """``(index, labelled lines by kind)``; with both kinds and no ``label_kind`` the index's
    labels are meaningless (the caller scans again with one)."""
    offsets, labels = array("q"), array("q")
    names: dict[str, int] = {}
    kinds: Counter = Counter()  # labelled lines by kind, in order of first appearance
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
            if label is not None and label_kind not in (None, kind_of(label)):
                reason, detail = "bad label", mixed_label(label, label_kind)
            if reason is not None:
                skip(index.counts, index.skipped, f"{path}:{lineno}", reason, detail)
                continue
            offsets.append(start)
            if label is None:
                labels.append(-1)
            else:
                kinds[kind_of(label)] += 1
                labels.append(names.setdefault(label, len(names)) if isinstance(label, str) else label)
    index.offsets = np.frombuffer(offsets, dtype=np.int64).copy()
    index.labels = np.frombuffer(labels, dtype=np.int64).copy()
    index.names, index.label_kind = tuple(names), majority(kinds) or "none"
    return index, kinds


def kind_of(label: str | int) -> str:
    """``"str"`` for a class name, ``"int"`` for a class index."""
    return "str" if isinstance(label, str) else "int"


def majority(kinds: Counter) -> str | None:
    """The label kind most rows hold (``kinds``: rows by kind, in order of first appearance, so a
    tie goes to the kind met first); None when no row is labelled."""
    return max(kinds, key=kinds.__getitem__) if kinds else None


def mixed_label(label: str | int, kind: str) -> str:
    """The detail of a row skipped for a label of the other kind than ``kind``."""
    among = "integer labels" if kind == "int" else "class names"
    return f"bad label {label!r} ({'a class name' if isinstance(label, str) else 'an integer'} among {among})"


def one_label_kind(indexes: list[FileIndex], text_field: str = "text", label_field: str | None = "label",
                   max_chars: int = MAX_CHARS) -> list[FileIndex]:  # fmt: skip
    """``indexes`` with labels of one kind: when some files hold class names and others indices,
    the kind of most labelled lines of all wins (a tie: the first file's) and the files of the
    other kind are indexed again with it (``text_field``, ``label_field``, ``max_chars``: those
    they were made with), their labelled lines skipped as ``"bad label"``."""
    kinds: Counter = Counter()
    for ix in indexes:
        if ix.label_kind != "none":
            kinds[ix.label_kind] += int((ix.labels >= 0).sum())
    if len(kinds) < 2:
        return list(indexes)
    kind = majority(kinds)
    return [
        ix if ix.label_kind in ("none", kind) else index_file(ix.path, ix.fmt, text_field, label_field, max_chars, kind)
        for ix in indexes
    ]  # fmt: skip


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

