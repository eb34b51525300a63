"""BEiT (Bao et al., 2022): masked image modelling whose targets are discrete visual tokens.

A frozen image tokenizer (:class:`~convergent.tasks.vqvae.VQVAE`, trained by a ``vqvae`` run;
the paper uses DALL-E's dVAE) turns each image into a grid of code ids, one per patch. Blocks
of patches (BEiT's blockwise masking, :func:`~convergent.masking.block_masking`) are replaced
by the backbone's mask token; a linear head on the final tokens (after the backbone's final
norm) predicts the code id of every hidden patch; cross-entropy over the codebook — the loss
of HF ``BeitForMaskedImageModeling`` (``lm_head`` on ``layernorm(last_hidden_state)``).

The BEiT backbone options (no absolute positions, one shared relative position bias, layer
scale) are options of the ViT (``model.overrides``); any image backbone with a mask token and
one final token per patch (``supports_patch_tokens``) whose patch grid is the tokenizer's serves.
"""

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.protocol import ImageBackbone
from convergent.masking import block_masking
from convergent.tasks.base import Task
from convergent.tasks.configs import BEiTConfig
from convergent.tasks.vqvae import VQVAE


class BEiT(Task):
    """BEiT around an image backbone, with a frozen ``tokenizer``.

    ``forward(batch)`` reads ``batch["image"]`` ``(B, C, H, W)`` and, optionally,
    ``batch["mask"]`` ``(B, N)`` bool at the backbone's patch grid (True = hidden; drawn by
    blockwise masking from the global RNG otherwise) and ``batch["target_ids"]`` ``(B, N)`` code
    ids (the tokenizer's otherwise). Returns ``{"loss", "accuracy", "masked_patches"}``.
    """

    name = "beit"
    modality = "image"
    requires = ("supports_mask_token", "supports_patch_tokens")
    optional_batch_keys = ("mask", "target_ids")

    def __init__(self, backbone: ImageBackbone, config: BEiTConfig, tokenizer: VQVAE):
        super().__init__(backbone, config)
        if tokenizer.stride != backbone.patch_size:
            raise ValueError(
                f"beit's tokenizer gives one code per {tokenizer.stride} px but the backbone one patch per "
                f"{backbone.patch_size} px: train the tokenizer with an encoder of stride {backbone.patch_size}"
            )
        tokenizer.eval()
        tokenizer.requires_grad_(False)
        self.tokenizer = tokenizer  # part of the state dict: a resumed run keeps exactly its targets
        self.num_prefix = backbone.num_prefix_tokens
        self.head = nn.Linear(backbone.num_features, tokenizer.num_codes)
        nn.init.trunc_normal_(self.head.weight, std=config.head_init_std)
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        images = batch["image"]
        b = images.shape[0]
        grid = tuple(self.backbone.mask_grid(images))
        n = grid[0] * grid[1]
        mask = batch.get("mask")
        if mask is None:
            c = self.config
            mask = block_masking(b, grid, c.mask_ratio, min_num_patches=c.min_block_patches,
                                 min_aspect=c.min_aspect).to(images.device)  # fmt: skip
        elif mask.shape != (b, n):
            raise ValueError(f"batch['mask'] must be (B={b}, {n}) at the patch grid {grid}, got {tuple(mask.shape)}")
        mask = mask.bool()
        targets = batch.get("target_ids")
        if targets is None:
            targets = self.tokenizer.encode(images)  # (B, h, w), no grad
        if targets.shape[1:] not in ((n,), grid):
            raise ValueError(f"the visual tokens form a {tuple(targets.shape[1:])} grid, the patches {grid}")
        targets = targets.reshape(b, n)
        tokens = self.backbone.forward_features(images, mask=mask)[:, self.num_prefix :]  # (B, N, C)
        logits = self.head(tokens[mask])  # (M, V): hidden patches only
        labels = targets[mask]
        loss = F.cross_entropy(logits.float(), labels)
        with torch.no_grad():
            accuracy = (logits.argmax(-1) == labels).float().mean()
        return {"loss": loss, "accuracy": accuracy, "masked_patches": mask.float().mean()}

    def train(self, mode: bool = True) -> "BEiT":
        """The tokenizer stays in eval mode (its codebook is not updated)."""
        super().train(mode)
        self.tokenizer.eval()
        return self
