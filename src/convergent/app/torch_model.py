"""The PyTorch embedder: the towers of a CLIP / SigLIP run (or a converted HF CLIP, which is a
run too), or the pooled features of any saved image encoder (image-to-image search).

The towers are plain ``nn.Module``\\ s (:class:`ImageTower`, :class:`TextTower`) so that
:mod:`convergent.app.export` writes exactly what searching computes."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from convergent.app.errors import AppError
from convergent.app.model import ModelInfo, file_digest, normalized
from convergent.backbones.pretrained import WEIGHTS_NAME, from_pretrained
from convergent.config import DataConfig
from convergent.data.transforms import channel_stats
from convergent.evaluation.context import ImageTextModel
from convergent.heads.classifier import pool_tokens
from convergent.rundir import RunDir
from convergent.training.checkpoint import WEIGHTS, readable_checkpoint
from convergent.workflows.assemble import load_task_from_run
from convergent.workflows.runs import is_encoder_dir, read_config, saved_encoder


class ImageTower(nn.Module):
    """Normalised pixels ``(B, C, S, S)`` → unit vectors ``(B, D)``: a CLIP task's image tower,
    or an image backbone's pooled features."""

    def __init__(self, clip: nn.Module | None = None, backbone: nn.Module | None = None, pooling: str = "default"):
        super().__init__()
        self.clip, self.backbone, self.pooling = clip, backbone, pooling

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.clip is not None:
            return self.clip.encode_image(pixels)
        tokens = self.backbone.forward_features(pixels)  # (B, P + N, C)
        return F.normalize(pool_tokens(self.backbone, tokens, self.pooling).float(), dim=-1)


class TextTower(nn.Module):
    """Token ids and mask ``(B, L)`` → unit vectors ``(B, D)``: a CLIP task's text tower, run on
    the padded batch (no unpadding: a traced graph must not depend on how many tokens are real)."""

    def __init__(self, clip: nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"unpad": False} if self.clip.text_backbone.supports_unpad else {}
        return self.clip.encode_text(input_ids, attention_mask=attention_mask, **extra)


class TorchEmbedder:
    """:class:`~convergent.app.model.Embedder` on PyTorch (CPU, eval mode, no gradients)."""

    def __init__(self, info: ModelInfo, image: ImageTower, text: TextTower | None = None, tokenizer=None):
        self.info, self.image, self.text, self.tokenizer = info, image.eval(), text, tokenizer

    @torch.inference_mode()
    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(normalized(pixels, self.info.mean, self.info.std))
        return self.image(x).float().numpy()

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        if self.text is None:
            raise AppError(f"{self.info.path} is an image encoder: it answers image queries only")
        batch = self.text_inputs(texts)
        return self.text(batch["input_ids"], batch["attention_mask"]).float().numpy()

    def text_inputs(self, texts: Sequence[str]) -> dict:
        """``input_ids`` / ``attention_mask`` ``(B, max_length)`` int64 (padded to the full length)."""
        return self.tokenizer.encode_batch(list(texts), self.info.max_length, padding="max_length")


def load_torch(path: str | Path, threads: int | None = None) -> TorchEmbedder:
    """The embedder of ``path``: a CLIP / SigLIP run (image and text), another pre-training run
    (its saved encoder) or an encoder directory (``save_pretrained``); ``threads``: torch's CPU
    threads for the process (None: unchanged)."""
    if threads:
        torch.set_num_threads(threads)
    path = Path(path).expanduser().resolve()
    run = RunDir(path)
    if run.is_run():
        task, tokenizer, cfg = load_task_from_run(path)
        if isinstance(task, ImageTextModel):
            checkpoint = readable_checkpoint(path)
            fingerprint = file_digest(checkpoint / WEIGHTS)
            image, text = ImageTower(clip=task), TextTower(task)
            info = _info(path, fingerprint, "image-text", cfg.data, image, task.backbone.in_chans)
            return TorchEmbedder(info, image, text, tokenizer)
        encoder = saved_encoder(run)
        if encoder is None:
            raise AppError(f"{path}: a {task.name} run without a saved encoder/ (not finished?) and without "
                           "image and text towers; give a CLIP / SigLIP run or an encoder directory")  # fmt: skip
        return _encoder(encoder, cfg.data, cfg.eval.pooling)
    if is_encoder_dir(path):
        parent = RunDir(path.parent)
        cfg = read_config(parent) if parent.is_run() else None
        return _encoder(path, cfg.data if cfg else DataConfig(), cfg.eval.pooling if cfg else "default")
    raise AppError(f"{path}: not a run directory (config.yaml), an encoder directory (config.json) or an ONNX "
                   "export (onnx.json)")  # fmt: skip


def _encoder(path: Path, data: DataConfig, pooling: str) -> TorchEmbedder:
    backbone = from_pretrained(path).eval()
    if backbone.modality != "image":
        raise AppError(f"{path}: a {backbone.modality} encoder; image search needs an image encoder")
    image = ImageTower(backbone=backbone, pooling=pooling)
    info = _info(path, file_digest(path / WEIGHTS_NAME), "image", data, image, backbone.in_chans,
                 img_size=backbone.image_size)  # fmt: skip
    return TorchEmbedder(info, image)


def _info(path: Path, fingerprint: str, kind: str, data: DataConfig, image: ImageTower, in_chans: int,
          img_size: int | None = None) -> ModelInfo:  # fmt: skip
    size = img_size or data.img_size
    with torch.inference_mode():
        dim = image.eval()(torch.zeros(1, in_chans, size, size)).shape[-1]
    return ModelInfo(
        path=str(path), fingerprint=fingerprint, kind=kind, dim=int(dim), img_size=int(size), in_chans=int(in_chans),
        mean=tuple(channel_stats(data.mean, in_chans, "mean")), std=tuple(channel_stats(data.std, in_chans, "std")),
        max_length=int(data.max_length) if kind == "image-text" else None,
    )  # fmt: skip
