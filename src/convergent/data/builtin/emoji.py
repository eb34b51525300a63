"""Emoji: Google Noto Emoji images paired with their names (npm ``emoji-datasource-google``):
image–text pairs for CLIP / ViLT, zero-shot category classification and image↔text retrieval.

Data: ``package/emoji.json`` (metadata, MIT © Cal Henderson) and ``package/img/google/64/<image>.png``
(64×64 RGBA, Noto Emoji, Apache-2.0). Version 16.0.0 has 1,911 base emoji and 1,875 skin-tone
variants. Get it with

    python -m convergent.data.builtin.emoji fetch     # npm pack -> ~/.cache/convergent/emoji/package
    # or by hand:  cd /tmp && npm pack emoji-datasource-google && tar xzf emoji-datasource-google-*.tgz

Files are looked for, in order, in ``root`` (the unpacked ``package/`` folder, or a folder
holding it), in ``$CONVERGENT_EMOJI_ROOT``, in :func:`cache_dir`
(``$XDG_CACHE_HOME/convergent/emoji/package``, default ``~/.cache/...``), and else in the subset
bundled with this package (:data:`BUNDLED_DIR`, built by :func:`write_subset`): about 500 base
emoji (by a hash, stratified so every class is in every split) with their skin-tone variants,
decoded at 32×32 RGB on white into ``images.npz``, and their ``emoji.json`` entries. At
``img_size`` 32 and ``in_chans`` 3 the bundled images equal those decoded from the files; other
sizes are resized from 32 (bilinear, antialiased), ``in_chans`` 1 is Pillow's luma.

**Items** (an :class:`~convergent.data.pairs.ImageTextPairs`, images decoded when the split is
built): one per image, base emoji and skin-tone variants alike. Captions of a base emoji: its
lower-cased ``name`` ("father christmas"), then its ``short_names`` with ``_`` read as a space
("santa"), each once; of a variant: each base caption followed by its tones ("father
christmas: medium skin tone"; two-person variants name two tones). ``label``: the ``category``,
9 classes (:data:`CLASSES`, in emoji.json order). The 10th category, ``Component``, is left
out: its 5 entries are the bare skin-tone swatches (U+1F3FB..1F3FF), colour patches rather
than pictures of anything, too few to learn or to test as a class.

**Splits** ``train``/``val``/``test`` (:data:`FRACTIONS` 0.8/0.1/0.1) by a stable hash (BLAKE2b,
32 bits, :func:`~convergent.data.splits.stable_hash`) of the base emoji's ``unified``
code, so a skin-tone variant is always in its base emoji's split and no emoji seen in training
is evaluated in another colour. Only entries with ``has_img_google`` and an existing image are
used; the others are skipped, counted and named (``skips``, the first
:data:`~convergent.data.skips.MAX_LISTED`), as are images that do not decode and, read from the
files, images whose header declares more than ``max_pixels`` pixels ("too large", not decoded).
Every image is decoded when the split is built, so ``verify`` has nothing to add.
"""

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from convergent.data.builtin.fashion_mnist import resize_uint8
from convergent.data.image_folder import decode
from convergent.data.limits import MAX_IMAGE_PIXELS
from convergent.data.pairs import ImageTextPairs
from convergent.data.skips import SkipLog, failure, skip
from convergent.data.splits import evenly_spaced, hash_split, stable_hash

