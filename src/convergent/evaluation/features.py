"""Frozen features for the probes (kNN, linear probe): run a backbone over a labelled image
dataset in eval mode without gradients, and pool one layer's tokens into one vector per image.

``layer=-1`` probes the final normalised tokens (``forward_features``); another index probes
the output of that block (``forward_intermediates``), as in SimMIM's linear-probe setting
(an intermediate layer, average pooling): the last blocks of a masked-image-modelling encoder
specialise in pixel prediction, so earlier layers can probe better.
"""

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from convergent.heads.classifier import pool_tokens

Transform = Callable[[torch.Tensor, torch.Generator | None], torch.Tensor]
"""``transform(images uint8 (B, C, H, W), generator) -> float (B, C, H, W)``."""


def collate_labelled(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Items ``{"image": uint8 (C, H, W), "label": int}`` → ``{"image": (B, C, H, W), "label": (B,) long}``."""
    for key in ("image", "label"):
        if key not in items[0]:
            raise KeyError(f"dataset items must hold 'image' and 'label'; got keys {sorted(items[0])}")
    images = torch.stack([torch.as_tensor(it["image"]) for it in items])
    labels = torch.as_tensor([int(it["label"]) for it in items], dtype=torch.long)
    return {"image": images, "label": labels}


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def tokens_at(backbone: nn.Module, images: torch.Tensor, layer: int = -1) -> torch.Tensor:
    """Tokens ``(B, P + N, C_layer)``: final normalised ones (``layer=-1``) or the output of
    block ``layer`` (before the final norm; negatives other than -1 count from the last block)."""
    if layer == -1:
        return backbone.forward_features(images)
    _, outs = backbone.forward_intermediates(images, indices=[layer])
    return outs[0]


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    dataset,
    transform: Transform,
    layer: int = -1,
    pooling: str = "avg",
    batch_size: int = 256,
    device: torch.device | str | None = None,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features of every item of ``dataset``.

    Args:
        backbone: a :class:`~convergent.backbones.protocol.Backbone`; put in eval mode for
            the pass and restored to its previous mode afterwards.
        dataset: map-style, items ``{"image": uint8 (C, H, W), "label": int}``.
        transform: evaluation transform, called as ``transform(images, None)`` on the device.
        layer: -1 for the final normalised tokens, else a block index (see :func:`tokens_at`).
        pooling: ``"avg"`` (mean of patch tokens), ``"cls"`` (class token), ``"default"``
            (``backbone.pooled``); see :func:`convergent.heads.classifier.pool_tokens`.
        batch_size: images per forward pass.
        device: where to run (None: the backbone's device); the backbone is moved there.
        num_workers: DataLoader workers.

    Returns:
        features ``(N, C_layer)`` float32 on the CPU, labels ``(N,)`` long.
    """
    device = torch.device(device) if device is not None else _device_of(backbone)
    backbone.to(device)
    dtype = next(backbone.parameters()).dtype
    was_training = backbone.training
    backbone.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_labelled)
    feats, labels = [], []
    try:
        for batch in loader:
            images = transform(batch["image"].to(device), None).to(dtype)  # (B, C, H, W) float
            tokens = tokens_at(backbone, images, layer)  # (B, P + N, C)
            feats.append(pool_tokens(backbone, tokens, pooling).float().cpu())  # (B, C)
            labels.append(batch["label"])
    finally:
        backbone.train(was_training)
    if not feats:
        raise ValueError("extract_features got an empty dataset")
    return torch.cat(feats), torch.cat(labels)
