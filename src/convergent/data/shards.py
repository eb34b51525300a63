"""Image–text pairs as webdataset-style tar shards: written by :func:`write_shards`, streamed
by :class:`ShardDataset` (standard :mod:`tarfile`, no ``webdataset`` dependency; the files are
ordinary webdataset shards, so either library reads what the other wrote).

    write_shards(read_pairs("captions.csv"), "shards/", max_per_shard=1000)  # or: convergent data shard ...
    ds = ShardDataset("shards/", img_size=64, shuffle=1000, seed=0).with_tokenizer(tok, max_length=32)
    for epoch in range(epochs):
        ds.set_epoch(epoch)
        for batch in DataLoader(ds, batch_size=256, num_workers=8, collate_fn=ds.collate_fn):
            ...  # image (B, C, S, S) uint8, input_ids, attention_mask, special_tokens_mask, label, skipped

**Format.** A shard ``shard-000000.tar`` holds samples as consecutive members sharing a key:
``<key>.<image ext>`` (``jpg``, ``jpeg``, ``png``, ``webp``, ...: the original bytes) and either
``<key>.txt`` (the caption) or ``<key>.json`` (``"text"`` or ``"caption"``: a string, or
``"captions"``: a list, and optional ``"label"``); a ``<key>.cls`` member (an integer) is a
label too. The key is the member name up to the first dot of its last path part. ``manifest.json``
beside the shards (written by :func:`write_shards`, optional when reading) lists shards, sample
counts and class names.

**Streaming, not map-style.** :class:`ShardDataset` is an ``IterableDataset``: it has no
length and no random access. Registered as ``image-text-shards`` (:func:`build`), its training
split streams into the :class:`~convergent.training.loop.Trainer` (ordered by
:class:`~convergent.training.sampler.StreamOrder`), or into a ``DataLoader`` loop of your own as
above. Every (rank, worker) reads a
disjoint part: the shard list (in one order for all, shuffled by ``(seed, epoch)`` when
``shuffle``) is dealt round-robin to the ``world_size * num_workers`` readers; with fewer shards
than readers, every reader reads all shards and keeps every ``world_size * num_workers``-th sample
instead. Readers may get unequal numbers of samples: for DDP, stop each epoch after a fixed
number of steps (or use ``repeat=True`` and count steps). ``shuffle`` > 0 also passes samples
through a buffer of that many (seeded by ``(seed, epoch, reader)``). Call :meth:`ShardDataset.set_epoch`
before each epoch's ``DataLoader`` iterator is made, for a new order (workers copy the dataset
then, so not with ``persistent_workers``). ``rank``/``world_size`` default to ``torch.distributed``'s when it
is initialised.

Unusable samples (no image, no caption, invalid JSON, a bad label: a class name not in the
manifest's classes, an index out of their range, anything else; an image whose header declares
more than ``max_pixels`` pixels, "too large", never decoded; an image that does not decode) are
skipped, counted and named (``"shard:key"``) in ``skips`` in the reading process (each once,
however many epochs meet it), and carried out of workers in the items' ``"skipped"`` lists (for
``skips.merge``, as image-folder).
"""

import functools
import glob
import io
import json
import logging
import os
import random
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import get_worker_info

from convergent.data.image_folder import IMAGE_EXTENSIONS, decode
from convergent.data.images import open_image
from convergent.data.limits import MAX_IMAGE_PIXELS
from convergent.data.pairs import CAPTION_MODES, ImageTextPairs, PairsBatching, row_texts
from convergent.data.protocol import StreamDataset
from convergent.data.skips import MAX_LISTED, SkipLog, failure, reason_of
from convergent.data.splits import ALL_SPLIT_NAMES, SPLIT_NAMES, finish

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "convergent-shards/1"
IMAGE_EXTS = tuple(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
"""Member extensions read as the image of a sample."""


# --- writing --------------------------------------------------------------------------------
def _png_bytes(image: torch.Tensor) -> bytes:
    """PNG of a uint8 ``(C, H, W)`` tensor (C = 1 or 3)."""
    array = image.permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, "PNG")
    return buf.getvalue()