CLASSES = [
    "Smileys & Emotion", "People & Body", "Animals & Nature", "Food & Drink", "Travel & Places",
    "Activities", "Objects", "Symbols", "Flags",
]  # fmt: skip
EXCLUDED = ("Component",)
"""Categories left out (see the module docstring)."""
TONES = {
    "1F3FB": "light skin tone", "1F3FC": "medium-light skin tone", "1F3FD": "medium skin tone",
    "1F3FE": "medium-dark skin tone", "1F3FF": "dark skin tone",
}  # fmt: skip
FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}
ENV = "CONVERGENT_EMOJI_ROOT"
NPM_PACKAGE = "emoji-datasource-google"
IMAGE_DIR = "img/google/64"
BUNDLED_DIR = Path(__file__).resolve().parent / "assets" / "emoji"
BUNDLED_SIZE = 32
BUNDLED_BASE = 500
MIN_PER_GROUP = 3
"""Least base emoji of every (class, split) in the bundled subset (all there are, if fewer)."""
KEPT_FIELDS = ("name", "unified", "image", "short_names", "category", "subcategory", "sort_order", "has_img_google")
"""Fields of an emoji.json entry kept in the bundled subset (plus ``skin_variations``)."""


class Emoji(NamedTuple):
    unified: str
    base: str
    """``unified`` of the base emoji (itself for a base emoji): what the split is hashed from."""
    image: str
    """File name under ``img/google/64/``."""
    captions: list[str]
    label: int


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/convergent/emoji/package`` (default ``~/.cache/convergent/emoji/package``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "convergent" / "emoji" / "package"


def split_of(base: str) -> str:
    """The split of a base emoji ``unified`` code, by :data:`FRACTIONS` of its stable hash."""
    return hash_split(stable_hash(base), FRACTIONS)


def base_captions(entry: dict) -> list[str]:
    """Lower-cased name, then short names (``_`` -> space), each once, in that order."""
    names = [(entry.get("name") or "").lower()] + [s.replace("_", " ") for s in entry.get("short_names") or ()]
    names = [" ".join(n.split()) for n in names]
    return list(dict.fromkeys(n for n in names if n))


def tone_name(key: str) -> str:
    """``"1F3FB-1F3FC"`` -> ``"light skin tone, medium-light skin tone"``."""
    return ", ".join(TONES.get(part, part.lower()) for part in key.split("-"))


def parse_entries(entries: list[dict], counts: Counter, skipped: list, split: str | None = None) -> list[Emoji]:
    """Every usable image of ``entries`` (emoji.json), base emoji each followed by its variants;
    only those of ``split`` (unusable ones counted and named) unless it is None."""
    found = []
    for entry in entries:
        category = entry.get("category")
        if category in EXCLUDED:
            continue
        unified, image, captions = entry.get("unified"), entry.get("image"), base_captions(entry)
        if split is not None and split_of(str(unified)) != split:
            continue
        if category not in CLASSES or not unified or not image or not captions:
            skip(counts, skipped, str(image or unified), "bad entry (category, unified, image or name)")
            continue
        label = CLASSES.index(category)
        if entry.get("has_img_google"):
            found.append(Emoji(unified, unified, image, captions, label))
        else:
            skip(counts, skipped, image, "no Google image")
        for key, variant in sorted((entry.get("skin_variations") or {}).items()):
            if not variant.get("has_img_google") or not variant.get("image"):
                skip(counts, skipped, str(variant.get("image") or f"{unified}/{key}"), "no Google image")
                continue
            tone = tone_name(key)
            toned = [f"{c}: {tone}" for c in captions]
            found.append(Emoji(variant.get("unified", f"{unified}-{key}"), unified, variant["image"], toned, label))
    return found


@functools.lru_cache(maxsize=2)
def _read_entries(path: Path, _stamp) -> list[dict]:
    """emoji.json, cached by size and time (``_stamp``), so building several splits parses once."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path}: not a JSON file ({e})") from e
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a JSON list of emoji, got {type(entries).__name__}")
    bad = next((k for k, e in enumerate(entries) if not isinstance(e, dict)), None)
    if bad is not None:
        raise ValueError(f"{path}: entry [{bad}] is {type(entries[bad]).__name__}, expected an object")
    return entries


def read_entries(path: Path) -> list[dict]:
    st = path.stat()
    return _read_entries(path, (st.st_size, st.st_mtime_ns))


def _package_dir(directory: Path) -> Path | None:
    """``directory`` or ``directory/package`` if it holds ``emoji.json`` and the 64 px images."""
    for d in (directory, directory / "package"):
        if (d / "emoji.json").is_file() and (d / IMAGE_DIR).is_dir():
            return d
    return None


def locate(root=None) -> tuple[Path, str, bool]:
    """``(directory, where, bundled)``: the package folder (or :data:`BUNDLED_DIR`) to read."""
    given = [(root, "root"), (os.environ.get(ENV), f"${ENV}")]
    for path, name in given:
        if path:
            found = _package_dir(Path(path).expanduser())
            if found is None:
                raise FileNotFoundError(
                    f"emoji: {name} {path} does not hold emoji.json and {IMAGE_DIR}/ (the unpacked npm "
                    f"package {NPM_PACKAGE}; see `python -m {__name__} fetch`)"
                )
            return found, f"{name} {found}", False
    found = _package_dir(cache_dir())
    if found is not None:
        return found, f"cache {found}", False
    if not (BUNDLED_DIR / "emoji.json").is_file():  # a broken install; the wheel ships these
        raise FileNotFoundError(f"emoji: bundled subset missing from {BUNDLED_DIR}")
    hint = f"`python -m {__name__} fetch` or --data.root for all"
    return BUNDLED_DIR, f"bundled subset {BUNDLED_DIR} ({hint})", True


def _decode_files(directory: Path, emoji: list[Emoji], img_size: int, in_chans: int, counts, skipped,
                  max_pixels: int | None = MAX_IMAGE_PIXELS):  # fmt: skip
    """``(kept, images (N, C, S, S) uint8)``: the emoji whose PNG exists, has at most
    ``max_pixels`` pixels and decodes."""
    kept, images = [], []
    for e in emoji:
        path = directory / IMAGE_DIR / e.image
        if not path.is_file():
            skip(counts, skipped, str(path), "missing image")
            continue
        try:
            images.append(decode(str(path), img_size, in_chans, max_pixels))
        except Exception as err:  # noqa: BLE001 - whatever Pillow raises, the image is unusable
            skip(counts, skipped, str(path), *failure(err, "unreadable image"))
            continue
        kept.append(e)
    return kept, torch.stack(images) if images else torch.empty(0, in_chans, img_size, img_size, dtype=torch.uint8)


def _bundled_images(emoji: list[Emoji], img_size: int, in_chans: int, counts, skipped):
    """As :func:`_decode_files`, from ``images.npz`` (32×32 RGB), converted vectorised."""
    with np.load(BUNDLED_DIR / "images.npz", allow_pickle=False) as npz:
        names, tiles = list(npz["names"]), npz["images"]  # (N,), (N, 32, 32, 3) uint8
    index = {n: k for k, n in enumerate(names)}
    kept = [e for e in emoji if e.image in index]
    for e in emoji:
        if e.image not in index:
            skip(counts, skipped, f"{BUNDLED_DIR / 'images.npz'}:{e.image}", "missing image")
    x = torch.from_numpy(tiles[[index[e.image] for e in kept]]).permute(0, 3, 1, 2)  # (N, 3, 32, 32)
    if in_chans == 1:  # Pillow's "L": ITU-R 601-2 luma, in 16-bit fixed point
        w = torch.tensor([19595, 38470, 7471], dtype=torch.int64).view(1, 3, 1, 1)
        x = (((x.long() * w).sum(1, keepdim=True) + 0x8000) >> 16).to(torch.uint8)  # (N, 1, 32, 32)
    n, c = x.shape[:2]
    if img_size != BUNDLED_SIZE:
        x = resize_uint8(x.reshape(n * c, BUNDLED_SIZE, BUNDLED_SIZE), img_size).reshape(n, c, img_size, img_size)
    return kept, x.contiguous()


def load(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
         max_pixels: int | None = MAX_IMAGE_PIXELS) -> ImageTextPairs:  # fmt: skip
    """Split ``split`` of the emoji pairs (see the module docstring)."""
    if split not in FRACTIONS:
        raise ValueError(f"emoji: unknown split {split!r}; expected one of {list(FRACTIONS)}")
    if in_chans not in (1, 3):
        raise ValueError(f"emoji: in_chans must be 1 (L) or 3 (RGB), got {in_chans}")
    directory, where, bundled = locate(root)
    counts, skipped = Counter(), []
    emoji = parse_entries(read_entries(directory / "emoji.json"), counts, skipped, split)
    if limit is not None and limit < len(emoji):  # evenly spaced: the file is ordered by category
        emoji = [emoji[k] for k in evenly_spaced(len(emoji), limit)]
    read = _bundled_images if bundled else functools.partial(_decode_files, directory, max_pixels=max_pixels)
    emoji, images = read(emoji, img_size, in_chans, counts, skipped)
    if not emoji:
        raise ValueError(f"emoji: no usable image in split {split!r} of {where} ({sum(counts.values())} skipped)")
    bases = sum(e.unified == e.base for e in emoji)
    kinds = f"{bases} emoji + {len(emoji) - bases} skin-tone variants"
    source = f"emoji {split}: {len(emoji)} images ({kinds}) from {where}"
    dataset = ImageTextPairs([e.image for e in emoji], [e.captions for e in emoji], [e.label for e in emoji], CLASSES,
                             img_size, in_chans, source, images=images,
                             caption="random" if split == "train" else "first",
                             skips=SkipLog(counts, skipped))  # fmt: skip
    dataset.unified = [e.unified for e in emoji]  # code of each item's image
    dataset.base_unified = [e.base for e in emoji]  # code of its base emoji (= unified for a base emoji)
    return dataset


def build(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
          max_image_pixels: int | None = MAX_IMAGE_PIXELS, verify: bool = False) -> ImageTextPairs:  # fmt: skip
    """The registered ``emoji`` dataset: :func:`load` (``verify`` is ignored: every image is
    decoded when the split is built)."""
    return load(split, root, img_size, in_chans, limit, max_image_pixels)


# --- getting the files, and the bundled subset ------------------------------------------------
def fetch(dest: str | Path | None = None, tgz: str | Path | None = None, version: str | None = None) -> Path:
    """Unpack ``emoji.json``, ``LICENSE``, ``package.json`` and ``img/google/64/`` of the npm
    package (``tgz``: a downloaded ``.tgz``; else ``npm pack`` fetches it, ``version`` default
    latest) into ``dest`` (default :func:`cache_dir`), replacing what is there; returns ``dest``."""
    dest = Path(dest).expanduser() if dest is not None else cache_dir()
    with tempfile.TemporaryDirectory() as tmp:
        if tgz is None:
            spec = NPM_PACKAGE + (f"@{version}" if version else "")
            try:
                done = subprocess.run(["npm", "pack", spec], cwd=tmp, capture_output=True, text=True)
            except FileNotFoundError as e:
                raise RuntimeError("emoji fetch needs npm (Node.js) on PATH, or pass a downloaded .tgz") from e
            if done.returncode != 0:
                raise RuntimeError(f"npm pack {spec} failed: {done.stderr.strip()[-2000:]}")
            tgz = next(Path(tmp).glob("*.tgz"))
        staging = Path(tmp) / "package"
        with tarfile.open(tgz, "r:gz") as tar:
            for member in tar:
                name = member.name
                wanted = name in ("package/emoji.json", "package/LICENSE", "package/package.json") or (
                    name.startswith(f"package/{IMAGE_DIR}/") and name.endswith(".png"))  # fmt: skip
                if not member.isfile() or not wanted or ".." in name.split("/"):
                    continue
                target = Path(tmp) / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
        if _package_dir(staging) is None:
            raise ValueError(f"{tgz}: no package/emoji.json and package/{IMAGE_DIR}/ inside")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), dest)
    return dest


def write_subset(src: str | Path, dst: str | Path = BUNDLED_DIR, n_base: int = BUNDLED_BASE) -> dict[str, int]:
    """Write the bundled subset from the package folder ``src`` to ``dst``: about ``n_base`` base
    emoji (Component left out), from every (class, split) its share of ``n_base`` but at least
    :data:`MIN_PER_GROUP`, those with the smallest :func:`stable_hash` of ``"subset:<unified>"``
    (a hash apart from the split hash), with all their skin-tone variants; ``emoji.json`` holds
    their entries (fields :data:`KEPT_FIELDS`, in file order), ``images.npz`` their images
    decoded at 32×32 RGB. Returns counts written.

    The bundled subset was made with ``write_subset("/tmp/package")`` (version 16.0.0).
    """
    src, dst = _package_dir(Path(src).expanduser()), Path(dst)
    if src is None:
        raise FileNotFoundError("emoji: the source folder does not hold emoji.json and the 64 px images")
    entries = [e for e in read_entries(src / "emoji.json") if e.get("category") in CLASSES and e.get("has_img_google")]
    groups: dict[tuple[str, str], list[str]] = {}
    for e in entries:
        groups.setdefault((e["category"], split_of(e["unified"])), []).append(e["unified"])
    chosen = set()
    for codes in groups.values():  # each (class, split) its share, at least MIN_PER_GROUP
        k = max(MIN_PER_GROUP, round(n_base * len(codes) / len(entries)))
        chosen.update(sorted(codes, key=lambda u: stable_hash("subset:" + u))[:k])
    kept = []
    for e in entries:
        if e["unified"] in chosen:
            entry = {k: e[k] for k in KEPT_FIELDS if k in e}
            variants = {k: {f: v[f] for f in ("unified", "image", "has_img_google") if f in v}
                        for k, v in (e.get("skin_variations") or {}).items()}  # fmt: skip
            kept.append({**entry, "skin_variations": variants} if variants else entry)
    emoji = parse_entries(kept, Counter(), [])
    images = np.stack([decode(str(src / IMAGE_DIR / e.image), BUNDLED_SIZE, 3).permute(1, 2, 0).numpy() for e in emoji])
    dst.mkdir(parents=True, exist_ok=True)
    text = json.dumps(kept, ensure_ascii=False, separators=(",", ":"))
    (dst / "emoji.json").write_text(text + "\n", encoding="utf-8")
    np.savez_compressed(dst / "images.npz", names=np.array([e.image for e in emoji]), images=images)
    return {"base": len(kept), "images": len(emoji)}


def main(argv: list[str] | None = None) -> int:
    """``python -m convergent.data.builtin.emoji {fetch,subset,info}``."""
    p = argparse.ArgumentParser(
        prog=f"python -m {__name__}", description="Get the emoji data, or rebuild the bundled subset."
    )
    sub = p.add_subparsers(dest="action", required=True)
    f = sub.add_parser("fetch", help=f"npm pack {NPM_PACKAGE} and unpack its metadata and 64 px images")
    f.add_argument("--dest", default=None, help=f"target folder (default: {cache_dir()})")
    f.add_argument("--tgz", default=None, help="an already downloaded package .tgz (no npm needed)")
    f.add_argument("--version", default=None, help="package version (default: latest)")
    s = sub.add_parser("subset", help="rebuild the bundled subset from an unpacked package")
    s.add_argument("src", help="the unpacked package/ folder")
    s.add_argument("--dst", default=str(BUNDLED_DIR))
    sub.add_parser("info", help="where the data is read from, and images per split and class")
    args = p.parse_args(argv)
    if args.action == "fetch":
        print(f"emoji data -> {fetch(args.dest, args.tgz, args.version)}")
    elif args.action == "subset":
        print(write_subset(args.src, args.dst))
    else:
        for split in FRACTIONS:
            ds = load(split)
            per_class = Counter(ds.labels.tolist())
            print(ds.source)
            print("  " + ", ".join(f"{CLASSES[c]}: {per_class[c]}" for c in range(len(CLASSES))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
