"""Text datasets: items ``{"text": str, "label": int}`` (label -1 when unlabelled), and the
collator that tokenises a list of them into a batch.

    ds = build_dataset("text-lines", "train", root="corpus/")
    loader = DataLoader(ds.with_tokenizer(tok, max_length=128), batch_size=32, collate_fn=ds.collate_fn)
    # batch: input_ids (B, L) int64, attention_mask (B, L) int64, special_tokens_mask (B, L) bool, label (B,)

Every text dataset is a :class:`~convergent.data.protocol.Dataset` (``classes``, ``skips``,
``source``, ``heldout``, ``batch_keys``, ``collate_fn``) with ``labels`` ((N,) int64) and
``is_text``: until a tokenizer is attached with :meth:`TextDataset.with_tokenizer` batches hold
``text`` (a list) and ``label``; then the keys of its :class:`TextCollator`.

``text-lines`` (:func:`build`) reads ``root``:

* a file: plain text (one document per line) or JSONL (``.jsonl``/``.ndjson``: a ``"text"``
  field, optional ``"label"``: class name or index); every split reads it (``heldout`` False);
* a directory with split files ``{train,val,validation,valid,dev,test}.{txt,text,jsonl,ndjson}``
  or split folders of such files: ``split`` picks one (``test`` and ``val`` stand in for each
  other, as for image-folder); class names are the sorted union over all split files, so labels
  agree between splits;
* a directory without split files: all its text/JSONL files, read by every split.

Files are indexed once (see :mod:`convergent.data.lines`: bad lines are skipped and counted,
never raised; so is a label of the other kind than most, a class name among indices or the
reverse, within a file and across files) and items are read lazily by seeking, each process
opening its own handles.
"""

import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch

from convergent.data.lines import (
    JSONL_SUFFIXES,
    MAX_CHARS,
    REASONS,
    TEXT_SUFFIXES,
    FileIndex,
    index_file,
    one_label_kind,
    read_line,
)
from convergent.data.protocol import Dataset
from convergent.data.skips import SkipLog, describe_counts
from convergent.data.splits import finish, resolve

log = logging.getLogger(__name__)

SUFFIXES = TEXT_SUFFIXES + JSONL_SUFFIXES


class TextCollator:
    """Tokenise items ``{"text", "label"}`` into ``input_ids``/``attention_mask``/
    ``special_tokens_mask`` (see :meth:`convergent.data.tokenizer.Tokenizer.encode_batch`) plus
    ``label`` (B,) int64 (and ``word_ids`` with ``word_ids``). Picklable, for DataLoader workers."""

    def __init__(self, tokenizer, max_length: int = 512, padding: str = "longest", word_ids: bool = False):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.padding = padding
        self.word_ids = word_ids
        self.batch_keys = ("input_ids", "attention_mask", "special_tokens_mask", "label") + (
            ("word_ids",) if word_ids else ()
        )
        """The keys of the batches it makes."""

    def __call__(self, items: Sequence[dict]) -> dict:
        texts = [it["text"] for it in items]
        batch = self.tokenizer.encode_batch(texts, self.max_length, self.padding, word_ids=self.word_ids)
        batch["label"] = torch.tensor([it["label"] for it in items], dtype=torch.int64)
        return batch


class TextDataset(Dataset):
    """Base of the text datasets: ``__getitem__`` is ``{"text": self.text(i), "label": labels[i]}``."""

    name = "texts"
    batch_keys = ("text", "label")
    """Until :meth:`with_tokenizer`; then those of its :class:`TextCollator`."""
    is_text = True
    labels: torch.Tensor
    """``(N,)`` int64, -1 when unlabelled."""

    def text(self, i: int) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"text": self.text(i), "label": int(self.labels[i])}

    def texts(self) -> Iterator[str]:
        """All texts in order, one at a time (e.g. to train a tokenizer)."""
        return (self.text(i) for i in range(len(self)))

    def with_tokenizer(
        self, tokenizer, max_length: int = 512, padding: str = "longest", word_ids: bool = False
    ) -> "TextDataset":
        """Set :attr:`collate_fn` to a :class:`TextCollator` (and :attr:`batch_keys` to its keys);
        returns ``self``."""
        self.collate_fn = TextCollator(tokenizer, max_length, padding, word_ids)
        self.batch_keys = self.collate_fn.batch_keys
        return self


class TextList(TextDataset):
    """Texts held in memory (small corpora, e.g. WordNet glosses)."""

    def __init__(self, texts: Sequence[str], labels: Sequence[int], classes: Sequence[str], source: str,
                 skips: SkipLog | None = None):  # fmt: skip
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        super().__init__(source, classes, skips)
        self._texts = list(texts)
        self.labels = torch.tensor(list(labels), dtype=torch.int64)

    def text(self, i: int) -> str:
        return self._texts[i]


