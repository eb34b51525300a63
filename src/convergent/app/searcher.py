"""Queries against an index: a text (image-text models) or an image, with the model that made
the index (or its ONNX export: the same weights fingerprint)."""

import threading
from pathlib import Path
from typing import IO

from convergent.app.errors import AppError
from convergent.app.load import load_embedder
from convergent.app.model import Embedder, check_same_model, unit_rows
from convergent.app.store import Index
from convergent.data.images import decode_array
from convergent.data.limits import MAX_IMAGE_PIXELS

MAX_K = 1000
"""Most results one query returns."""


class Searcher:
    """An :class:`~convergent.app.store.Index` and the :class:`~convergent.app.model.Embedder`
    that made it (checked); safe to share between threads (model calls take turns)."""

    def __init__(self, index: Index, embedder: Embedder):
        check_same_model(index.model, embedder.info, str(index.directory))
        self.index, self.embedder = index, embedder
        self._model_lock = threading.Lock()

    @property
    def kind(self) -> str:
        return self.embedder.info.kind

    def text(self, query: str, k: int = 10) -> list[dict]:
        """The ``k`` images nearest to ``query``; :class:`AppError` for an empty query."""
        query = " ".join(str(query or "").split())
        if not query:
            raise AppError("empty query: give some words to search for")
        _check_k(k)
        with self._model_lock:
            vec = self.embedder.embed_texts([query])
        return self.index.search(unit_rows(vec), k)[0]

    def image(self, source: str | Path | IO[bytes], k: int = 10, max_pixels: int | None = MAX_IMAGE_PIXELS) -> list[dict]:
        """The ``k`` images nearest to the image ``source`` (a path or a binary file); the image
        is refused before decoding when it declares more than ``max_pixels`` pixels."""
        _check_k(k)
        info = self.embedder.info
        try:
            pixels = decode_array(source, info.img_size, info.in_chans, max_pixels)
        except Exception as e:  # noqa: BLE001 - whatever Pillow raises, the query is no image
            raise AppError(f"the query is not a readable image ({type(e).__name__}: {e})") from e
        with self._model_lock:
            vec = self.embedder.embed_images(pixels[None])
        return self.index.search(unit_rows(vec), k)[0]


def _check_k(k: int) -> None:
    if not 1 <= k <= MAX_K:
        raise AppError(f"k must be between 1 and {MAX_K}, got {k}")


def open_searcher(index: str | Path, model: str | Path | None = None, threads: int | None = None) -> Searcher:
    """The :class:`Searcher` of index directory ``index`` with ``model`` (default: the model
    path the index records) on ``threads`` CPU threads (None: the runtime's default)."""
    opened = Index(index)
    return Searcher(opened, load_embedder(model or opened.model["path"], threads))


def as_rows(hits: list[dict], root: str) -> list[dict]:
    """Hits with their path relative to the indexed folder too (``name``)."""
    out = []
    for h in hits:
        try:
            name = str(Path(h["path"]).relative_to(root))
        except ValueError:
            name = h["path"]
        out.append({**h, "name": name, "score": round(float(h["score"]), 6)})
    return out


__all__ = ["MAX_K", "Searcher", "as_rows", "open_searcher"]
