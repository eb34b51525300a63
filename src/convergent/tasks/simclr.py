"""Two-view contrastive learning, one objective for both modalities: SimCLR on images (Chen,
Kornblith, Norouzi, Hinton, 2020, "A Simple Framework for Contrastive Learning of Visual
Representations"; v2: Chen et al., 2020, "Big Self-Supervised Models are Strong Semi-Supervised
Learners") and unsupervised SimCSE on text (Gao, Yao, Chen, 2021, "SimCSE: Simple Contrastive
Learning of Sentence Embeddings").

Both take two views of each sample, encode them with the one backbone, pool, pass them
through a head, L2-normalise, and ask each view to pick out the other view of its sample
among the other samples of the global batch. They differ only in where the views come from
and in defaults, so :class:`TwoViewContrastive` holds the method and the two registered
tasks declare their modality and views (config: one type, :class:`ContrastiveConfig`, with
each paper's defaults in :class:`SimCLRConfig` / :class:`SimCSEConfig`):

* **SimCLR** (``simclr``, image backbones): the task declares ``num_views = 2``, so the
  Trainer draws its random transform twice from the same images (``batch["image"]``,
  ``batch["image2"]``, as MoCo v3). Both views go through the backbone and the head as one
  batch of 2N, as the official code (``google-research/simclr``, ``tf2/model.py``: the views
  are concatenated along the batch), so the projector's BatchNorm sees the 2N embeddings.
  Features: the backbone's ``pooled`` tokens (ViT: class token; Swin / ConvNeXt: mean; the
  paper's ResNet: global average pool). Head: :class:`~convergent.heads.mlp_head.MLPHead`,
  ``head_layers`` 3 (v2 and the official code's ``num_proj_layers``; v1 paper: 2), hidden =
  the backbone's width, out 128, BN after every layer; the official last BN keeps a scale
  γ (``center=False``), ours has no affine parameters (MoCo v3's layout of the shared
  head). ``sync_bn``: SyncBatchNorm, as the official ``global_bn``. Loss:
  :func:`~convergent.losses.contrastive.nt_xent` at τ = 0.1 (the official code's default),
  both views gathered with gradient under DDP; the mean over 2N, as the paper (the official
  code sums the two views' means: twice this).
* **SimCSE** (``simcse``, text backbones): no augmentation — the batch's ``input_ids`` are
  encoded twice in one pass of 2B rows (as the official code's ``(bs, 2, len)`` batch),
  the backbone's dropout drawing different masks for the two copies, so the task must be
  in training mode and the backbone must have dropout (0 gives identical views: a warning,
  not an error, since the paper reports p = 0 as an ablation, Table 2). Pooling: 'cls'
  ([CLS], ``--pooler_type cls``); head: Linear + tanh over it, kept at the backbone's width
  (``MLPLayer``), in training only (``--mlp_only_train``: evaluations read the backbone's
  features, never a task head); loss: InfoNCE of the first encodings against the second
  ones of the global batch, ``cos / τ`` with τ = 0.05 (one direction, no same-view
  negatives), the second ones gathered with gradient under DDP (the official code gathers
  without gradient and puts the local rows back, which drops the other processes'
  gradients; see ``losses/contrastive.py``).

Choices common to both: AdamW (the Trainer's optimizer) instead of SimCLR's LARS, which
exists for the 4096-image batches of the paper; the loss, not the head, normalises
(NT-Xent's "N"); in eval mode the loss scores each process's batch alone (an evaluation may
run on one process, and a gather would wait for the others).
"""

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.protocol import backbone_inputs
from convergent.choices import CONTRASTIVE_HEADS, CONTRASTIVE_LOSSES
from convergent.heads.classifier import check_pooling, pool_tokens
from convergent.heads.mlp_head import MLPHead
from convergent.layers.linear import Linear
from convergent.losses.contrastive import gather_features, info_nce, nt_xent, world
from convergent.tasks.base import Task, check_sync_bn, top1_accuracy, two_views
from convergent.tasks.configs import ContrastiveConfig


