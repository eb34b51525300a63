"""Image–text pairs (CLIP, ViLT) from a CSV/TSV, JSONL or JSON file and a folder of images.

    ds = build_dataset("image-text-pairs", "train", root="data/captions.csv")  # images beside the file
    ds = read_pairs("captions.jsonl", image_root="images/")
    loader = DataLoader(ds.with_tokenizer(tok, max_length=32), batch_size=64, collate_fn=ds.collate_fn)
    # batch: image (B, C, S, S) uint8, input_ids / attention_mask (B, L) int64,
    #        special_tokens_mask (B, L) bool, label (B,) int64, skipped [(path, reason), ...]

**An item is an image** with all its captions (``captions[i]``, a list). Reading item ``i``
gives ``{"image": uint8 (C, S, S), "text": str, "label": int, "skipped": [(path, reason), ...]}``
with one of its captions: ``caption="random"`` draws one uniformly from torch's global RNG (the
trainer seeds it per process and per DataLoader worker and restores it on resume, so runs are
reproducible); ``caption="first"`` always gives the first. The builders use ``"random"`` for
``train`` and ``"first"`` for other splits; set :attr:`ImageTextPairs.caption` to change it. One
item per image (not per caption) keeps two captions of one image out of a contrastive batch,
where each would be the other's false negative. Images are decoded with Pillow like
:mod:`convergent.data.image_folder` (alpha flattened onto white, centre square, resized to
``img_size``, RGB or L by ``in_chans``). ``label`` is -1 when the file has none.

For retrieval, ``captions`` maps every image to all of its captions; :meth:`ImageTextPairs.texts`
lists all captions flat and :attr:`ImageTextPairs.image_of_caption` ``(M,)`` the image of each.

**Files.** ``.csv`` / ``.tsv``: a header row naming an ``image`` column and a ``text`` (or
``caption``) column, optional ``label``; several rows may name one image (several captions).
``.jsonl`` / ``.ndjson``: one object per line; ``.json``: a list of objects; each object has
``"image"`` and ``"text"`` / ``"caption"`` / ``"captions"`` (a string or a list of strings),
optional ``"label"``. Image paths are relative to ``image_root`` (default: the file's folder)
unless absolute. Labels are class names (classes: the sorted names) or integers (classes
``"0".."K-1"``), not both: the kind most labelled rows hold wins (a tie: the kind met first) and a
row labelled with the other kind is skipped as a bad label; -1, null or an empty cell is "no
label". All rows of an image keep its first label; a row that gives it another label is skipped.

``build`` (registered as ``image-text-pairs``) reads ``root``: a pairs file (every split reads
it, ``heldout`` False) or a folder with split files ``{train,val,validation,valid,dev,test}.{csv,
tsv,jsonl,ndjson,json}`` (``split`` picks one, ``test``/``val`` stand in for each other; classes
are the union over all split files, so labels agree) or, without split files, all its pairs files.

**Bad input never crashes a run.** Skipped, counted by reason and named (``skips``, a
:class:`~convergent.data.skips.SkipLog`; the first :data:`~convergent.data.skips.MAX_LISTED` per file): rows
(``"file:line"``) that are invalid JSON, malformed, miss a field, have an empty caption (each
empty caption counts), a bad, conflicting or other-kind label; images (path) that are missing,
empty, whose header Pillow cannot read ("not an image") or declares more pixels than
``max_pixels`` ("too large", never decoded, see :mod:`convergent.data.images`), all found when
the dataset is built; images that fail to decode ("unreadable image") are found when read, and
then item ``i`` is the next readable image, exactly as in image-folder (the items' ``"skipped"``
lists carry the finding out of DataLoader workers, for ``skips.merge``), or, with ``verify``
(``--data.verify``), when the dataset is built (:mod:`convergent.data.verify`).
:meth:`ImageTextPairs.preload` decodes every image at once (small data read for many epochs),
dropping unreadable ones. A file without one usable pair is an error naming the file and what
was skipped.
"""

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from convergent.choices import FALSE_IMAGE
from convergent.data.collate import note_unreadable, read_next
from convergent.data.image_folder import decode
from convergent.data.images import ImageTooLarge, open_image
from convergent.data.limits import MAX_IMAGE_PIXELS
from convergent.data.lines import JSONL_SUFFIXES, kind_of, majority, mixed_label
from convergent.data.protocol import Dataset
from convergent.data.skips import SkipLog, describe_counts, failure, reason_of, skip
from convergent.data.splits import finish, resolve
from convergent.data.text import TextCollator
from convergent.data.verify import verify_images

