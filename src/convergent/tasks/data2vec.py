"""data2vec (Baevski et al., 2022): one objective for text and images. A student sees the
input with some positions hidden behind the mask token and regresses, at the hidden
positions, a contextualised target: the average of the top-K normalised block outputs of an
EMA teacher that sees the whole input.

The task talks to the backbone only through the contract (``backbones/protocol.py``): the
input comes from ``backbone_inputs``; ``mask_kind`` picks the mask generator (BERT tokens,
BEiT blocks, SimMIM-style squares); ``mask_grid`` / ``mask_unit`` / ``output_mask`` say where
a mask goes in and which final tokens it hides; ``forward_intermediates`` gives the teacher's
block outputs; ``final_stage_depth`` bounds K. So the same class trains the text
Transformer, ViT and Swin.

Choices (paper sections in brackets; fairseq = ``examples/data2vec`` of fairseq):

* teacher: a frozen deep copy of the backbone, kept in eval mode (no dropout / drop path,
  as fairseq's ``ema.model.eval()``), held in the task's ``state_dict`` so a resumed run
  continues with the same teacher. Each EMA step averages the parameters and copies the
  student's buffers: ours are constants of the config (position indices, shift masks), and
  a backbone with running statistics would otherwise keep its initial ones. The paper shares
  the embeddings between student and teacher [3.3]; here the whole backbone is averaged.
* momentum: linear from ``ema_decay`` to ``ema_end_decay`` over ``ema_anneal_end_step``
  optimizer steps, then constant [3.3], applied in :meth:`Data2Vec.on_step_end`. The average
  runs in the parameters' dtype: use fp32 weights (``bf16-mixed``, not ``bf16-true``), as the
  paper does EMA in fp32 [4] — at momentum 0.999+ bf16 rounds the updates away.
* targets: block outputs (the contract's, i.e. after the residual; the paper prefers the FFN
  output before the last residual [3.3, footnote 5], fairseq vision uses block ends), prefix
  tokens dropped; each normalised (parameter-free LayerNorm for text and vision [3.3]),
  averaged, optionally normalised again. Instance norm uses only real (non-padding) tokens.
  K is at most ``final_stage_depth``: Swin stages have different widths and resolutions, so
  only the last stage's blocks can be averaged (an explicit larger K is an error naming the
  limit).
* prediction: a linear head on the student's final tokens; Smooth L1 with ``loss_beta``
  [3.4] (0: squared error, fairseq's convention), mean over the hidden final tokens and the
  feature dimension (fairseq sums over it and scales by ``1/sqrt(D)``; see
  :func:`~convergent.losses.regression.masked_smooth_l1`).
* Swin: a final token covers ``mask_unit²`` patches and counts as hidden only when all are;
  the 'patch' generator hides whole units, so that is exact (SimMIM's mask size = encoder stride).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.protocol import backbone_inputs
from convergent.choices import TARGET_NORMS
from convergent.layers import init_linear_norm_
from convergent.layers.linear import Linear
from convergent.losses.regression import masked_smooth_l1
from convergent.masking import block_masking, token_masking
from convergent.tasks.base import Task
from convergent.tasks.configs import Data2VecConfig
from convergent.tasks.teacher import ema_update_, frozen_copy, linear_momentum

NORMS = TARGET_NORMS
NORM_EPS = 1e-5  # F.layer_norm / F.instance_norm's default, as fairseq
BEIT_MIN_BLOCK, BEIT_GRID_AREA = 16, 196  # BEiT / data2vec vision: blocks of >= 16 patches of 14x14


@dataclass(frozen=True)
class _PaperDefaults:
    mask_ratio: float
    loss_beta: float
    top_k: int


# per mask kind: text (sec. 4.3: 15 % of tokens, beta 4, K 10), vision (sec. 4.1: 60 % of
# patches, beta 2, K 6); Swin follows the vision setting
PAPER_DEFAULTS = {
    "token": _PaperDefaults(mask_ratio=0.15, loss_beta=4.0, top_k=10),
    "block": _PaperDefaults(mask_ratio=0.6, loss_beta=2.0, top_k=6),
    "patch": _PaperDefaults(mask_ratio=0.6, loss_beta=2.0, top_k=6),
}


def real_positions(batch: dict, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """``(B, prod(grid))`` True at real input positions: ``batch["attention_mask"]`` when
    given (text padding), else everywhere."""
    n = math.prod(grid)
    if batch.get("attention_mask") is not None:
        return batch["attention_mask"].bool().reshape(x.shape[0], n)
    return torch.ones(x.shape[0], n, dtype=torch.bool, device=x.device)


# --- mask generators: (batch, x, grid, ratio, unit) -> (B, prod(grid)) bool, True = hidden ----


def token_mask(batch: dict, x: torch.Tensor, grid: tuple[int, ...], ratio: float, unit: int) -> torch.Tensor:
    """BERT: ``round(ratio · n)`` uniformly chosen positions among each row's ``n`` candidates
    (:func:`real_positions` minus ``special_tokens_mask`` when the batch holds it)."""
    candidates = real_positions(batch, x, grid)  # (B, N_in)
    if batch.get("special_tokens_mask") is not None:
        candidates = candidates & ~batch["special_tokens_mask"].bool().reshape(candidates.shape)
    return token_masking(candidates, ratio)


def block_mask(batch: dict, x: torch.Tensor, grid: tuple[int, ...], ratio: float, unit: int) -> torch.Tensor:
    """BEiT blocks on a 2-d grid (data2vec vision, 60 %). A block covers at least BEiT's 16
    patches at 14×14, scaled with the grid's area (at least 1), so small grids still fit blocks."""
    if len(grid) != 2:
        raise ValueError(f"mask_kind 'block' needs a 2-d mask grid, the backbone gives {grid}")
    min_block = max(1, min(BEIT_MIN_BLOCK, round(BEIT_MIN_BLOCK * grid[0] * grid[1] / BEIT_GRID_AREA)))
    return block_masking(x.shape[0], grid, ratio, min_num_patches=min_block).to(x.device)


