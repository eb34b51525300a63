"""Feature distillation (Wei, Hu, Xie, Zhang, Cao, Bao, Chen, Guo, 2022, "Contrastive learning
rivals masked image modeling in fine-tuning via feature distillation"; official code
``SwinTransformer/Feature-Distillation``, ``models/feature_distillation.py``): a student image
encoder learns to predict, token by token, the feature map a frozen pre-trained teacher (CLIP,
DINO, DeiT, or any image encoder trained here) computes for the same view. The targets are
whitened per token, so the student inherits the teacher's features without their scale; the
paper's point is that a student so distilled fine-tunes as well as a masked-image-modelling
one, with the attention diversity and flatter loss landscape that come with it.

The recipe, each a :class:`~convergent.tasks.configs.FDConfig` field whose default is the
official code's:

* teacher: a frozen image encoder (``teacher``), loaded by the run from another run, an encoder
  directory or a converted Hugging Face directory (:mod:`convergent.workflows.teacher`); no
  gradient, out of the optimizer, in eval mode whatever the task's mode. It reads the student's
  view re-normalised for its own training statistics (:class:`Renormalize`: official
  ``normalize_clip(unnormalize(x))``), optionally resized (``teacher_img_size``).
* target: the teacher's final token map (after its final norm: ``teacher_final_norm``), prefix
  (class) tokens dropped, brought to the student's token grid by bilinear interpolation when the
  grids differ (the official code pairs grids that match, e.g. 14x14 with 14x14), then whitened
  by a LayerNorm without weight and bias (``whiten``, ``whiten_eps``).
* prediction: a 1x1 projection (a Linear, the official ``Conv1d(kernel_size=1)``, with bias and
  PyTorch's default init) of the student's final token map (prefix tokens dropped) to the
  teacher's width. No masking: every token of every image is predicted.
* loss: Smooth L1 with ``beta`` 2, averaged over every element
  (:func:`~convergent.losses.regression.whitened_smooth_l1`).
* student: any image backbone; the paper's ViT options — BEiT's shared relative position bias
  without absolute positions, layer scale 0.1, drop path 0.2 (ViT-B) — are ViT config fields
  (``rel_pos_bias: shared``, ``pos_embed: none``, ``layer_scale``, ``drop_path``), set in the
  preset ``fd-vit-fmnist.yaml`` with the official optimiser (AdamW, lr 3e-4 per 512 images,
  weight decay 0.05, gradient clipping 3).

Not as the official code: the student ViT is this library's (its init is ``init``'s, without
BEiT's rescaling of each block's output projections by 1/sqrt(2·layer); its key projection
keeps a bias, which cannot change attention — it shifts a query's logits by a constant — and so
never moves from zero); teacher and student grids are not required to match (bilinear, above);
any image encoder can teach, not only the official CLIP / DINO / DeiT / EsViT loaders.

The task asks the protocol for what it needs — ``modality``, ``in_chans``, ``image_size``,
``output_stride`` (the token grid of an input), ``num_prefix_tokens``, ``num_features`` — of
the student and of the teacher alike, so ViT, Swin and ConvNeXt serve as either.

Saving: ``task.backbone`` is the student alone, so the run's ``encoder/`` holds only student
weights. The teacher is part of the task's ``state_dict``, so the training checkpoints hold
it and a resumed run continues with exactly the teacher it started with (the teacher's source
is still read when the task is built: it gives the architecture).
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.protocol import Backbone, ImageBackbone
from convergent.layers.linear import Linear
from convergent.losses.regression import whitened_smooth_l1
from convergent.tasks.base import Task
from convergent.tasks.configs import FDConfig


@dataclass(frozen=True)
class Renormalize:
    """How the teacher's input is made from the student's normalised view ``x``, per channel:
    ``x * scale + shift`` = ``(x * std_s + mean_s - mean_t) / std_t`` (undo the data's
    normalisation, apply the teacher's)."""

    scale: tuple[float, ...]
    shift: tuple[float, ...]

    @classmethod
    def between(cls, view_mean, view_std, teacher_mean, teacher_std) -> "Renormalize":
        """From the view's normalisation (``data.mean`` / ``data.std``) to the teacher's, each
        one value per channel."""
        lengths = {len(view_mean), len(view_std), len(teacher_mean), len(teacher_std)}
        if len(lengths) != 1:
            raise ValueError(f"normalisation statistics of different lengths: {sorted(lengths)} channels")
        scale = tuple(s / t for s, t in zip(view_std, teacher_std))
        shift = tuple((m - tm) / t for m, tm, t in zip(view_mean, teacher_mean, teacher_std))
        return cls(scale, shift)


def token_grid(backbone: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """The grid of final tokens (prefix tokens excluded) ``backbone`` gives for images ``x``:
    the image side over the declared ``output_stride``, rounded up (``output_grid`` at any size)."""
    stride = backbone.output_stride
    return (-(-x.shape[-2] // stride), -(-x.shape[-1] // stride))


def resize_tokens(tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Tokens ``(B, Gh*Gw, C)`` of a row-major grid → ``(B, Sh*Sw, C)`` on grid ``size``, by
    bilinear interpolation of the feature map (``align_corners=False``); unchanged when equal."""
    if tuple(grid) == tuple(size):
        return tokens
    b, _, c = tokens.shape
    fmap = tokens.transpose(1, 2).reshape(b, c, *grid)  # (B, C, Gh, Gw)
    fmap = F.interpolate(fmap.float(), size=tuple(size), mode="bilinear", align_corners=False).to(tokens.dtype)
    return fmap.flatten(2).transpose(1, 2)  # (B, Sh*Sw, C)


class FD(Task):
    """Feature distillation of a frozen ``teacher`` into any image backbone.

    ``teacher``: an image backbone already holding its weights (the run loads it,
    :func:`convergent.workflows.teacher.teacher_inputs`), laid out for the images it will read:
    ``config.teacher_img_size`` or the student's ``image_size``, with the student's channels.
    ``renormalize``: the teacher's input from the student's view (None: the same normalisation).

    ``forward(batch)`` reads ``batch["image"]`` ``(B, C, H, W)`` (normalised as the data says)
    and returns ``{"loss", "target_cos"}``: the Smooth L1 loss and the mean cosine similarity
    between the predictions and the (whitened) targets, which rises towards 1 as the student
    learns the teacher's features.
    """

    name = "fd"
    modality = "image"

    def __init__(self, backbone: nn.Module, config: FDConfig, teacher: nn.Module,
                 renormalize: Renormalize | None = None):  # fmt: skip
        super().__init__(backbone, config)
        check_teacher(backbone, teacher, config)
        if config.loss_beta < 0:
            raise ValueError(f"fd loss_beta must be >= 0, got {config.loss_beta}")
        if not config.whiten_eps > 0:
            raise ValueError(f"fd whiten_eps must be > 0, got {config.whiten_eps}")
        teacher.eval()
        teacher.requires_grad_(False)
        self.teacher = teacher
        self.teacher_size = config.teacher_img_size or backbone.image_size
        r = renormalize or Renormalize((1.0,) * backbone.in_chans, (0.0,) * backbone.in_chans)
        if len(r.scale) != backbone.in_chans:
            raise ValueError(f"fd renormalisation has {len(r.scale)} channels, the images {backbone.in_chans}")
        # derived from the config and the teacher's source when the task is built: not saved
        self.register_buffer("renorm_scale", torch.tensor(r.scale).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("renorm_shift", torch.tensor(r.shift).view(1, -1, 1, 1), persistent=False)
        self.head = Linear(backbone.num_features, teacher.num_features)  # the 1x1 projection

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x = batch["image"]  # (B, C, H, W)
        target = self.targets(x)  # (B, N, C_t), no grad
        tokens = self.backbone.forward_features(x)[:, self.backbone.num_prefix_tokens :]  # (B, N, C_s)
        if tokens.shape[1] != target.shape[1]:
            raise ValueError(
                f"the student gives {tokens.shape[1]} final tokens for {tuple(x.shape[-2:])} images, but its "
                f"declared token grid {token_grid(self.backbone, x)} has {target.shape[1]}"
            )
        pred = self.head(tokens)  # (B, N, C_t)
        c = self.config
        goal = F.layer_norm(target.float(), target.shape[-1:], eps=c.whiten_eps) if c.whiten else target.float()
        loss = whitened_smooth_l1(pred, goal, c.loss_beta, whiten=False)  # whitened once, above
        with torch.no_grad():
            cos = F.cosine_similarity(pred.detach().float(), goal, dim=-1).mean()
        return {"loss": loss, "target_cos": cos}

    @torch.no_grad()
    def targets(self, x: torch.Tensor) -> torch.Tensor:
        """The teacher's final token map for the student's view ``x`` on the student's token grid,
        before whitening: ``(B, N_student, C_teacher)``."""
        t = self.teacher
        xt = x * self.renorm_scale.to(x.dtype) + self.renorm_shift.to(x.dtype)  # the teacher's normalisation
        if xt.shape[-2:] != (self.teacher_size, self.teacher_size):
            size = (self.teacher_size, self.teacher_size)
            xt = F.interpolate(xt, size=size, mode="bilinear", align_corners=False, antialias=True)
        if self.config.teacher_final_norm:
            tokens = t.forward_features(xt)
        else:
            tokens = t.forward_intermediates(xt, indices=1)[1][0]  # the last block, before the final norm
        tokens = tokens[:, t.num_prefix_tokens :]  # (B, N_t, C_t): class token dropped
        grid = token_grid(t, xt)
        if tokens.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"the teacher gives {tokens.shape[1]} final tokens, its declared token grid {grid}")
        return resize_tokens(tokens, grid, token_grid(self.backbone, x))

    def train(self, mode: bool = True) -> "FD":
        """The teacher stays in eval mode (no dropout, no drop path; BatchNorm statistics kept)."""
        super().train(mode)
        self.teacher.eval()
        return self


def check_teacher(student: nn.Module, teacher: nn.Module, config: FDConfig) -> None:
    """A clear error when ``teacher`` cannot serve ``student``: not an image encoder, other
    channels, or laid out for another image size than it will read."""
    if not isinstance(teacher, ImageBackbone):
        what = f"reads {teacher.modality}" if isinstance(teacher, Backbone) else "is not a backbone"
        raise ValueError(f"the fd teacher must be an image encoder; {type(teacher).__name__} {what}")
    if teacher.in_chans != student.in_chans:
        raise ValueError(
            f"the fd teacher reads {teacher.in_chans}-channel images, the student {student.in_chans}-channel ones "
            f"(data.in_chans): they must see the same view"
        )
    size = config.teacher_img_size or student.image_size
    if teacher.image_size != size:
        raise ValueError(
            f"the fd teacher is laid out for {teacher.image_size}-px images but will read {size}-px ones "
            f"(task.fd.teacher_img_size, else the student's image size): load it at that size"
        )
