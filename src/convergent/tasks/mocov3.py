"""MoCo v3 (Chen, Xie, He, 2021, "An Empirical Study of Training Self-Supervised Vision
Transformers"): two augmented views of each image; the query encoder (backbone → projector →
predictor) of one view predicts the momentum encoder's key (EMA backbone → EMA projector) of
the other view, InfoNCE against the other keys of the batch, symmetrised (Alg. 1).

Choices (paper sections in brackets; official = ``facebookresearch/moco-v3``):

* views: the task declares ``num_views = 2``; the Trainer then applies its (random) transform
  twice to the same uint8 images, as views 0 and 1 (``transform(images, generator, view=v)``),
  and passes ``batch["image"]`` and ``batch["image2"]`` (``training/loop.py``). The paper's
  BYOL augmentations are asymmetric — crop (0.08–1), colour jitter (0.4, 0.4, 0.2, 0.1) with
  p 0.8, grayscale 0.2, blur 1.0 / 0.1, solarize 0 / 0.2, flip — and are data options
  (``data.color_jitter``, ``data.blur_prob`` ..., per view; :mod:`convergent.data.color`), set in
  the preset ``mocov3-vit-fmnist.yaml``; the task itself reads whatever views it is given.
* features: ``backbone.pooled`` of the final tokens (ViT: the class token after the final
  norm, as timm's head input in the official code); both views go through the backbone as
  one batch (no batch-dependent layer there), then the heads per view, so each view's
  BatchNorm statistics are its own, as the official code's two calls.
* heads: :class:`~convergent.heads.mlp_head.MLPHead`, projector 3 layers and predictor 2,
  hidden 4096, out 256, BN after every layer (the last without affine) [4.1, official ViT];
  PyTorch's default init, as the official heads. ``sync_bn``: SyncBatchNorm, as the
  official (``convert_sync_batchnorm``); per-process BN would give each process's keys
  statistics the queries can match (MoCo v1's "shuffle BN" problem).
* momentum encoder (``teacher``): frozen copies of the backbone and the projector, no
  gradient, out of the optimizer, in the state dict. EMA after each optimizer step with the
  momentum rising from ``momentum`` (0.99) to ``momentum_end`` (1) on a half cosine [4.1]
  over the run's steps: the update after step ``s`` uses ``cosine(s / max_steps)``, which is
  what the official code applies before iteration ``s``'s keys. BN buffers are copied from
  the query encoder (their values do not matter in training: see next point).
* modes: the teacher projector follows the task's train / eval mode, so its BN normalises
  with batch statistics in training, as the official momentum encoder (the whole model is
  in train mode there); the teacher backbone stays in eval mode (no dropout / drop path,
  deterministic keys; identical to the official code, which pre-trains without either).
* loss: :func:`~convergent.losses.moco.symmetric_ctr`, ``2τ``-scaled InfoNCE with keys
  all-gathered under DDP [Alg. 1]; τ = 0.2 for ViT.
* the paper's ViT (official ``vits.py``): the frozen random patch projection (stability)
  and the fixed 2-D sin-cos position embedding are backbone options, ``freeze_patch_embed``
  and ``pos_embed: sincos`` of the ViT config, as is its initialisation (``init: xavier_qkv``:
  Xavier-uniform with q, k, v separate, class token N(0, 1e-6)); the task does not touch the
  backbone's internals. The momentum encoder copies them (frozen parameters and the table
  stay equal to the query encoder's, up to the rounding of the EMA of a constant).
* not included: the ConvStem variants (``vit_conv_*``) of the official code.
"""

import torch
from torch import nn

from convergent.heads.mlp_head import MLPHead
from convergent.losses.moco import symmetric_ctr
from convergent.tasks.base import Task, check_sync_bn, top1_accuracy, two_views
from convergent.tasks.configs import MoCoV3Config
from convergent.tasks.teacher import cosine_momentum, ema_update_, frozen_copy


class MoCoV3(Task):
    """MoCo v3 around an image backbone (ViT, Swin).

    ``forward(batch)`` reads two views ``batch["image"]`` and ``batch["image2"]`` ``(B, C, H, W)``
    (the Trainer makes the second when a transform is given, see :attr:`num_views`) and
    returns ``{"loss", "momentum", "acc"}``: the symmetric contrastive loss, the momentum of
    the last EMA step and the top-1 accuracy of view-1 queries among the view-2 keys of the
    (local) batch.
    """

    name = "mocov3"
    batch_keys = ("image", "image2")
    modality = "image"
    num_views = 2
    """Augmented views of each image the Trainer passes (``image``, ``image2``)."""

    def __init__(self, backbone: nn.Module, config: MoCoV3Config):
        super().__init__(backbone, config)
        if config.temperature <= 0:
            raise ValueError(f"mocov3 temperature must be > 0, got {config.temperature}")
        if not 0.0 <= config.momentum <= config.momentum_end <= 1.0:
            raise ValueError(
                f"mocov3 needs 0 <= momentum <= momentum_end <= 1, got {config.momentum}, {config.momentum_end}"
            )
        if config.proj_layers < 1 or config.pred_layers < 1:
            raise ValueError(
                f"mocov3 needs proj_layers and pred_layers >= 1, got {config.proj_layers}, {config.pred_layers}"
            )
        c = config
        self.projector = MLPHead(backbone.num_features, c.hidden_dim, c.out_dim, c.proj_layers, sync_bn=c.sync_bn)
        self.predictor = MLPHead(c.out_dim, c.hidden_dim, c.out_dim, c.pred_layers, sync_bn=c.sync_bn)
        self.teacher = nn.ModuleDict({"backbone": frozen_copy(backbone), "projector": frozen_copy(self.projector)})
        self.teacher["projector"].train(self.training)
        # the momentum of the last EMA step (for logging; restored with the state dict)
        self.register_buffer("momentum", torch.tensor(float(config.momentum)))

    # --- training ---------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x1, x2 = self.views(batch)
        check_sync_bn(self.name, self.config.sync_bn, self.training, x1)
        x = torch.cat([x1, x2])  # (2B, C, H, W): one backbone pass for both views
        h1, h2 = self.features(self.backbone, x).chunk(2)  # (B, D) each
        q1, q2 = self.predictor(self.projector(h1)), self.predictor(self.projector(h2))  # BN per view
        with torch.no_grad():
            g1, g2 = self.features(self.teacher["backbone"], x).chunk(2)
            k1, k2 = self.teacher["projector"](g1), self.teacher["projector"](g2)
        return {
            "loss": symmetric_ctr(q1, q2, k1, k2, self.config.temperature),
            "momentum": self.momentum.detach().clone(),
            "acc": top1_accuracy(q1.detach(), k2),
        }

    def on_step_end(self, step: int, max_steps: int) -> None:
        """EMA step of the momentum encoder with the momentum of ``step`` (optimizer steps done)."""
        m = cosine_momentum(step, max_steps, self.config.momentum, self.config.momentum_end)
        self.momentum.fill_(m)
        if m < 1.0:
            ema_update_(self.teacher["backbone"], self.backbone, m)
            ema_update_(self.teacher["projector"], self.projector, m)

    def train(self, mode: bool = True) -> "MoCoV3":
        """The teacher backbone stays in eval mode; the teacher projector follows ``mode``."""
        super().train(mode)
        self.teacher["backbone"].eval()
        return self

    # --- pieces -------------------------------------------------------------------------------
    @staticmethod
    def features(backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """``(B, num_features)``: the backbone's pooled final tokens."""
        return backbone.pooled(backbone.forward_features(x))

    @staticmethod
    def views(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views, checked."""
        return two_views(batch, "mocov3")