log = logging.getLogger(__name__)

CSV_DELIMITERS = {".csv": ",", ".tsv": "\t"}
SUFFIXES = (*CSV_DELIMITERS, *JSONL_SUFFIXES, ".json")
TEXT_FIELDS = ("text", "caption", "captions")
"""Fields (columns) that may hold the caption(s); the first present is used."""
CAPTION_MODES = ("random", "first")
REASONS = (
    "invalid JSON", "bad row", "missing field", "empty caption", "bad label", "conflicting label",
    "missing image", "empty file", "not an image", "too large", "unreadable image",
)  # fmt: skip
"""Reasons a row or an image is skipped: the keys of ``ImageTextPairs.skips.counts``."""


class Row(NamedTuple):
    """One usable row: where it is (``"file:line"``), its image path, captions and raw label."""

    where: str
    image: str
    texts: list[str]
    label: str | int | None


class PairsCollator:
    """Items ``{"image", "text", "label", "skipped"}`` -> ``image`` (B, C, S, S) uint8, the
    :class:`~convergent.data.text.TextCollator` keys (``input_ids``, ``attention_mask``,
    ``special_tokens_mask``, ``label``) and ``skipped`` (joined). Picklable, for workers."""

    def __init__(self, tokenizer, max_length: int = 77, padding: str = "longest", word_ids: bool = False):
        self.text = TextCollator(tokenizer, max_length, padding, word_ids)
        self.batch_keys = ("image", *self.text.batch_keys)
        """The keys of the batches it makes (``skipped`` aside)."""

    def __call__(self, items: Sequence[dict]) -> dict:
        batch = {"image": torch.stack([it["image"] for it in items]), **self.text(items)}
        if FALSE_IMAGE in items[0]:  # ImageTextPairs.with_false_images
            batch[FALSE_IMAGE] = torch.stack([it[FALSE_IMAGE] for it in items])
        batch["skipped"] = [s for it in items for s in it.get("skipped", ())]
        return batch


class PairsBatching:
    """``is_text`` and ``with_tokenizer`` of the image–text datasets (this file's and the
    streamed :class:`~convergent.data.shards.ShardDataset`); put before the contract's base."""

    is_text = True

    def with_tokenizer(self, tokenizer, max_length: int = 77, padding: str = "longest", word_ids: bool = False):
        """Set :attr:`collate_fn` to a :class:`PairsCollator` (and :attr:`batch_keys` to its keys);
        returns ``self``."""
        self.collate_fn = PairsCollator(tokenizer, max_length, padding, word_ids)
        self.batch_keys = (*self.collate_fn.batch_keys, *((FALSE_IMAGE,) if FALSE_IMAGE in self.batch_keys else ()))
        return self


