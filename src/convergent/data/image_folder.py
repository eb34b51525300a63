"""A directory of images, decoded with Pillow.

Layout (``root``):

* class sub-folders ``root/<class>/**/<image>``: label = index of ``<class>`` in the sorted
  sub-folder names; image files directly in ``root`` are then skipped ("outside class folders");
* flat ``root/<image>`` (no sub-folders): every label is -1 and ``classes`` is ``[]``;
* split folders ``root/{train,val,validation,test}/...``: when any exists, ``split`` picks one
  (``test`` and ``val``/``validation`` stand in for each other), and ``classes`` is the union
  over all split folders so labels agree between splits. Otherwise every split reads ``root``.

Hidden files and folders (name starting with ".") are ignored.

Unreadable samples never crash a run:

* at construction (cheap, from the directory scan): files whose extension is not an image
  extension ("not an image") and zero-byte files ("empty file") are counted in ``skips``;
* at ``__getitem__`` (decoding is the only full check): if sample ``i`` cannot be decoded
  ("unreadable"), or its header declares more pixels than ``max_image_pixels`` ("too large",
  refused before decoding, see :mod:`convergent.data.images`), item ``i`` is the next readable
  sample ``i+1, i+2, ...`` (wrapping around; deterministic, so the same index always yields
  the same image), and every sample passed over is named in the item's ``"skipped"`` field, a
  list of ``(path, reason)``;
* or, with ``verify`` (``--data.verify``), when the dataset is built: every image is decoded
  once and those that fail are dropped and counted then (:mod:`convergent.data.verify`), so the
  count is known before training.

DataLoader workers are copies of the dataset, so what a worker finds cannot reach the
parent's ``skips`` directly; instead :func:`convergent.data.collate.collate` concatenates the
items' ``"skipped"`` lists into the batch, and ``dataset.skips.merge(batch["skipped"])``
counts each path once (:class:`~convergent.data.skips.SkipLog`), so ``dataset.skips.total``
at the end of a run counts every unreadable file met, with any ``num_workers``.
"""

import os
from pathlib import Path

import torch

from convergent.data.collate import read_next
from convergent.data.images import IMAGE_EXTENSIONS, decode_array
from convergent.data.limits import MAX_IMAGE_PIXELS
from convergent.data.protocol import Dataset
from convergent.data.skips import SkipLog, reason_of
from convergent.data.splits import evenly_spaced
from convergent.data.verify import verify_images

SPLIT_DIRS = {"train": ("train",), "val": ("val", "validation", "test"), "test": ("test", "val", "validation")}
"""Split -> sub-folder names tried in order, when ``root`` has split folders."""
_ALL_SPLIT_DIRS = frozenset(n for names in SPLIT_DIRS.values() for n in names)


def _visible(entries) -> list[os.DirEntry]:
    return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _subdirs(path: Path) -> list[str]:
    with os.scandir(path) as it:
        return [e.name for e in _visible(it) if e.is_dir()]


def _walk_files(path: Path) -> list[os.DirEntry]:
    """Visible files under ``path``, recursively, in sorted (deterministic) order."""
    files = []
    with os.scandir(path) as it:
        entries = _visible(it)
    for e in entries:
        if e.is_dir():
            files += _walk_files(Path(e.path))
        elif e.is_file():
            files.append(e)
    return files


def _check(entry: os.DirEntry) -> str | None:
    """Why ``entry`` cannot be a sample, from name and size alone; None if it may be one."""
    suffix = os.path.splitext(entry.name)[1].lower()
    if suffix not in IMAGE_EXTENSIONS:
        return f"not an image (extension {suffix or 'none'!r})"
    if entry.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None


def scan(folder: Path, classes: list[str] | None) -> tuple[list[str], list[int], list[tuple[str, str]]]:
    """``(paths, labels, skipped)`` of ``folder``: class sub-folders if ``classes`` (labels are
    indices into it), else flat (labels -1)."""
    paths, labels, skipped = [], [], []

    def add(entries, label):
        for e in entries:
            reason = _check(e)
            if reason is None:
                paths.append(e.path)
                labels.append(label)
            else:
                skipped.append((e.path, reason))

    with os.scandir(folder) as it:
        top = [e for e in _visible(it) if e.is_file()]
    if classes is None:
        add(top, -1)
        return paths, labels, skipped
    skipped += [(e.path, "outside class folders") for e in top]
    for name in _subdirs(folder):
        add(_walk_files(folder / name), classes.index(name))
    return paths, labels, skipped


