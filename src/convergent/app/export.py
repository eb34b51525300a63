"""``convergent export RUN --format onnx``: the towers of a model as ONNX files with a dynamic
batch, each checked against PyTorch with onnxruntime before the export counts as done.

A CLIP / SigLIP run gives ``image.onnx`` (normalised pixels → unit vectors) and ``text.onnx``
(token ids + mask, padded to the run's ``max_length`` → unit vectors) with the run's tokenizer;
another run's saved encoder, or an encoder directory, gives ``image.onnx`` (pooled features).
``onnx.json`` records the source model's :class:`~convergent.app.model.ModelInfo` (same
fingerprint), so indexes made with the run are searched with the export and vice versa. Files
are written to a temporary directory and renamed into place."""

import json
import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from convergent.app.errors import AppError
from convergent.app.model import normalized
from convergent.app.onnx_model import FORMAT, MANIFEST, TextEncoder
from convergent.app.torch_model import TorchEmbedder, load_torch

TOLERANCE = 1e-4
"""Largest absolute difference allowed between onnxruntime's and PyTorch's vectors."""
OPSET = 18


def export_onnx(model: str | Path, out: str | Path, tolerance: float = TOLERANCE) -> dict:
    """Export the model at ``model`` to directory ``out``; returns the manifest with the largest
    difference to PyTorch of each tower (``checked``). :class:`AppError` when one is above
    ``tolerance`` (nothing is written then)."""
    embedder = load_torch(model)
    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise AppError(f"{out}: exists, is not empty and is not an ONNX export; give a new directory as --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = _write(embedder, tmp, tolerance)
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _write(embedder: TorchEmbedder, tmp: Path, tolerance: float) -> dict:
    info = embedder.info
    batch = torch.export.Dim("batch", min=1, max=4096)
    pixels = torch.randn(2, info.in_chans, info.img_size, info.img_size)
    _export(embedder.image, (pixels,), tmp / "image.onnx", ["pixels"], ({0: batch},))
    checked = {"image": _check_image(embedder, tmp / "image.onnx", tolerance)}
    manifest = {"format": FORMAT, "model": info.to_dict(), "image": "image.onnx", "text": None, "tokenizer": None}
    if embedder.text is not None:
        embedder.tokenizer.save(tmp / "tokenizer")
        ids = embedder.text_inputs(["a picture", "two words here"])
        _export(embedder.text, (ids["input_ids"], ids["attention_mask"]), tmp / "text.onnx",
                ["input_ids", "attention_mask"], ({0: batch}, {0: batch}))  # fmt: skip
        manifest.update(text="text.onnx", tokenizer="tokenizer")
        checked["text"] = _check_text(embedder, tmp, tolerance)
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return {**manifest, "checked": checked}


def _export(module: torch.nn.Module, args: tuple, path: Path, names: list[str], shapes: tuple) -> None:
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # its notes ("torchvision is not installed. Skipping ...") are not the user's
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nor are its deprecation warnings
            program = torch.onnx.export(module.eval(), args, input_names=names, output_names=["vectors"],
                                        dynamic_shapes=shapes, dynamo=True, opset_version=OPSET,
                                        external_data=False, verbose=False)  # fmt: skip
    finally:
        exporter_log.setLevel(level)
    program.save(str(path))


def _check_image(embedder: TorchEmbedder, path: Path, tolerance: float) -> float:
    """Largest |onnx − torch| on a batch of 3 random images (a size other than the traced 2)."""
    info = embedder.info
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (3, info.img_size, info.img_size, info.in_chans), dtype=np.uint8)
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"pixels": normalized(pixels, info.mean, info.std)})[0]  # fmt: skip
    return _compare("image", got, embedder.embed_images(pixels), tolerance)


def _check_text(embedder: TorchEmbedder, tmp: Path, tolerance: float) -> float:
    """Largest |onnx − torch| on three texts, tokenised the way the ONNX embedder does (the ids
    must equal PyTorch's too)."""
    texts = ["a red heart", "grinning face with big eyes", "x " * 200]
    ids = TextEncoder(tmp / "tokenizer", embedder.info.max_length)(texts)
    want = embedder.text_inputs(texts)
    if not np.array_equal(ids["input_ids"], want["input_ids"].numpy()):
        raise AppError("export: the exported tokenizer does not give the run's token ids")
    got = ort.InferenceSession(str(tmp / "text.onnx"), providers=["CPUExecutionProvider"]).run(None, ids)[0]
    return _compare("text", got, embedder.embed_texts(texts), tolerance)


def _compare(name: str, got: np.ndarray, want: np.ndarray, tolerance: float) -> float:
    diff = float(np.abs(got - want).max())
    if not diff <= tolerance:
        raise AppError(f"export: the ONNX {name} tower differs from PyTorch by {diff:.2e} (> {tolerance:.0e})")
    return diff