class ImageTextPairs(PairsBatching, Dataset):
    """Images, each with one or more captions (see the module docstring).

    ``paths``: image file of each item (with ``images``: only a name for reports);
    ``captions``: non-empty list of strings per item; ``labels``: int per item (-1: none);
    ``images``: None to decode ``paths`` when read, or all images already decoded, uint8
    ``(N, in_chans, img_size, img_size)``; ``skips``: what was passed over reading them;
    ``max_pixels``: larger images are skipped as "too large" when read (None: no cap).
    """

    name = "image-text-pairs"
    batch_keys = ("image", "text", "label")
    """Until :meth:`with_tokenizer`; then those of its :class:`PairsCollator`."""

    def __init__(
        self,
        paths: Sequence[str],
        captions: Sequence[Sequence[str]],
        labels: Sequence[int],
        classes: Sequence[str] = (),
        img_size: int = 32,
        in_chans: int = 3,
        source: str = "image-text pairs",
        images: torch.Tensor | None = None,
        caption: str = "random",
        skips: SkipLog | None = None,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
    ):
        if not len(paths) == len(captions) == len(labels):
            raise ValueError(f"{len(paths)} images, {len(captions)} caption lists and {len(labels)} labels")
        if caption not in CAPTION_MODES:
            raise ValueError(f"caption must be one of {CAPTION_MODES}, got {caption!r}")
        if any(not c for c in captions):
            raise ValueError("every image needs at least one caption")
        shape = (len(paths), in_chans, img_size, img_size)
        if images is not None and (images.dtype != torch.uint8 or tuple(images.shape) != shape):
            raise ValueError(f"images must be uint8 {shape}, got {images.dtype} {tuple(images.shape)}")
        super().__init__(source, classes, skips)
        self.paths = list(paths)
        self.captions = [list(c) for c in captions]
        self.labels = torch.tensor(list(labels), dtype=torch.int64)  # (N,); -1 when unlabelled
        self.img_size, self.in_chans = img_size, in_chans
        self.images = images
        self.caption = caption
        self.max_pixels = max_pixels
        self._bad: dict[int, str] = {}  # index -> reason, found by this process
        self.false_images = False
        """Items also hold ``false_image`` (:meth:`with_false_images`)."""
        self.false_image_seed = 0
        self.epoch = 0

    # --- items ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` ``(C, S, S)`` uint8 (raises if it cannot be decoded or is too large)."""
        if self.images is not None:
            return self.images[i]
        return decode(self.paths[i], self.img_size, self.in_chans, self.max_pixels)

    def __getitem__(self, i: int) -> dict:
        j, image, passed = read_next(self, i, self.image, "unreadable image")  # the next readable, as image-folder
        item = {"image": image, "text": self.pick_caption(j), "label": int(self.labels[j]), "skipped": passed}
        if self.false_images:
            item[FALSE_IMAGE], more = self.false_image(i, j)
            item["skipped"] = passed + more
        return item

    # --- false images (ViLT's image-text matching negatives) ----------------------------------
    def with_false_images(self, seed: int = 0, enable: bool = True) -> "ImageTextPairs":
        """Items (and batches) also hold ``false_image``: a random image of another item, drawn
        from ``(seed, epoch, index)`` (:meth:`false_image`); returns ``self``."""
        if enable and len(self) < 2:
            raise ValueError(f"false images need at least 2 images, {self.source} has {len(self)}")
        self.false_images, self.false_image_seed = enable, int(seed)
        keys = tuple(k for k in self.batch_keys if k != FALSE_IMAGE)
        self.batch_keys = (*keys, FALSE_IMAGE) if enable else keys
        return self

    def set_epoch(self, epoch: int) -> None:
        """The false images depend on the epoch (the Trainer calls this before each epoch)."""
        self.epoch = int(epoch)

    def false_image(self, i: int, own: int) -> tuple[torch.Tensor, list[tuple[str, str]]]:
        """The false image of item ``i`` (whose image is item ``own``'s) in this epoch, and the
        unreadable files passed over: item ``k`` uniform over the others, drawn by a generator
        seeded from ``(false_image_seed, epoch, i)`` (the same in any worker, after a resume),
        then the next readable image from ``k`` that is not ``own`` (as ``__getitem__``)."""
        n = len(self)
        k = int(np.random.default_rng([self.false_image_seed, max(self.epoch, 0), i]).integers(n - 1))
        k += k >= own  # never the sample's own image
        passed = []
        for start in (k, own + 1):  # wrapped around to its own image: go on after it
            j, image, more = read_next(self, start % n, self.image, "unreadable image")
            passed += more
            if j != own:
                return image, passed
        raise ValueError(f"false images need at least 2 readable images: {self.source}")

    def pick_caption(self, i: int) -> str:
        """The caption of item ``i`` for this access (by :attr:`caption`)."""
        caps = self.captions[i]
        if self.caption == "first" or len(caps) == 1:
            return caps[0]
        return caps[int(torch.randint(len(caps), ()))]

    def texts(self) -> Iterator[str]:
        """All captions, flat, image by image (e.g. to train a tokenizer, or retrieval queries)."""
        return (t for caps in self.captions for t in caps)

    @property
    def image_of_caption(self) -> torch.Tensor:
        """``(M,)`` int64: the item (image) index of each caption of :meth:`texts`."""
        counts = torch.tensor([len(c) for c in self.captions], dtype=torch.int64)
        return torch.repeat_interleave(torch.arange(len(counts)), counts)

    # --- bookkeeping ------------------------------------------------------------------------
    def summary(self) -> str:
        """One line: images and captions used, skipped by reason."""
        n, why = self.skips.total, self.skips.describe(REASONS)
        return f"{len(self)} images with {sum(map(len, self.captions))} captions used, {n} skipped ({why})"

    def select(self, keep: Sequence[int] | np.ndarray) -> "ImageTextPairs":
        """Keep only the items at indices ``keep`` (in that order); returns ``self``."""
        keep = [int(k) for k in keep]
        self.paths = [self.paths[k] for k in keep]
        self.captions = [self.captions[k] for k in keep]
        self.labels = self.labels[torch.tensor(keep, dtype=torch.int64)]
        if self.images is not None:
            self.images = self.images[torch.tensor(keep, dtype=torch.int64)]
        self._bad = {}
        return self

    def preload(self) -> "ImageTextPairs":
        """Decode every image now into :attr:`images` (unreadable ones are dropped and counted);
        returns ``self``."""
        if self.images is not None:
            return self
        good, decoded = [], []
        for j in range(len(self)):
            try:
                decoded.append(self.image(j))
                good.append(j)
            except Exception as e:  # as in __getitem__
                reason, detail = failure(e, "unreadable image")
                note_unreadable(self, j, detail, reason)
        if not good:
            raise ValueError(f"none of the {len(self)} images could be decoded: {self.source}")
        self.select(good)
        self.images = torch.stack(decoded)  # (N, C, S, S)
        return self