def _file(path) -> tuple[bytes | None, str]:
    """``(bytes or None if unreadable, lower-case extension without the dot)`` of an image file."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        data = None
    return data, Path(path).suffix.lower().lstrip(".")


def _records(source) -> Iterator[tuple[bytes | None, str, list[str], int, str]]:
    """``(image bytes or None, image ext, captions, label, name)`` of each pair of ``source``:
    an :class:`ImageTextPairs` (original file bytes; PNG of its images when held in memory) or an
    iterable of dicts ``{"image": path | bytes | uint8 (C, H, W), "text": str | [str, ...],
    "label": int (optional)}`` (bytes are taken as PNG unless ``"ext"`` says otherwise)."""
    if isinstance(source, ImageTextPairs):
        for i, path in enumerate(source.paths):
            caps, label = source.captions[i], int(source.labels[i])
            if source.images is not None:
                yield _png_bytes(source.images[i]), "png", caps, label, path
            else:
                yield *_file(path), caps, label, path
        return
    for k, item in enumerate(source):
        image, text = item["image"], item["text"]
        caps = [text] if isinstance(text, str) else list(text)
        label, name = int(item.get("label", -1)), str(item.get("key", k))
        if isinstance(image, torch.Tensor):
            yield _png_bytes(image), "png", caps, label, name
        elif isinstance(image, (bytes, bytearray)):
            yield bytes(image), item.get("ext", "png"), caps, label, name
        else:
            yield *_file(image), caps, label, str(image)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: byte-identical rebuilds
    tar.addfile(info, io.BytesIO(data))


def _unusable(data: bytes | None, ext: str, caps: list[str], verify: bool, max_pixels: int | None) -> str | None:
    """Why a pair cannot be written; None if it can."""
    if data is None:
        return "missing image"
    if ext not in IMAGE_EXTS:
        return f"not an image extension ({ext or 'none'!r})"
    if not [c for c in caps if c.strip()]:
        return "empty caption"
    if verify:
        try:
            with open_image(io.BytesIO(data), max_pixels) as img:
                img.load()
        except Exception as e:  # noqa: BLE001 - whatever Pillow raises, it does not decode
            return failure(e, "unreadable image")[1]
    return None


def write_shards(
    source: ImageTextPairs | Iterable[dict],
    out_dir: str | Path,
    max_per_shard: int = 1000,
    prefix: str = "shard",
    verify: bool = True,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> dict:
    """Write the pairs of ``source`` (see :func:`_records`) to ``out_dir/<prefix>-NNNNNN.tar``,
    at most ``max_per_shard`` per shard, plus ``manifest.json``; returns the manifest.

    Sample ``k`` (running count of pairs written) has key ``%09d`` and members ``<key>.<ext>``
    (the image bytes, unchanged) and ``<key>.json`` ``{"text": first caption, "captions": all,
    "label": int, "source": image name}``. Pairs whose image is missing, or (``verify``) does not
    decode or has more than ``max_pixels`` pixels, or whose captions are all empty are skipped
    and listed in the manifest. Each shard is written to a temporary name and renamed when
    complete.
    """
    if max_per_shard < 1:
        raise ValueError(f"max_per_shard must be >= 1, got {max_per_shard}")
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    shards, skipped, count = [], [], 0
    tar, tmp = None, None

    def close() -> None:
        tar.close()
        final = tmp.with_name(tmp.name.removesuffix(".tmp"))
        os.replace(tmp, final)
        shards[-1]["name"] = final.name

    for data, ext, caps, label, name in _records(source):
        reason = _unusable(data, ext, caps, verify, max_pixels)
        if reason is not None:
            skipped.append((name, reason))
            continue
        if tar is None or shards[-1]["count"] == max_per_shard:
            if tar is not None:
                close()
            tmp = out / f"{prefix}-{len(shards):06d}.tar.tmp"
            tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)
            shards.append({"name": tmp.name, "count": 0})
        key = f"{count:09d}"
        caps = [c.strip() for c in caps if c.strip()]
        meta = {"text": caps[0], "captions": caps, "label": label, "source": os.path.basename(name)}
        _add(tar, f"{key}.{ext}", data)
        _add(tar, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
        shards[-1]["count"] += 1
        count += 1
    if tar is not None:
        close()
    if not count:
        raise ValueError(f"no pair could be written to {out} ({len(skipped)} skipped: {skipped[:3]} ...)")
    pairs = isinstance(source, ImageTextPairs)  # an iterable of dicts has no classes nor source line
    manifest = {
        "format": FORMAT, "count": count, "shards": shards, "classes": list(source.classes) if pairs else [],
        "source": source.source if pairs else None, "skipped": len(skipped), "skipped_examples": skipped[:MAX_LISTED],
    }  # fmt: skip
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    return manifest


# --- reading --------------------------------------------------------------------------------
def resolve_shards(shards: str | Path | Sequence[str | Path]) -> tuple[list[Path], dict]:
    """``(shard paths, manifest or {})``: a directory (its manifest's shards, else its ``*.tar``
    sorted), one ``.tar`` file, a glob pattern, or a list of files."""
    if not isinstance(shards, (str, Path)):
        paths = [Path(p).expanduser() for p in shards]
        manifest = {}
    else:
        path = Path(shards).expanduser()
        manifest_path = path / MANIFEST
        if path.is_dir() and manifest_path.is_file():
            try:
                manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
                paths = [path / s["name"] for s in manifest["shards"]]
            except (ValueError, KeyError, TypeError) as e:  # not JSON, or no "shards" list of {"name": ...}
                raise ValueError(f"shards: {manifest_path} is not valid ({type(e).__name__}: {e})") from e
        elif path.is_dir():
            paths, manifest = sorted(path.glob("*.tar")), {}
        elif any(c in str(shards) for c in "*?["):
            paths, manifest = [Path(p) for p in sorted(glob.glob(str(path)))], {}
        else:
            paths, manifest = [path], {}
    missing = [str(p) for p in paths if not p.is_file()]
    if not paths or missing:
        why = f"missing {', '.join(missing[:5])}" if missing else "no .tar files"
        raise FileNotFoundError(f"shards {shards}: {why}")
    return paths, manifest


def _split_key(name: str) -> tuple[str, str]:
    """``("dir/key", "ext")`` of a member name (webdataset's rule: the key ends at the first dot
    of the last path part; the extension is the rest, lower-cased)."""
    head, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{head}/{key}" if head else key), ext.lower()


def iter_samples(path: Path) -> Iterator[tuple[str, dict[str, bytes]]]:
    """``(key, {ext: bytes})`` of each sample of a tar file, streamed (consecutive members)."""
    key, members = None, {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                k, ext = _split_key(info.name)
                if k != key and members:
                    yield key, members
                    members = {}
                key = k
                members[ext] = tar.extractfile(info).read()
    except tarfile.TarError as e:
        raise type(e)(f"{path}: not a readable tar shard ({e})") from e
    if members:
        yield key, members


def _label(raw, classes: Sequence[str]) -> int | None:
    """A label of a sample (class index, below ``len(classes)`` when they are known; class name;
    -1 / null / absent: none); None if bad."""
    if raw is None:
        return -1
    if isinstance(raw, str):
        return classes.index(raw) if raw in classes else None
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= -1:
        return raw if not classes or raw < len(classes) else None
    return None


def _bad_label(raw, classes: Sequence[str]) -> str:
    """The detail of a sample skipped for its label ``raw``."""
    known = f"an index below {len(classes)} or one of the class names" if classes else "an index >= 0"
    return f"bad label ({raw!r}: expected {known})"


def parse_sample(members: dict[str, bytes], classes: Sequence[str]) -> tuple[str, bytes, list[str], int] | str:
    """``(image ext, image bytes, captions, label)`` of a sample, or why it is unusable."""
    ext = next((e for e in IMAGE_EXTS if e in members), None)
    if ext is None:
        return "no image"
    captions, raw = [], None
    if "json" in members:
        try:
            meta = json.loads(members["json"])
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "invalid JSON"
        if not isinstance(meta, dict):
            return "invalid JSON"
        text = meta.get("captions") or meta.get("text") or meta.get("caption")
        captions = [] if text is None else row_texts(text)
        if captions is None:
            got = "a list holding a non-string" if isinstance(text, list) else type(text).__name__
            return f"no caption (expected a string or a list of strings, got {got})"
        raw = meta.get("label")
    if "txt" in members and not captions:
        captions = [members["txt"].decode("utf-8", "replace")]
    if "cls" in members:
        cls = members["cls"].decode("utf-8", "replace").strip()
        if not cls.isdigit():
            return f"bad label (.cls {cls!r}: expected an index >= 0)"
        raw = int(cls)
    label = _label(raw, classes)
    if label is None:
        return _bad_label(raw, classes)
    captions = [c.strip() for c in captions if c.strip()]
    if not captions:
        return "no caption"
    return ext, members[ext], captions, label


def read_samples(
    shards: Sequence[Path],
    classes: Sequence[str],
    img_size: int = 32,
    in_chans: int = 3,
    decode_images: bool = True,
    stride: tuple[int, int] | None = None,
    on_skip=None,
    max_pixels: int | None = MAX_IMAGE_PIXELS,
) -> Iterator[tuple[str, torch.Tensor | tuple[bytes, str], list[str], int]]:
    """``(key, image, captions, label)`` of every usable sample of ``shards``, in order: ``image``
    uint8 ``(C, S, S)``, or ``(bytes, ext)`` with ``decode_images=False``. ``stride``
    ``(me, readers)``: only every ``readers``-th sample. Unusable ones go to
    ``on_skip(where, reason, detail)`` (the arguments of :meth:`~convergent.data.skips.SkipLog.add`:
    ``reason`` the count's key, ``detail`` it with what was found); images of more than
    ``max_pixels`` pixels among them (``"too large"``, not decoded)."""
    n = 0
    for path in shards:
        for key, members in iter_samples(path):
            n += 1
            if stride is not None and (n - 1) % stride[1] != stride[0]:
                continue
            where = f"{path}:{key}"
            parsed = parse_sample(members, classes)
            if isinstance(parsed, str):
                if on_skip is not None:
                    on_skip(where, reason_of(parsed), parsed)
                continue
            ext, data, captions, label = parsed
            if not decode_images:
                yield key, (data, ext), captions, label
                continue
            try:
                image = decode(io.BytesIO(data), img_size, in_chans, max_pixels)
            except Exception as e:  # noqa: BLE001 - Pillow raises many types for bad data
                if on_skip is not None:
                    on_skip(where, *failure(e, "unreadable image"))
                continue
            yield key, image, captions, label


class ShardDataset(PairsBatching, StreamDataset):
    """Stream ``{"image": uint8 (C, S, S), "text": str, "label": int, "key": str, "skipped": [...]}``
    from tar shards (see the module docstring). ``decode=False`` gives the image bytes as they
    are stored (``"image"``: bytes, plus ``"ext"``). ``caption``: ``"random"`` (a seeded draw
    among a sample's captions) or ``"first"``. ``repeat``: cycle epochs forever. ``max_pixels``:
    larger images are skipped as "too large" (None: no cap)."""

    name = "image-text-shards"
    batch_keys = ("image", "text", "label", "key")
    """With ``decode=False`` also ``"ext"``; after :meth:`with_tokenizer`, those of its collator."""

    def __init__(
        self,
        shards: str | Path | Sequence[str | Path],
        img_size: int = 32,
        in_chans: int = 3,
        shuffle: int = 0,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        caption: str = "random",
        decode: bool = True,
        repeat: bool = False,
        max_pixels: int | None = MAX_IMAGE_PIXELS,
    ):
        if caption not in CAPTION_MODES:
            raise ValueError(f"caption must be one of {CAPTION_MODES}, got {caption!r}")
        if shuffle < 0:
            raise ValueError(f"shuffle (buffer size) must be >= 0, got {shuffle}")
        self.shards, manifest = resolve_shards(shards)
        self.num_samples: int | None = manifest.get("count")
        """Samples in all shards (from the manifest; None without one)."""
        samples = f", {self.num_samples} samples" if self.num_samples else ""
        super().__init__(f"shards: {len(self.shards)} tar files{samples} in {self.shards[0].parent}",
                         manifest.get("classes", []))  # fmt: skip
        if not decode:
            self.batch_keys = ("image", "ext", "text", "label", "key")
        self.img_size, self.in_chans = img_size, in_chans
        self.shuffle, self.seed, self.caption, self.decode, self.repeat = shuffle, seed, caption, decode, repeat
        self.rank, self.world_size = rank, world_size
        self.max_pixels = max_pixels
        self.epoch = 0

    def reader(self) -> tuple[int, int]:
        """``(index, count)`` of this reader among all (rank, DataLoader worker) pairs."""
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        rank, world = self.rank, self.world_size
        if rank is None or world is None:
            dist = torch.distributed.is_available() and torch.distributed.is_initialized()
            rank = rank if rank is not None else (torch.distributed.get_rank() if dist else 0)
            world = world if world is not None else (torch.distributed.get_world_size() if dist else 1)
        return rank * workers + worker, world * workers

    def __iter__(self) -> Iterator[dict]:
        epoch = self.epoch
        while True:
            yield from self._epoch(epoch)
            if not self.repeat:
                return
            epoch += 1

    def _epoch(self, epoch: int) -> Iterator[dict]:
        me, readers = self.reader()
        order = list(self.shards)
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)  # the same order in every reader
        by_shard = len(order) >= readers
        mine = order[me::readers] if by_shard else order
        rng = random.Random(f"{self.seed}:{epoch}:{me}")
        buffer: list[dict] = []
        for item in self._items(mine, None if by_shard else (me, readers), rng):
            if not self.shuffle:
                yield item
                continue
            buffer.append(item)
            if len(buffer) >= self.shuffle:
                k = rng.randrange(len(buffer))
                buffer[k], buffer[-1] = buffer[-1], buffer[k]
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def _items(self, shards: list[Path], stride: tuple[int, int] | None, rng: random.Random) -> Iterator[dict]:
        """Items of ``shards`` in order; ``stride`` ``(me, readers)``: only every ``readers``-th sample."""
        passed: list = []
        note = functools.partial(self._note, passed)
        for key, image, captions, label in read_samples(shards, self.classes, self.img_size, self.in_chans,
                                                        self.decode, stride, note, self.max_pixels):  # fmt: skip
            text = captions[0] if self.caption == "first" else captions[rng.randrange(len(captions))]
            item = {"text": text, "label": label, "key": key}
            if self.decode:
                item["image"] = image
            else:
                item["image"], item["ext"] = image
            item["skipped"] = passed[:]
            passed.clear()
            yield item

    def texts(self) -> Iterator[str]:
        """Every caption of every sample, shard by shard, images not decoded (e.g. to train a
        tokenizer; one pass over the data, in this process, whatever the reader)."""
        for _, _, captions, _ in read_samples(self.shards, self.classes, decode_images=False):
            yield from captions

    def _note(self, passed: list, where: str, reason: str, detail: str) -> None:
        self.skips.found(where, reason, detail)
        passed.append((where, detail))
        log.warning("skipping %s: %s", where, detail)


# --- the registered dataset -------------------------------------------------------------------
SHUFFLE_BUFFER = 1000
"""Samples in the training stream's shuffle buffer (per reader)."""


def read_shards(shards: str | Path | Sequence[str | Path], img_size: int = 32, in_chans: int = 3,
                max_pixels: int | None = MAX_IMAGE_PIXELS) -> ImageTextPairs:  # fmt: skip
    """All usable samples of ``shards`` in memory, every caption kept (a held-out split for
    evaluation: kNN / probes, zero-shot, retrieval); unusable ones skipped and counted (images
    of more than ``max_pixels`` pixels as "too large")."""
    paths, manifest = resolve_shards(shards)
    classes = list(manifest.get("classes", []))
    skips = SkipLog()
    names, images, captions, labels = [], [], [], []
    for key, image, caps, label in read_samples(paths, classes, img_size, in_chans, on_skip=skips.add,
                                                max_pixels=max_pixels):  # fmt: skip
        names.append(key)
        images.append(image)
        captions.append(caps)
        labels.append(label)
    if not images:
        raise ValueError(f"shards {shards}: no usable sample ({dict(skips.counts) or 'empty'})")
    return ImageTextPairs(names, captions, labels, classes, img_size, in_chans, images=torch.stack(images),
                          caption="first", skips=skips)  # fmt: skip


def build(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
          max_image_pixels: int | None = MAX_IMAGE_PIXELS, verify: bool = False):  # fmt: skip
    """``image-text-shards``: ``root`` holds shards (a directory, its ``manifest.json`` or
    ``*.tar``), or split folders of them (``train/``, ``val/``, ``test/``, see
    :data:`~convergent.data.splits.SPLIT_NAMES`). The training split is streamed: a
    :class:`ShardDataset` shuffled through a buffer and repeating (the Trainer counts steps);
    a held-out split is read into memory (:func:`read_shards`); without split folders there is
    none. ``verify`` is ignored: a stream is checked as it is read (``convergent data shard``
    verified the images when it wrote them), a held-out split is decoded whole when built."""
    if root is None:
        raise ValueError("image-text-shards needs a directory of shards: set data.root (--data.root PATH)")
    root = Path(root).expanduser()
    folders = [root / name for name in SPLIT_NAMES.get(split, (split,)) if (root / name).is_dir()]
    has_splits = any((root / name).is_dir() for name in ALL_SPLIT_NAMES)
    if split == "train":
        if limit is not None:
            raise ValueError("image-text-shards streams its training split: data.limit is not supported "
                             "(write fewer shards, or use image-text-pairs)")  # fmt: skip
        if has_splits and not folders:
            raise FileNotFoundError(f"image-text-shards: {root} has split folders but no train/")
        dataset = ShardDataset(folders[0] if folders else root, img_size, in_chans, shuffle=SHUFFLE_BUFFER,
                               repeat=True, max_pixels=max_image_pixels)  # fmt: skip
        dataset.heldout = has_splits
        return dataset
    if not folders:
        raise FileNotFoundError(f"image-text-shards: {root} has no {split} folder of shards (held-out data)")
    files, _ = resolve_shards(folders[0])
    return finish(read_shards(folders[0], img_size, in_chans, max_image_pixels), "image-text-shards", split, files,
                  True, limit, "images")  # fmt: skip