class TwoViewContrastive(Task):
    """The method shared by :class:`SimCLR` and :class:`SimCSE`; subclasses declare the
    modality and make the two views' pooled features (:meth:`pooled_views`).

    ``forward(batch)`` returns ``{"loss", "acc"}``: the contrastive loss and the top-1
    accuracy of view-1 embeddings finding their view-2 partner in the (local) batch.
    """

    def __init__(self, backbone: nn.Module, config: ContrastiveConfig):
        super().__init__(backbone, config)
        c = config
        if not c.temperature > 0:
            raise ValueError(f"task.{self.name}.temperature must be > 0, got {c.temperature}")
        if c.loss not in CONTRASTIVE_LOSSES:
            raise ValueError(f"task.{self.name}.loss must be one of {', '.join(CONTRASTIVE_LOSSES)}, got {c.loss!r}")
        check_pooling(backbone, c.pooling, f"task.{self.name}.pooling")
        self.head = build_head(c, backbone.num_features, self.name)

    # --- training ---------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        h = self.pooled_views(batch)  # (2B, C): view 1 then view 2
        check_sync_bn(self.name, self.config.head == "mlp" and self.config.sync_bn, self.training, h)
        z1, z2 = self.head(h).chunk(2)  # (B, E) each; BN statistics over the 2B, as SimCLR
        return {"loss": self.loss(z1, z2), "acc": top1_accuracy(z1.detach(), z2.detach())}

    def loss(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """The configured loss of the two views' embeddings ``(B, E)`` (global batch in training)."""
        c = self.config
        if c.loss == "nt_xent":
            return nt_xent(z1, z2, c.temperature, distributed=self.training)
        q, k = F.normalize(z1.float(), dim=1), F.normalize(z2.float(), dim=1)
        rank = world()[0] if self.training else 0
        keys = gather_features(k) if self.training else k  # (N, E), with gradient
        return info_nce(q, keys, 1.0 / c.temperature, offset=rank * q.shape[0])

    def pooled_views(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(2B, num_features)``: the pooled features of the two views, view 1 first."""
        raise NotImplementedError


def build_head(config: ContrastiveConfig, width: int, task: str) -> nn.Module:
    """The head of ``config.head`` over features of ``width`` channels."""
    if config.head == "mlp":
        hidden = config.hidden_dim or width
        return MLPHead(width, hidden, config.out_dim, config.head_layers, sync_bn=config.sync_bn)
    if config.head == "tanh":
        linear = Linear(width, width)
        nn.init.normal_(linear.weight, std=0.02)  # BERT's init, as SimCSE's init_weights
        nn.init.zeros_(linear.bias)
        return nn.Sequential(linear, nn.Tanh())
    if config.head == "none":
        return nn.Identity()
    raise ValueError(f"task.{task}.head must be one of {', '.join(CONTRASTIVE_HEADS)}, got {config.head!r}")


class SimCLR(TwoViewContrastive):
    """SimCLR around an image backbone (ViT, Swin, ConvNeXt).

    ``forward(batch)`` reads two views ``batch["image"]`` and ``batch["image2"]`` ``(B, C, H, W)``
    (the Trainer makes the second when a transform is given, see :attr:`num_views`).
    """

    name = "simclr"
    batch_keys = ("image", "image2")
    modality = "image"
    num_views = 2
    """Augmented views of each image the Trainer passes (``image``, ``image2``)."""

    def pooled_views(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        x1, x2 = two_views(batch, "simclr")
        tokens = self.backbone.forward_features(torch.cat([x1, x2]))  # (2B, N, C): one pass
        return pool_tokens(self.backbone, tokens, self.config.pooling)


class SimCSE(TwoViewContrastive):
    """Unsupervised SimCSE around a bidirectional text backbone with dropout.

    ``forward(batch)`` reads ``batch["input_ids"]`` ``(B, L)`` and, when there,
    ``attention_mask`` / ``token_type_ids``; each text is encoded twice in one pass.
    """

    name = "simcse"
    batch_keys = ("input_ids",)
    optional_batch_keys = ("attention_mask", "token_type_ids")
    modality = "text"
    requires = ("first_token_summarises",)
    """SimCSE pools [CLS]: a bidirectional encoder (a causal one's first token sees only itself)."""

    def __init__(self, backbone: nn.Module, config: ContrastiveConfig):
        super().__init__(backbone, config)
        if not backbone.dropout > 0:
            warnings.warn(
                f"simcse: the backbone has dropout {backbone.dropout}, so both encodings of a text are the same and "
                "the positives carry no signal (SimCSE's only augmentation is dropout; paper: 0.1); set "
                "model.overrides.dropout",
                stacklevel=2,
            )

    def pooled_views(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        ids, kwargs = backbone_inputs(self.backbone, batch)
        twice = {k: torch.cat([v, v]) for k, v in kwargs.items()}  # (2B, L) each
        if self.backbone.supports_unpad:
            twice["unpad"] = True  # skip padding; every pooling reads real tokens only
        tokens = self.backbone.forward_features(torch.cat([ids, ids]), **twice)  # dropout differs per row
        return pool_tokens(self.backbone, tokens, self.config.pooling, twice.get("attention_mask"))
