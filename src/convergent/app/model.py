"""What a model is to an index: :class:`ModelInfo` (recorded in the index, compared on every
query) and the :class:`Embedder` contract both back ends (PyTorch, onnxruntime) fulfil."""

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

from convergent.app.errors import ModelMismatch

KINDS = ("image-text", "image")
"""``image-text``: a CLIP / SigLIP run (text and image queries); ``image``: an image encoder
(image queries only)."""


@dataclass(frozen=True)
class ModelInfo:
    """The model an index was made with and how it reads images and text."""

    path: str
    """Where it was loaded from (a run, an encoder directory, an ONNX export)."""
    fingerprint: str
    """SHA-256 of the weights file it was built from: the same for a run and its ONNX export."""
    kind: str
    """One of :data:`KINDS`."""
    dim: int
    """Embedding width."""
    img_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_length: int | None = None
    """Text length in tokens (image-text models)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelInfo":
        data = dict(data, mean=tuple(data["mean"]), std=tuple(data["std"]))
        return cls(**data)


class Embedder(Protocol):
    """Images and texts to L2-normalised float32 vectors ``(B, dim)``."""

    info: ModelInfo

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        """``(B, img_size, img_size, in_chans)`` uint8 (as :func:`convergent.data.images.decode_array`
        returns) → ``(B, dim)``."""

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts → ``(B, dim)``; :class:`~convergent.app.errors.AppError` for an image model."""


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 (hex) of the file at ``path``, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def normalized(pixels: np.ndarray, mean, std) -> np.ndarray:
    """uint8 ``(B, S, S, C)`` → float32 ``(B, C, S, S)``, ``(x / 255 - mean) / std`` per channel
    (:func:`convergent.data.transforms.normalize`, in numpy)."""
    x = pixels.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - m) / s, dtype=np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` scaled to unit L2 norm (float32)."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_same_model(recorded: dict, info: ModelInfo, index: str) -> None:
    """:class:`ModelMismatch` unless ``info`` has the fingerprint ``recorded`` (an index's model)."""
    if recorded.get("fingerprint") != info.fingerprint or recorded.get("dim") != info.dim:
        raise ModelMismatch(
            f"{index} was made with the model at {recorded.get('path')} (weights sha256 "
            f"{str(recorded.get('fingerprint'))[:12]}…, dim {recorded.get('dim')}); {info.path} is a different model "
            f"(sha256 {info.fingerprint[:12]}…, dim {info.dim}). Query with that model (or its ONNX export), "
            "or index into a new --out"
        )
