"""The onnxruntime embedder: the files :mod:`convergent.app.export` writes, run without torch.

An export directory holds ``onnx.json`` (the :class:`~convergent.app.model.ModelInfo` of the
model it came from, so an index made with the PyTorch run is queried by its export), the image
tower ``image.onnx`` and, for an image-text model, ``text.onnx`` with the run's tokenizer
(``tokenizer/tokenizer.json``, HF ``tokenizers``)."""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tokenizers

from convergent.app.errors import AppError
from convergent.app.model import ModelInfo, normalized

MANIFEST = "onnx.json"
FORMAT = "convergent-onnx"


def is_export(path: str | Path) -> bool:
    """Whether ``path`` is a directory written by :func:`convergent.app.export.export_onnx`."""
    return (Path(path) / MANIFEST).is_file()


class TextEncoder:
    """Texts → ``input_ids`` / ``attention_mask`` ``(B, max_length)`` int64, as
    :meth:`convergent.data.tokenizer.Tokenizer.encode_batch` with ``padding="max_length"``:
    ``cls pieces sep``, truncated keeping the final sep, right-padded with ``pad``."""

    def __init__(self, directory: Path, max_length: int):
        meta = json.loads((directory / "convergent_tokenizer.json").read_text(encoding="utf-8"))
        self.backend = tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json"))
        self.backend.encode_special_tokens = True  # a text spelling "[MASK]" is text
        ids = {role: self.backend.token_to_id(token) for role, token in meta["specials"].items()}
        self.cls, self.sep, self.pad, self.max_length = ids["cls"], ids["sep"], ids["pad"], max_length

    def __call__(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        rows = [[self.cls, *e.ids[: self.max_length - 2], self.sep]
                for e in self.backend.encode_batch(list(texts), add_special_tokens=False)]  # fmt: skip
        ids = np.full((len(rows), self.max_length), self.pad, dtype=np.int64)
        mask = np.zeros((len(rows), self.max_length), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = row, 1
        return {"input_ids": ids, "attention_mask": mask}


class OnnxEmbedder:
    """:class:`~convergent.app.model.Embedder` on onnxruntime (CPU)."""

    def __init__(self, directory: str | Path, threads: int | None = None):
        directory = Path(directory).expanduser().resolve()
        try:
            manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
            if manifest.get("format") != FORMAT:
                raise ValueError(f"format {manifest.get('format')!r}, expected {FORMAT!r}")
            self.info = ModelInfo.from_dict(manifest["model"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise AppError(f"{directory / MANIFEST}: not an ONNX export of convergent ({e})") from e
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.image = ort.InferenceSession(str(directory / manifest["image"]), options, providers=["CPUExecutionProvider"])
        self.text = self.tokenize = None
        if manifest.get("text"):
            self.text = ort.InferenceSession(str(directory / manifest["text"]), options,
                                             providers=["CPUExecutionProvider"])  # fmt: skip
            self.tokenize = TextEncoder(directory / manifest["tokenizer"], self.info.max_length)

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        x = normalized(pixels, self.info.mean, self.info.std)
        return self.image.run(None, {"pixels": x})[0].astype(np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.text is None:
            raise AppError(f"{self.info.path} is an image encoder: it answers image queries only")
        return self.text.run(None, self.tokenize(texts))[0].astype(np.float32)