def patch_mask(batch: dict, x: torch.Tensor, grid: tuple[int, ...], ratio: float, unit: int) -> torch.Tensor:
    """SimMIM-style: ``round(ratio · cells)`` random cells of ``unit`` positions per side (one
    final token each), expanded to the grid and cropped where the grid is not a multiple."""
    cells = tuple(-(-g // unit) for g in grid)
    chosen = torch.ones(x.shape[0], math.prod(cells), dtype=torch.bool, device=x.device)
    m = token_masking(chosen, ratio).view(x.shape[0], *cells)  # (B, *cells)
    for d, g in enumerate(grid, start=1):
        m = m.repeat_interleave(unit, dim=d).narrow(d, 0, g)
    return m.flatten(1)


MASK_GENERATORS = {"token": token_mask, "block": block_mask, "patch": patch_mask}


class Data2Vec(Task):
    """data2vec around any backbone with a mask token.

    ``forward(batch)`` reads ``batch[backbone.input_key]`` and the backbone's optional
    ``extra_input_keys`` (text: ``attention_mask``, whose zeros mark padding, and
    ``token_type_ids``), optionally ``special_tokens_mask`` (never hidden) and ``mask``
    ``(B, prod(mask_grid))`` bool (True = hidden; otherwise drawn from the global torch RNG).
    Returns ``{"loss", "ema_decay", "target_var", "pred_var", "masked_fraction"}``:
    the current teacher momentum, the mean over channels of the standard deviation of the
    targets / predictions across hidden tokens (fairseq's ``compute_var``; near 0 means
    collapse) and the fraction of real final tokens hidden.
    """

    name = "data2vec"
    requires = ("supports_mask_token",)

    def __init__(self, backbone: nn.Module, config: Data2VecConfig):
        super().__init__(backbone, config)
        kind = backbone.mask_kind if config.mask_kind == "auto" else config.mask_kind
        if kind not in MASK_GENERATORS:
            raise ValueError(f"data2vec mask_kind must be 'auto' or one of {sorted(MASK_GENERATORS)}, got {kind!r}")
        for field in ("target_norm", "final_norm"):
            if getattr(config, field) not in NORMS:
                raise ValueError(f"data2vec {field} must be one of {NORMS}, got {getattr(config, field)!r}")
        paper = PAPER_DEFAULTS[kind]
        self.mask_kind = kind
        self.mask_ratio = paper.mask_ratio if config.mask_ratio is None else config.mask_ratio
        if not 0.0 < self.mask_ratio <= 1.0:
            raise ValueError(f"data2vec mask_ratio must be in (0, 1], got {self.mask_ratio}")
        self.loss_beta = paper.loss_beta if config.loss_beta is None else config.loss_beta
        if self.loss_beta < 0:
            raise ValueError(f"data2vec loss_beta must be >= 0, got {self.loss_beta}")
        if not 0.0 <= config.ema_decay <= config.ema_end_decay <= 1.0:
            raise ValueError(
                f"data2vec needs 0 <= ema_decay <= ema_end_decay <= 1, got {config.ema_decay}, {config.ema_end_decay}"
            )
        self.top_k = self._resolve_top_k(backbone, config.top_k_layers, paper.top_k)
        self.num_prefix = backbone.num_prefix_tokens
        self.batch_keys = (backbone.input_key,)
        self.optional_batch_keys = tuple(backbone.extra_input_keys)  # read when present
        self.teacher = frozen_copy(backbone)
        self.head = Linear(backbone.num_features, backbone.num_features)  # regression head
        init_linear_norm_(self.head)
        # the momentum of the last EMA step (for logging; restored with the state dict)
        self.register_buffer("ema_decay", torch.tensor(float(config.ema_decay)))

    @staticmethod
    def _resolve_top_k(backbone: nn.Module, k: int | None, paper_k: int) -> int:
        depth = backbone.final_stage_depth
        if k is None:
            return min(paper_k, depth)
        if not 1 <= k <= depth:
            raise ValueError(
                f"data2vec top_k_layers={k}, but {type(backbone).__name__} has {depth} blocks at its final "
                f"resolution (final_stage_depth) whose outputs can be averaged; use 1..{depth}"
            )
        return k

    # --- training ---------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        x, kwargs = backbone_inputs(self.backbone, batch)
        grid = tuple(self.backbone.mask_grid(x))
        real = real_positions(batch, x, grid)  # (B, N_in)
        mask = self.draw_mask(batch, x, grid) & real  # (B, N_in)
        valid = ~self.backbone.output_mask(~real, grid)  # (B, N_out) final tokens not all padding
        hidden = self.backbone.output_mask(mask, grid) & valid  # (B, N_out)
        target = self.targets(x, kwargs, valid)  # (B, N_out, D), no grad
        tokens = self.backbone.forward_features(x, mask=mask, **kwargs)[:, self.num_prefix :]
        pred = self.head(tokens)  # (B, N_out, D)
        if pred.shape != target.shape:
            raise ValueError(
                f"student predictions {tuple(pred.shape)} and teacher targets {tuple(target.shape)} differ: the "
                f"backbone's final tokens and its last {self.top_k} block outputs must have the same shape"
            )
        if hidden.shape != pred.shape[:2]:
            raise ValueError(
                f"{type(self.backbone).__name__}.output_mask gives {tuple(hidden.shape)}, but there are "
                f"{tuple(pred.shape[:2])} final tokens"
            )
        return {
            "loss": masked_smooth_l1(pred, target, hidden, self.loss_beta),
            "ema_decay": self.ema_decay.detach().clone(),
            "target_var": _spread(target, hidden),
            "pred_var": _spread(pred.detach(), hidden),
            "masked_fraction": hidden.sum() / valid.sum().clamp_min(1),
        }

    def on_step_end(self, step: int, max_steps: int) -> None:
        """EMA step of the teacher with the momentum of ``step`` (optimizer steps done)."""
        cfg = self.config
        end = max_steps if cfg.ema_anneal_end_step is None else cfg.ema_anneal_end_step
        momentum = linear_momentum(step, end, cfg.ema_decay, cfg.ema_end_decay)
        self.ema_decay.fill_(momentum)
        if momentum < 1.0:
            ema_update_(self.teacher, self.backbone, momentum)

    def train(self, mode: bool = True) -> "Data2Vec":
        """The teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    # --- pieces -------------------------------------------------------------------------------
    def draw_mask(self, batch: dict, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """``batch["mask"]`` when given (checked), else one from the configured generator."""
        n = math.prod(grid)
        mask = batch.get("mask")
        if mask is None:
            return MASK_GENERATORS[self.mask_kind](batch, x, grid, self.mask_ratio, self.backbone.mask_unit)
        if mask.shape != (x.shape[0], n):
            raise ValueError(
                f"batch['mask'] must be (B={x.shape[0]}, {n}) over the backbone's mask grid {grid}, "
                f"got {tuple(mask.shape)}"
            )
        return mask.bool()

    @torch.no_grad()
    def targets(self, x: torch.Tensor, kwargs: dict, valid: torch.Tensor) -> torch.Tensor:
        """The teacher's top-K block outputs on the full input, prefix tokens dropped, each
        normalised (``target_norm``), averaged, normalised again (``final_norm``): ``(B, N_out, D)``
        float32. ``valid`` ``(B, N_out)`` marks the real tokens instance norm may use."""
        _, blocks = self.teacher.forward_intermediates(x, mask=None, indices=self.top_k, **kwargs)
        shapes = {tuple(b.shape) for b in blocks}
        if len(shapes) != 1:
            raise ValueError(
                f"the teacher's last {self.top_k} block outputs differ in shape {sorted(shapes)}; "
                f"{type(self.teacher).__name__}.final_stage_depth must count only final-resolution blocks"
            )
        layers = [normalize(b[:, self.num_prefix :].float(), self.config.target_norm, valid) for b in blocks]
        return normalize(torch.stack(layers).mean(dim=0), self.config.final_norm, valid)


def normalize(x: torch.Tensor, kind: str, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Parameter-free normalisation of tokens ``(B, N, D)``: 'layer' over ``D`` per token,
    'instance' per channel over the tokens where ``valid`` ``(B, N)`` is True (all if None),
    'none'. Biased variance and eps 1e-5, as ``F.layer_norm`` / ``F.instance_norm``."""
    if kind == "none":
        return x
    if kind == "layer":
        return F.layer_norm(x, x.shape[-1:], eps=NORM_EPS)
    if kind != "instance":
        raise ValueError(f"unknown normalisation {kind!r}; expected one of {NORMS}")
    w = torch.ones_like(x[..., :1]) if valid is None else valid.unsqueeze(-1).to(x.dtype)  # (B, N, 1)
    count = w.sum(dim=1, keepdim=True).clamp_min(1.0)  # (B, 1, 1)
    mean = (x * w).sum(dim=1, keepdim=True) / count  # (B, 1, D)
    var = ((x - mean).square() * w).sum(dim=1, keepdim=True) / count
    return (x - mean) * torch.rsqrt(var + NORM_EPS)


def _spread(v: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """Mean over channels of the (unbiased) std of ``v`` ``(B, N, D)`` across the positions
    ``where`` selects (fairseq ``compute_var``, single process); 0 with fewer than two."""
    w = where.unsqueeze(-1).to(torch.float32)  # (B, N, 1)
    v = v.float()
    n = w.sum()
    mean = (v * w).sum(dim=(0, 1)) / n.clamp_min(1.0)  # (D,)
    var = ((v - mean).square() * w).sum(dim=(0, 1)) / (n - 1).clamp_min(1.0)
    return torch.where(n >= 2, torch.sqrt(var + 1e-6).mean(), torch.zeros((), device=v.device))