# --- reading files --------------------------------------------------------------------------
def _parse_label(value) -> str | int | None:
    """A class name, an index >= 0, or None (no label); ValueError otherwise."""
    if isinstance(value, str):
        value = value.strip()  # a CSV cell " -1" is "no label" too, not a class named "-1"
    if value is None or value == -1 or value == "" or value == "-1":
        return None
    if isinstance(value, bool) or isinstance(value, float):
        raise ValueError(value)
    if isinstance(value, int):
        if value < 0:
            raise ValueError(value)
        return value
    if isinstance(value, str):
        return int(value) if value.isdigit() else value
    raise ValueError(value)


def row_texts(value) -> list[str] | None:
    """The captions of a text field (string or list of strings), stripped; None if malformed."""
    if isinstance(value, str):
        return [value.strip()]
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return [t.strip() for t in value]
    return None


def _csv_records(path: Path) -> Iterator[tuple[str, dict | str]]:
    """``(where, record or reason)`` for each data row of a CSV/TSV file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 (byte {e.start})") from e
    if not text.strip():
        raise ValueError(f"{path}: the file is empty; expected a header row naming an 'image' and a 'text' (or "
                         "'caption') column, then one row per image-caption pair")  # fmt: skip
    reader = csv.DictReader(text.splitlines(keepends=True), delimiter=CSV_DELIMITERS[path.suffix.lower()])
    header = reader.fieldnames or []
    if "image" not in header or not any(f in header for f in TEXT_FIELDS):
        raise ValueError(f"{path}: the header row {header} must name an 'image' and a 'text' (or 'caption') column")
    for record in reader:
        where = f"{path}:{reader.line_num}"
        if None in record or None in record.values():  # more / fewer cells than the header
            yield where, "bad row"
        elif any(v.strip() for v in record.values()):  # blank lines are not rows
            yield where, record


def _json_records(path: Path) -> Iterator[tuple[str, dict | str]]:
    """``(where, record or reason)`` for each object of a JSONL or JSON-list file."""
    if path.suffix.lower() == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: not a JSON file ({e})") from e
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of objects, got {type(records).__name__}")
        for k, record in enumerate(records):
            yield f"{path}:[{k}]", record if isinstance(record, dict) else "bad row"
        return
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                yield f"{path}:{lineno}", "invalid JSON"
                continue
            yield f"{path}:{lineno}", record if isinstance(record, dict) else "bad row"


def read_rows(path: str | Path, image_root: str | Path | None = None) -> tuple[list[Row], Counter, list]:
    """``(rows, counts, skipped)`` of one pairs file: the usable rows (image paths resolved
    against ``image_root``, default the file's folder), skipped rows counted by reason and
    the first :data:`~convergent.data.skips.MAX_LISTED` named."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such pairs file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: a pairs file must end in {'/'.join(SUFFIXES)}")
    root = Path(image_root).expanduser() if image_root is not None else path.parent
    records = _csv_records(path) if suffix in CSV_DELIMITERS else _json_records(path)
    rows, counts, skipped = [], Counter(), []
    for where, record in records:
        if isinstance(record, str):
            skip(counts, skipped, where, record)
            continue
        field = next((f for f in TEXT_FIELDS if f in record), None)
        image = record.get("image")
        texts = row_texts(record[field]) if field else None
        if field is None or not isinstance(image, str) or not image.strip():
            skip(counts, skipped, where, "missing field")
            continue
        if texts is None:
            skip(counts, skipped, where, "bad row")
            continue
        try:
            label = _parse_label(record.get("label"))
        except ValueError:
            skip(counts, skipped, where, "bad label")
            continue
        for _ in range(sum(not t for t in texts)):
            skip(counts, skipped, where, "empty caption")
        if any(texts):
            rows.append(Row(where, str(root / image.strip()), [t for t in texts if t], label))
    return rows, counts, skipped