def decode(path, img_size: int, in_chans: int, max_pixels: int | None = MAX_IMAGE_PIXELS) -> torch.Tensor:
    """``(in_chans, img_size, img_size)`` uint8: RGB (alpha flattened onto white) or L,
    centre-cropped to a square and resized (bilinear, antialiased) to ``img_size``. ``path``: a
    file name or a binary file. :class:`~convergent.data.images.ImageTooLarge` before decoding
    when the header declares more than ``max_pixels`` pixels (None: no cap but Pillow's)."""
    array = decode_array(path, img_size, in_chans, max_pixels)  # (S, S, C)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()  # (C, S, S)


class ImageFolder(Dataset):
    """Items ``{"image": uint8 (C, S, S), "label": int, "skipped": [(path, reason), ...]}``;
    images with more than ``max_pixels`` pixels are skipped as "too large" (None: no cap)."""

    name = "image-folder"
    batch_keys = ("image", "label")

    def __init__(self, paths, labels, classes, skipped, img_size: int, in_chans: int, source: str,
                 max_pixels: int | None = MAX_IMAGE_PIXELS):  # fmt: skip
        skips = SkipLog()
        for path, detail in skipped:  # found by the directory scan
            skips.add(path, reason_of(detail), detail)
        super().__init__(source, classes, skips)
        self.paths = list(paths)
        self.labels = torch.tensor(labels, dtype=torch.int64)  # (N,); -1 when unlabelled
        self.img_size = img_size
        self.in_chans = in_chans
        self.max_pixels = max_pixels
        self._bad: dict[int, str] = {}  # index -> reason, found by this process

    def __len__(self) -> int:
        return len(self.paths)

    def image(self, i: int) -> torch.Tensor:
        """Image ``i`` ``(C, S, S)`` uint8 (raises if it cannot be decoded or is too large)."""
        return decode(self.paths[i], self.img_size, self.in_chans, self.max_pixels)

    def __getitem__(self, i: int) -> dict:
        """Item ``i``, or the next readable one (wrapping around) when its file cannot be decoded."""
        j, image, passed = read_next(self, i, self.image, "unreadable")
        return {"image": image, "label": int(self.labels[j]), "skipped": passed}

    def select(self, keep) -> "ImageFolder":
        """Keep only the items at indices ``keep`` (in that order); returns ``self``."""
        keep = [int(k) for k in keep]
        self.paths = [self.paths[k] for k in keep]
        self.labels = self.labels[torch.tensor(keep, dtype=torch.int64)]
        self._bad = {}
        return self


def _resolve(root: Path, split: str) -> tuple[Path, list[Path], str]:
    """``(folder, class_roots, note)``: the folder of ``split`` and the folders whose sub-folders
    name the classes (all split folders, so labels agree between splits)."""
    present = [d for d in _subdirs(root) if d in _ALL_SPLIT_DIRS]
    if not present:
        return root, [root], " (no split folders: every split reads these images)"
    for name in SPLIT_DIRS.get(split, (split,)):
        if name in present:
            return root / name, [root / d for d in present], ""
    raise FileNotFoundError(f"image-folder: {root} has split folders {present} but none for split {split!r}")


def build(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
          max_image_pixels: int | None = MAX_IMAGE_PIXELS, verify: bool = False) -> ImageFolder:  # fmt: skip
    """The images under ``root`` (see the module docstring for the layouts); ``verify``: decode
    every image now (:func:`~convergent.data.verify.verify_images`)."""
    if root is None:
        raise ValueError("image-folder needs a directory: set data.root (--data.root DIR)")
    if in_chans not in (1, 3):
        raise ValueError(f"image-folder: in_chans must be 1 (L) or 3 (RGB), got {in_chans}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image-folder: {root} is not a directory")
    folder, class_roots, note = _resolve(root, split)
    names = sorted({d for r in class_roots for d in _subdirs(r)})
    paths, labels, skipped = scan(folder, names or None)
    if not paths:
        read = " ".join(sorted(IMAGE_EXTENSIONS))
        raise ValueError(f"image-folder: no images in {folder} ({len(skipped)} files skipped; extensions read: {read})")
    if limit is not None and limit < len(paths):  # evenly spaced, so every class keeps its share
        keep = evenly_spaced(len(paths), limit)
        paths, labels = [paths[k] for k in keep], [labels[k] for k in keep]
    kind = f"{len(names)} classes" if names else "unlabelled"
    where = f"({kind}) from {folder}{note}"
    dataset = ImageFolder(paths, labels, names, skipped, img_size, in_chans,
                          f"image-folder {split}: {len(paths)} images {where}", max_image_pixels)  # fmt: skip
    dataset.heldout = folder != root  # False: every split reads the same images (no split folders)
    if verify and (dataset.heldout or split == "train"):  # not twice: a split without its folder is train's images
        verify_images(dataset, "unreadable")  # the unreadable images dropped now, so the count says what is read
        dataset.source = f"image-folder {split}: {len(dataset)} images {where}"
    return dataset
