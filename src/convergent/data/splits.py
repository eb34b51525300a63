"""Splits, shared by the datasets (torch-free): which files of a ``root`` a split reads
(``text-lines``, ``image-text-pairs``), the ``limit`` subset and ``source`` line of the result,
and the stable hash splits of the builtin datasets (WordNet, emoji).

A ``root`` is a file (every split reads it, ``heldout`` False), a directory with split files
``<name>.<suffix>`` (and, where allowed, split folders ``<name>/``) for the names of
:data:`SPLIT_NAMES` (``split`` picks one; ``test`` and ``val`` stand in for each other), or a
directory without them (all its files, read by every split). Hidden files are ignored.
"""

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

SPLIT_NAMES = {
    "train": ("train",),
    "val": ("val", "validation", "valid", "dev", "test"),
    "test": ("test", "val", "validation", "valid", "dev"),
}
"""Split -> file/folder names tried in order, when ``root`` has split files."""
ALL_SPLIT_NAMES = frozenset(n for names in SPLIT_NAMES.values() for n in names)


def visible_files(folder: Path, suffixes: Sequence[str]) -> list[Path]:
    """Files directly in ``folder`` ending in one of ``suffixes`` (any case), not hidden, sorted."""
    return [
        p for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes
    ]  # fmt: skip


def split_files(root: Path, suffixes: Sequence[str], folders: bool = False) -> dict[str, list[Path]]:
    """Split name -> files: ``root/<name>.<suffix>`` files, and (``folders``) the files of
    ``root/<name>/`` folders."""
    found: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if folders and entry.is_dir() and entry.name in ALL_SPLIT_NAMES:
            found[entry.name] = visible_files(entry, suffixes)
        elif entry.is_file() and entry.stem in ALL_SPLIT_NAMES and entry.suffix.lower() in suffixes:
            found.setdefault(entry.stem, []).append(entry)
    return found


def resolve(
    name: str, root: Path, split: str, suffixes: Sequence[str], folders: bool = False
) -> tuple[list[Path], list[Path], bool]:
    """``(files of split, files of every split, heldout)`` of ``root`` (layouts: module docstring);
    ``name`` (the dataset's) starts every error."""
    if root.is_file():
        return [root], [root], False
    if not root.is_dir():
        raise FileNotFoundError(f"{name}: {root}: no such file or directory")
    splits = split_files(root, suffixes, folders)
    if not splits:
        files = visible_files(root, suffixes)
        if not files:
            raise FileNotFoundError(f"{name}: no {'/'.join(suffixes)} files in {root}")
        return files, files, False
    everything = [p for files in splits.values() for p in files]
    for candidate in SPLIT_NAMES.get(split, (split,)):
        if splits.get(candidate):
            return splits[candidate], everything, True
    raise FileNotFoundError(f"{name}: {root} has split files {sorted(splits)} but none for split {split!r}")


def evenly_spaced(n: int, limit: int) -> np.ndarray:
    """``(limit,)`` int64 indices spread evenly over ``range(n)`` (first and last included): a
    ``limit`` subset in which every class keeps its share when items are ordered by class."""
    return np.linspace(0, n - 1, limit).round().astype(np.int64)


def finish(dataset, name: str, split: str, files: Sequence[Path], heldout: bool, limit: int | None, unit: str):
    """Keep ``limit`` evenly spaced items (``dataset.select``), then set ``dataset.heldout`` and
    ``dataset.source`` (``"<name> <split>: <n> <unit> (<k> classes) from <files>"``); returns it."""
    if limit is not None and limit < len(dataset):
        dataset.select(evenly_spaced(len(dataset), limit))
    where = files[0] if len(files) == 1 else f"{len(files)} files in {files[0].parent}"
    note = "" if heldout else f" (every split reads these {unit})"
    kind = f"{len(dataset.classes)} classes" if dataset.classes else "unlabelled"
    dataset.source = f"{name} {split}: {len(dataset)} {unit} ({kind}) from {where}{note}"
    dataset.heldout = heldout
    return dataset


def stable_hash(key: str) -> int:
    """32-bit BLAKE2b of ``key``: the same on every machine and Python run, and unlike CRC-32 not
    affine in its input, so hashes of ``"subset:" + key`` and ``key`` are unrelated."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=4).digest(), "big")


def hash_split(h: int, fractions: dict[str, float]) -> str:
    """The split of a 32-bit hash ``h``: ``fractions`` (split -> fraction, in order, summing to 1)
    cut ``[0, 2**32)`` into consecutive ranges."""
    u, edge = h / 2**32, 0.0
    for split, fraction in fractions.items():
        edge += fraction
        if u < edge:
            return split
    return split  # u rounds to 1.0 at most: the last split