class TextLines(TextDataset):
    """The usable lines of one or more text/JSONL files, read lazily by seeking.

    ``paths``: files, or their :class:`~convergent.data.lines.FileIndex` already made by
    :func:`~convergent.data.lines.index_file` with the same ``text_field`` and ``max_chars``;
    ``fmt``: None = by suffix; ``max_chars``: longer lines are skipped; ``classes``: class names
    in label order (None: the sorted names found, or ``"0".."K-1"`` for integer labels).
    ``skips`` counts skipped lines by reason and names the first 1000 per file.
    """

    name = "text-lines"

    def __init__(
        self,
        paths: str | Path | FileIndex | Sequence[str | Path | FileIndex],
        fmt: str | None = None,
        text_field: str = "text",
        label_field: str | None = "label",
        max_chars: int = MAX_CHARS,
        classes: Sequence[str] | None = None,
        source: str | None = None,
    ):
        paths = [paths] if isinstance(paths, (str, Path, FileIndex)) else list(paths)
        if not paths:
            raise ValueError("TextLines needs at least one file")
        indexes = [
            p if isinstance(p, FileIndex) else index_file(p, fmt, text_field, label_field, max_chars) for p in paths
        ]
        indexes = one_label_kind(indexes, text_field, label_field, max_chars)
        for ix in indexes:
            if not len(ix.offsets):
                n = sum(ix.counts.values())
                why = f"{n} lines skipped: {describe_counts(ix.counts, REASONS)}" if n else "empty file"
                raise ValueError(f"{ix.path}: no usable line ({why})")
        skips = SkipLog(sum((ix.counts for ix in indexes), Counter()), [s for ix in indexes for s in ix.skipped])
        super().__init__("", classes if classes is not None else class_names(indexes), skips)
        self.paths = [ix.path for ix in indexes]
        self.formats = [ix.fmt for ix in indexes]
        self.offsets = np.concatenate([ix.offsets for ix in indexes])  # (N,) int64
        self.file_ids = np.concatenate([np.full(len(ix.offsets), k, np.int32) for k, ix in enumerate(indexes)])
        self.labels = torch.from_numpy(np.concatenate([_label_indices(ix, self.classes) for ix in indexes]))
        self.text_field, self.max_chars = text_field, max_chars
        files = self.paths[0] if len(paths) == 1 else f"{len(paths)} files ({self.paths[0]}, ...)"
        self.source = source or f"text-lines: {len(self)} lines from {files}"
        self._handles: dict[int, object] = {}
        self._pid = os.getpid()
        if self.skips.total:
            log.warning("%s; %s", self.source, self.summary())

    def summary(self) -> str:
        """One line: how many lines are used and skipped, by reason."""
        return f"{len(self)} lines used, {self.skips.total} skipped ({self.skips.describe(REASONS)})"

    def select(self, keep: np.ndarray) -> "TextLines":
        """Keep only the items at indices ``keep`` (in that order); returns ``self``."""
        self.offsets, self.file_ids = self.offsets[keep], self.file_ids[keep]
        self.labels = self.labels[torch.from_numpy(np.asarray(keep, dtype=np.int64))]
        return self

    def text(self, i: int) -> str:
        k, offset = int(self.file_ids[i]), int(self.offsets[i])
        try:
            return read_line(self._handle(k), offset, self.formats[k], self.text_field, self.max_chars)
        except (ValueError, KeyError, TypeError) as e:  # the index said this line was usable
            raise RuntimeError(f"{self.paths[k]}: the line at byte {offset} changed since it was indexed ({e})") from e

    def _handle(self, k: int):
        if self._pid != os.getpid():  # a forked worker: never share the parent's file positions
            self._handles, self._pid = {}, os.getpid()
        if k not in self._handles:
            self._handles[k] = open(self.paths[k], "rb")
        return self._handles[k]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}


def class_names(indexes: Sequence[FileIndex]) -> list[str]:
    """Sorted union of string labels, ``"0".."K-1"`` for integer labels, ``[]`` if unlabelled."""
    kinds = {ix.label_kind for ix in indexes} - {"none"}
    if len(kinds) > 1:
        raise ValueError("label fields hold class names in some files and integers in others: " + ", ".join(
            f"{ix.path} ({ix.label_kind})" for ix in indexes if ix.label_kind != "none"
        ))  # fmt: skip
    if kinds == {"str"}:
        return sorted({n for ix in indexes for n in ix.names})
    if kinds == {"int"}:
        return [str(c) for c in range(1 + max(int(ix.labels.max()) for ix in indexes if len(ix.labels)))]
    return []


def _label_indices(ix: FileIndex, classes: list[str]) -> np.ndarray:
    """``(N,)`` int64 labels of ``ix`` as indices into ``classes`` (-1 stays -1)."""
    if ix.label_kind == "str":
        unknown = [n for n in ix.names if n not in classes]
        if unknown:
            raise ValueError(f"{ix.path}: labels {unknown[:5]} are not among the classes {classes}")
        table = np.array([classes.index(n) for n in ix.names] + [-1], dtype=np.int64)
        return table[ix.labels]  # -1 indexes the trailing -1
    if ix.label_kind == "int" and int(ix.labels.max()) >= len(classes):
        raise ValueError(f"{ix.path}: label {int(ix.labels.max())} out of range for {len(classes)} classes")
    return ix.labels.copy()


def build(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
          max_image_pixels: int | None = None, verify: bool = False) -> TextLines:  # fmt: skip
    """The lines of ``root`` for ``split`` (layouts: module docstring). ``img_size``,
    ``in_chans``, ``max_image_pixels`` and ``verify`` are ignored (the registry passes them to
    every builder)."""
    if root is None:
        raise ValueError("text-lines needs a file or directory: set data.root (--data.root PATH)")
    files, everything, heldout = resolve("text-lines", Path(root).expanduser(), split, SUFFIXES, folders=True)
    found = one_label_kind([index_file(p) for p in everything])  # each file scanned once (the cache holds only 16)
    indexes = dict(zip(everything, found))
    labelled = any(indexes[p].label_kind != "none" for p in files)
    classes = class_names(list(indexes.values())) if labelled else None
    dataset = TextLines([indexes[p] for p in files], classes=classes)
    return finish(dataset, "text-lines", split, files, heldout, limit, "lines")
