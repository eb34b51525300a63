"""Fashion-MNIST (Zalando SE 2017, MIT): 10 clothing classes, 28x28 grayscale, 60k train / 10k test.

Files are looked for, in order, in ``root`` (when given: a directory holding the four idx
files, gzip or not), in :data:`SYSTEM_DIR` (Debian package ``dataset-fashion-mnist``), and
else in the subset bundled with this package (:data:`BUNDLED_DIR`: the first 600 per class of
train and 100 per class of test, original order, built by :func:`write_subset`).

Images are resized once, vectorised over the whole array, when the split is loaded, so an
item is only an index into a uint8 tensor.
"""

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convergent.data.idx import read_idx, write_idx
from convergent.data.protocol import Dataset

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
BUNDLED_DIR = Path(__file__).resolve().parent / "assets" / "fashion_mnist"
PREFIX = {"train": "train", "test": "t10k"}
"""Split -> file-name prefix."""
_RESIZE_CHUNK = 4096
"""Images resized per interpolate call (bounds the float32 scratch memory)."""


def split_files(directory: Path, split: str) -> tuple[Path, Path] | None:
    """``(images, labels)`` of ``split`` in ``directory`` (``.gz`` or plain), None if absent."""
    found = []
    for kind in ("images-idx3", "labels-idx1"):
        name = f"{PREFIX[split]}-{kind}-ubyte"
        path = next((p for p in (directory / f"{name}.gz", directory / name) if p.is_file()), None)
        if path is None:
            return None
        found.append(path)
    return found[0], found[1]


def locate(split: str, root: str | Path | None) -> tuple[Path, Path, str]:
    """``(images, labels, where)``: the files of ``split`` and which place they came from."""
    if root is not None:
        files = split_files(Path(root), split)
        if files is None:
            want = ", ".join(f"{PREFIX[split]}-{k}-ubyte[.gz]" for k in ("images-idx3", "labels-idx1"))
            raise FileNotFoundError(f"fashion-mnist: {root} does not hold {want}")
        return (*files, f"root {root}")
    files = split_files(SYSTEM_DIR, split)
    if files is not None:
        return (*files, f"Debian package files {SYSTEM_DIR}")
    files = split_files(BUNDLED_DIR, split)
    if files is None:  # a broken install; the wheel ships these
        raise FileNotFoundError(f"fashion-mnist: bundled subset missing from {BUNDLED_DIR}")
    return (*files, f"bundled subset {BUNDLED_DIR} (install dataset-fashion-mnist or pass --data.root for all)")


def load_arrays(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` uint8, checked against each other."""
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValueError(f"{images_path}, {labels_path}: expected uint8 idx data")
    if len(images) != len(labels):
        raise ValueError(f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() >= len(CLASSES):
        raise ValueError(f"{labels_path}: label {labels.max()} out of range 0..{len(CLASSES) - 1}")
    return images, labels


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear (antialiased) resize of ``(N, H, W)`` uint8 to ``(N, 1, size, size)`` uint8."""
    x = images[:, None]  # (N, 1, H, W)
    if x.shape[-2:] == (size, size):
        return x.contiguous()
    out = torch.empty(len(x), 1, size, size, dtype=torch.uint8)
    for start in range(0, len(x), _RESIZE_CHUNK):  # chunks, not items: each call is vectorised
        chunk = x[start : start + _RESIZE_CHUNK].float()
        y = F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out[start : start + _RESIZE_CHUNK] = y.round_().clamp_(0, 255).to(torch.uint8)
    return out


class FashionMNIST(Dataset):
    """Items ``{"image": uint8 (in_chans, img_size, img_size), "label": int}``.

    ``images`` holds one channel ``(N, 1, S, S)``; items repeat it to ``in_chans``.
    ``labels`` ``(N,)`` int64 is there for evaluation code that needs all labels at once.
    Nothing is ever skipped: idx files are read whole or not at all.
    """

    name = "fashion-mnist"
    batch_keys = ("image", "label")

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, in_chans: int, source: str):
        super().__init__(source, CLASSES)
        self.images = images
        self.labels = labels
        self.in_chans = in_chans

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        image = self.images[i].expand(self.in_chans, -1, -1).contiguous()  # (C, S, S)
        return {"image": image, "label": int(self.labels[i])}


def build(split: str, root=None, img_size: int = 32, in_chans: int = 3, limit: int | None = None,
          max_image_pixels: int | None = None, verify: bool = False) -> FashionMNIST:  # fmt: skip
    """Split ``train`` or ``test`` (see the module docstring for where files are read).
    ``max_image_pixels`` and ``verify`` are ignored: the images are 28 × 28 arrays, read whole."""
    if split not in PREFIX:
        raise ValueError(f"fashion-mnist: unknown split {split!r}; expected one of {sorted(PREFIX)}")
    if img_size < 1 or in_chans < 1:
        raise ValueError(f"fashion-mnist: img_size and in_chans must be >= 1, got {img_size}, {in_chans}")
    images_path, labels_path, where = locate(split, root)
    images, labels = load_arrays(images_path, labels_path)
    if limit is not None:  # the files are shuffled, so a prefix is close to class-balanced
        images, labels = images[:limit], labels[:limit]
    resized = resize_uint8(torch.from_numpy(images), img_size)
    source = f"fashion-mnist {split}: {len(labels)} samples from {where}"
    return FashionMNIST(resized, torch.from_numpy(labels.astype(np.int64)), in_chans, source)


def write_subset(src: str | Path, dst: str | Path, per_class: dict[str, int] | None = None) -> dict[str, int]:
    """Write a class-balanced subset of the idx files in ``src`` to ``dst`` (gzip, original order):
    the first ``per_class[split]`` samples of every class. Returns samples written per split.

    The bundled subset was made with ``write_subset("/usr/share/datasets/fashion-mnist", BUNDLED_DIR)``.
    """
    per_class = per_class or {"train": 600, "test": 100}
    written = {}
    for split, k in per_class.items():
        files = split_files(Path(src), split)
        if files is None:
            raise FileNotFoundError(f"{src}: no {split} idx files")
        images, labels = load_arrays(*files)
        # rank of each sample within its class, in file order: keep those below k
        rank = np.zeros(len(labels), dtype=np.int64)
        for c in range(len(CLASSES)):
            members = labels == c
            rank[members] = np.arange(members.sum())
        keep = rank < k
        write_idx(Path(dst) / f"{PREFIX[split]}-images-idx3-ubyte.gz", images[keep])
        write_idx(Path(dst) / f"{PREFIX[split]}-labels-idx1-ubyte.gz", labels[keep])
        written[split] = int(keep.sum())
    return written
