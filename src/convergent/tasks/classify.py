"""Supervised classification, the fine-tuning objective of MAE / SimMIM / BEiT: the backbone's
final tokens are pooled (``ClassifyConfig.pooling``), a dropout + linear head gives logits,
and the loss is cross-entropy with label smoothing.

Images only: the batch holds ``"image"`` (float, already transformed) and ``"label"``. Text
backbones are not accepted (``families``): sentence classification would need ``"input_ids"``
and an attention mask in the batch, which this task does not read.
"""

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from convergent.heads.classifier import POOLINGS, ClassifierHead, pool_tokens
from convergent.tasks.base import Task
from convergent.tasks.configs import ClassifyConfig


class Classify(Task):
    """Backbone + :class:`ClassifierHead`; ``forward(batch) -> {"loss", "acc"}``."""

    name: ClassVar[str] = "classify"
    batch_keys: ClassVar[tuple[str, ...]] = ("image", "label")
    families: ClassVar[tuple[str, ...] | None] = ("vit", "swin")

    def __init__(self, backbone: nn.Module, config: ClassifyConfig):
        super().__init__(backbone, config)
        if config.pooling not in POOLINGS:
            raise ValueError(f"ClassifyConfig.pooling must be one of {', '.join(POOLINGS)}, got {config.pooling!r}")
        if config.pooling == "cls" and getattr(backbone, "num_prefix_tokens", 0) == 0:
            raise ValueError(
                f"ClassifyConfig.pooling='cls' needs a class token; {type(backbone).__name__} has none "
                "(use 'avg' or 'default')"
            )
        if not 0.0 <= config.label_smoothing < 1.0:
            raise ValueError(f"ClassifyConfig.label_smoothing must be in [0, 1), got {config.label_smoothing}")
        self.head = ClassifierHead(backbone.num_features, config.num_classes, config.head_dropout, config.head_init_std)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Transformed images ``(B, C, H, W)`` → logits ``(B, num_classes)``."""
        tokens = self.backbone.forward_features(images)  # (B, P + N, C)
        return self.head(pool_tokens(self.backbone, tokens, self.config.pooling))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["label"].long()  # (B,)
        logits = self.predict(batch["image"])  # (B, K)
        if labels.shape != logits.shape[:1]:
            raise ValueError(f"labels of shape {tuple(labels.shape)} for {logits.shape[0]} images")
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        acc = (logits.detach().argmax(dim=-1) == labels).float().mean()
        return {"loss": loss, "acc": acc}
