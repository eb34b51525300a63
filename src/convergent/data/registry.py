"""Dataset registry. Torch-free: one line per dataset names its builder lazily, so
``convergent list datasets`` answers without importing torch.

    register_dataset("fashion-mnist", "convergent.data.builtin.fashion_mnist:build", "images", "...")

``build_dataset(name, split, ...)`` imports the builder only then. A builder is a function
taking the keyword arguments of :func:`build_dataset` and returning a
:class:`convergent.data.protocol.Dataset` (the contract: ``batch_keys``, ``classes``,
``skips``, ``source``, ...; ``build_dataset`` sets its ``name``) whose items are dicts
(images: ``{"image": uint8 (C, S, S), "label": int}``; text: ``{"text": str, "label": int}``,
see :mod:`convergent.data.text`). Text builders ignore
``img_size``, ``in_chans``, ``max_image_pixels`` and ``verify``. Image–text builders return a
:class:`convergent.data.pairs.ImageTextPairs` (items ``{"image", "text", "label", "skipped"}``,
one per image; ``captions`` holds all captions of each image).
"""

from dataclasses import dataclass
from typing import Any

from convergent.data.limits import MAX_IMAGE_PIXELS
from convergent.registry import Registry, load_target


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    target: str
    """``"module:function"`` building the dataset."""
    kind: str
    """What the items hold: ``images`` (image + label), ``text`` (text + label), ``image-text``
    (image + caption + label)."""
    description: str


_DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(name: str, target: str, kind: str, description: str) -> None:
    """Register ``target`` (``"module:function"``) under ``name``."""
    if target.count(":") != 1:
        raise ValueError(f"dataset {name!r}: target {target!r} must be 'module:function'")
    _DATASETS.add(name, DatasetEntry(name, target, kind, description))


register_dataset(
    "fashion-mnist",
    "convergent.data.builtin.fashion_mnist:build",
    "images",
    "Fashion-MNIST, 10 clothing classes, 28x28 grayscale (Debian package files, --data.root, or bundled 6k/1k subset)",
)
register_dataset(
    "fashion-mnist-captions",
    "convergent.data.builtin.fashion_mnist_captions:build",
    "image-text",
    "Fashion-MNIST with each image captioned by its class name ('sneaker', 'ankle boot'), for text-to-image, "
    "captioning and CLIP (same files and splits as fashion-mnist)",
)
register_dataset(
    "image-folder",
    "convergent.data.image_folder:build",
    "images",
    "A directory of images: class sub-folders (label = sorted index) or flat (unlabelled); "
    "optional train/val/test split folders",
)
register_dataset(
    "wordnet-glosses",
    "convergent.data.builtin.wordnet:build",
    "text",
    "WordNet 3.0 glosses (definition + examples), label = part of speech (4); hash split 0.9/0.05/0.05, "
    "deduplicated (Debian package files, --data.root, or bundled 10k subset)",
)
register_dataset(
    "wordnet-definitions",
    "convergent.data.builtin.wordnet:build_definitions",
    "text",
    "WordNet 3.0 definitions without examples: the 4-way part-of-speech benchmark (same splits as wordnet-glosses)",
)
register_dataset(
    "image-text-pairs",
    "convergent.data.pairs:build",
    "image-text",
    "Image-text pairs from a CSV/TSV/JSONL/JSON file ('image' path, 'text' or list of captions, optional "
    "'label') or a directory with train/val/test files; bad rows and images skipped and counted",
)
register_dataset(
    "image-text-shards",
    "convergent.data.shards:build",
    "image-text",
    "Image-text pairs in webdataset-style tar shards (`convergent data shard`): the training split "
    "streamed (data larger than memory or disk), held-out split folders read into memory",
)
register_dataset(
    "emoji",
    "convergent.data.builtin.emoji:build",
    "image-text",
    "Noto emoji images (64px RGBA on white) with their names, label = category (9); skin-tone variants "
    "with their base; hash split 0.8/0.1/0.1 (npm emoji-datasource-google files, --data.root, or bundled ~500)",
)
register_dataset(
    "text-lines",
    "convergent.data.text:build",
    "text",
    "Text (one document per line) or JSONL ('text', optional 'label') files: a file, or a directory "
    "with train/val/test files; bad lines skipped and counted",
)


def names() -> list[str]:
    """Registered dataset names, sorted."""
    return _DATASETS.names()


def entry(name: str) -> DatasetEntry:
    """The registry entry of ``name``; KeyError with close matches if unknown."""
    return _DATASETS.get(name)


def describe(name: str) -> str:
    """One-line description of dataset ``name``."""
    return entry(name).description


def build_dataset(
    name: str,
    split: str,
    root: str | None = None,
    img_size: int = 32,
    in_chans: int = 3,
    limit: int | None = None,
    max_image_pixels: int | None = MAX_IMAGE_PIXELS,
    verify: bool = False,
) -> Any:
    """Build split ``split`` of dataset ``name`` (imports its module, and torch, only now).

    ``root``: where the data lies (None: the dataset's default location or bundled subset);
    ``img_size``/``in_chans``: images are decoded to ``(in_chans, img_size, img_size)`` uint8;
    ``limit``: at most this many samples (None: all); ``max_image_pixels``: images whose header
    declares more pixels are skipped as "too large" before decoding (None: no cap, see
    :mod:`convergent.data.limits`); ``verify``: image datasets read from files decode every image
    once now and drop the unreadable ones, so the skip count is known before training
    (:mod:`convergent.data.verify`).
    """
    e = entry(name)
    if limit is not None and limit < 1:
        raise ValueError(f"dataset {name!r}: limit must be >= 1 or None, got {limit}")
    dataset = load_target(e.target)(split=split, root=root, img_size=img_size, in_chans=in_chans, limit=limit,
                                    max_image_pixels=max_image_pixels, verify=verify)  # fmt: skip
    dataset.name = name  # the contract's name (convergent.data.protocol): the registered one
    return dataset