def class_names(labels: Sequence[str | int | None], where: str) -> list[str]:
    """Sorted names, ``"0".."K-1"`` for integer labels, ``[]`` if unlabelled."""
    kinds = {type(v) for v in labels if v is not None}
    if len(kinds) > 1:
        raise ValueError(f"{where}: labels are class names in some rows and integers in others")
    if kinds == {str}:
        return sorted({v for v in labels if v is not None})
    if kinds == {int}:
        return [str(c) for c in range(1 + max(v for v in labels if v is not None))]
    return []


def check_image(path: str, max_pixels: int | None = MAX_IMAGE_PIXELS) -> str | None:
    """Why ``path`` cannot be an image (missing, empty, header unreadable, more pixels than
    ``max_pixels``: ``"too large (<W>x<H> = ...)"``); None if it may be one."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
    except OSError:
        return "missing image"
    try:
        with open_image(path, max_pixels):  # reads the header only
            return None
    except ImageTooLarge as e:
        return str(e)
    except Exception:  # noqa: BLE001 - whatever Pillow raises, the file is no image it can read
        return "not an image"


def group_rows(rows: Sequence[Row], counts: Counter, skipped: list) -> tuple[list[str], list[list[str]], list]:
    """``(images, captions, raw labels)``: rows of one image joined, in first-appearance order;
    a row giving its image another label is skipped ("conflicting label")."""
    index: dict[str, int] = {}
    images, captions, labels = [], [], []
    for row in rows:
        k = index.get(row.image)
        if k is None:
            index[row.image] = len(images)
            images.append(row.image)
            captions.append(list(row.texts))
            labels.append(row.label)
        elif row.label is not None and labels[k] is not None and row.label != labels[k]:
            skip(counts, skipped, row.where, "conflicting label")
        else:
            captions[k] += [t for t in row.texts if t not in captions[k]]
            labels[k] = labels[k] if labels[k] is not None else row.label
    return images, captions, labels


def one_label_kind(read: dict) -> dict:
    """``read`` (file -> :func:`read_rows` of it) with labels of one kind: when some rows give
    class names and others indices, the kind most rows give wins (a tie: the kind met first) and
    the rows of the other kind are skipped as ``"bad label"`` (named ``"file:line"``)."""
    kinds = Counter(kind_of(row.label) for rows, _, _ in read.values() for row in rows if row.label is not None)
    if len(kinds) < 2:
        return read
    kind, fixed = majority(kinds), {}
    for path, (rows, counts, skipped) in read.items():
        counts, skipped, kept = Counter(counts), list(skipped), []
        for row in rows:
            if row.label is None or kind_of(row.label) == kind:
                kept.append(row)
            else:
                skip(counts, skipped, row.where, "bad label", mixed_label(row.label, kind))
        fixed[path] = (kept, counts, skipped)
    return fixed


def read_pairs(
    files: str | Path | Sequence[str | Path],
    image_root: str | Path | None = None,
    img_size: int = 32,
    in_chans: int = 3,
    classes: Sequence[str] | None = None,
    caption: str = "random",
    max_pixels: int | None = MAX_IMAGE_PIXELS,
    verify: bool = False,
) -> ImageTextPairs:
    """The pairs of one or more files (``image_root``: default each file's folder).
    ``classes``: class names in label order (None: from the files' labels); ``max_pixels``:
    larger images are skipped as "too large" (None: no cap); ``verify``: decode every image now
    (:func:`~convergent.data.verify.verify_images`)."""
    files = [files] if isinstance(files, (str, Path)) else list(files)
    read = one_label_kind({p: read_rows(p, image_root) for p in files})
    dataset = _pairs(read, img_size, in_chans, classes, caption, max_pixels)
    return verify_images(dataset, "unreadable image") if verify else dataset


def _pairs(read: dict, img_size: int, in_chans: int, classes: Sequence[str] | None, caption: str,
           max_pixels: int | None = MAX_IMAGE_PIXELS) -> ImageTextPairs:  # fmt: skip
    """The dataset of files already read (``read``: file -> :func:`read_rows` of it)."""
    if in_chans not in (1, 3):
        raise ValueError(f"image-text pairs: in_chans must be 1 (L) or 3 (RGB), got {in_chans}")
    rows, counts, skipped = [], Counter(), []
    for path, (r, c, s) in read.items():
        if not r:
            n = sum(c.values())
            why = f"{n} rows skipped: {describe_counts(c, REASONS)}" if n else "no rows"
            raise ValueError(f"{path}: no usable image-text pair ({why})")
        rows += r
        counts += c
        skipped += s
    paths, captions, raw = group_rows(rows, counts, skipped)
    bad = {p: detail for p in paths if (detail := check_image(p, max_pixels))}
    for p, detail in bad.items():
        skip(counts, skipped, p, reason_of(detail), detail)
    keep = [k for k, p in enumerate(paths) if p not in bad]
    names = ", ".join(map(str, read))
    if not keep:
        why = describe_counts(counts, REASONS)
        raise ValueError(f"{names}: no usable image-text pair (all {len(paths)} images skipped: {why})")
    classes = list(classes) if classes is not None else class_names(raw, names)
    labels = [_label_index(raw[k], classes, names) for k in keep]
    source = f"image-text pairs: {len(keep)} images from {names}"
    dataset = ImageTextPairs([paths[k] for k in keep], [captions[k] for k in keep], labels, classes,
                             img_size, in_chans, source, caption=caption, skips=SkipLog(counts, skipped),
                             max_pixels=max_pixels)  # fmt: skip
    if counts:
        log.warning("%s; %s", source, dataset.summary())
    return dataset


def _label_index(label: str | int | None, classes: list[str], where: str) -> int:
    if label is None:
        return -1
    name = str(label)
    if name not in classes:
        raise ValueError(f"{where}: label {label!r} is not among the classes {classes}")
    return classes.index(name)


def build(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
          max_image_pixels: int | None = MAX_IMAGE_PIXELS, verify: bool = False) -> ImageTextPairs:  # fmt: skip
    """The pairs of ``root`` for ``split`` (layouts: module docstring); images relative to each
    file's folder. ``verify``: decode the images of the split (after ``limit``) now."""
    if root is None:
        raise ValueError("image-text-pairs needs a pairs file or directory: set data.root (--data.root PATH)")
    files, everything, heldout = resolve("image-text-pairs", Path(root).expanduser(), split, SUFFIXES)
    read = one_label_kind({p: read_rows(p) for p in everything})  # each file once: classes need every split's
    classes = class_names([row.label for rows, _, _ in read.values() for row in rows], str(root))
    dataset = _pairs({p: read[p] for p in files}, img_size, in_chans, classes,
                     caption="random" if split == "train" else "first", max_pixels=max_image_pixels)  # fmt: skip
    dataset = finish(dataset, "image-text-pairs", split, files, heldout, limit, "images")
    if verify:  # the unreadable images dropped now; finish again, so the source line counts what is read
        dataset = finish(verify_images(dataset, "unreadable image"), "image-text-pairs", split, files, heldout, None,
                         "images")  # fmt: skip
    return dataset
