"""data2vec (Baevski et al., 2022): one objective for text and images. A student sees the
input with some positions hidden behind the mask token and regresses, at the hidden
positions, a contextualised target: the average of the top-K normalised layer outputs of an
EMA teacher that sees the whole input.

The task talks to the backbone only through the contract (``backbones/protocol.py``): the
input comes from ``backbone_inputs``; ``mask_kind`` picks the mask generator (BERT tokens,
BEiT blocks, SimMIM-style squares); ``mask_grid`` / ``mask_unit`` / ``output_mask`` say where
a mask goes in and which final tokens it hides; ``forward_intermediates`` gives the teacher's
layer outputs (``output="ffn"`` where ``supports_ffn_targets``); ``final_stage_depth`` bounds K;
``layer_id`` tells the blocks from the rest; ``modality`` / ``vocab_size`` say whether tokens
can be corrupted as BERT. So the same class trains the text Transformer, ViT and Swin.

Defaults follow the official code of each modality (:data:`OFFICIAL`): text = fairseq
``examples/data2vec`` (``models/data2vec_text.py`` with ``config/text/pretraining/base.yaml``),
vision = data2vec_vision (``beit/run_cyclical.py`` / ``engine_for_cyclical.py``, the README's
ViT-B command). Every choice below is a :class:`~convergent.tasks.configs.Data2VecConfig` field.

* masking, text: BERT's (paper sec. 4.3; fairseq ``MaskTokensDataset`` defaults): 15 % of the
  real, non-special tokens are chosen, 80 % of those become the mask token, 10 % a random id,
  10 % stay (:class:`~convergent.tasks.configs.TokenMaskingConfig`, the corruption of
  :mod:`convergent.tasks.mlm`); the loss is taken where the student sees the mask token
  (fairseq: ``src_tokens.eq(mask_idx)``). fairseq's ``base.yaml`` itself runs the paper's
  "+ wav2vec 2.0 masking" variant (35 % in spans of 4, no random / kept tokens), not modelled.
  Vision: BEiT blocks over 60 % of the patches (data2vec_vision: 120 of 196), all replaced.
* teacher: a frozen deep copy of the backbone in eval mode (fairseq's ``ema.model.eval()``),
  held in the task's ``state_dict``. Each EMA step averages the parameters and copies the
  buffers; with ``ema_transformer_only`` (text, fairseq's ``ema_transformer_layers_only``)
  only the blocks are averaged and the rest (embeddings, final norm) is copied from the student.
  Vision averages the whole model (timm ``ModelEmaV2``).
* momentum: linear from ``ema_decay`` to ``ema_end_decay`` over ``ema_anneal_end_step``
  optimizer steps, then constant (:meth:`Data2Vec.on_step_end`). Text 0.999 → 0.9999 over 30 %
  of the run (fairseq: 300k of 1M updates); vision a constant 0.9998 (data2vec_vision's
  ``--ema_decay 0.9998 --ema_start_at 0``: the ramp from ``--ema_decay_init`` never runs). The
  average runs in the parameters' dtype: use fp32 weights (``bf16-mixed``, not ``bf16-true``).
* targets, prefix tokens dropped: text averages the top 10 of 12 layers' FFN outputs before
  the last residual and the post-norm (fairseq ``fc_results``), each with a parameter-free
  layer norm, no final norm; vision the top 6 of 12 block outputs (``--layer_results end``),
  each layer-normed, and layer-norms the average (``--post_target_layer_norm``). K scales with
  depth as the same share (10/12, 1/2), capped at ``final_stage_depth`` (Swin: the last stage).
  Instance norm uses only real (non-padding) tokens.
* prediction: fairseq text's two-layer head (Linear(D, 2D), GELU, Linear(2D, D)); vision a
  linear head. Smooth L1 with ``loss_beta`` (text 4, vision 2; 0: squared error), averaged
  over hidden tokens; per token summed over features (fairseq text, ``loss_scale: 1``) or
  averaged (data2vec_vision) — ``loss_reduction``.
* Swin: a final token covers ``mask_unit²`` patches and counts as hidden only when all are;
  the 'patch' generator hides whole units, so that is exact (SimMIM's mask size = encoder stride).
"""

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.protocol import backbone_inputs
from convergent.choices import DATA2VEC_LOSS_REDUCTIONS, DATA2VEC_TARGET_LAYERS, TARGET_NORMS
from convergent.layers import init_linear_norm_
from convergent.layers.linear import Linear
from convergent.losses.regression import masked_smooth_l1
from convergent.masking import block_masking, token_candidates, token_masking
from convergent.tasks.base import Task
from convergent.tasks.configs import Data2VecConfig, TokenMaskingConfig
from convergent.tasks.mlm import bert_corruption, check_corruption, choose_tokens
from convergent.tasks.teacher import ema_update_, frozen_copy, linear_momentum

NORMS = TARGET_NORMS
NORM_EPS = 1e-5  # F.layer_norm / F.instance_norm's default, as fairseq
BEIT_MIN_BLOCK, BEIT_GRID_AREA = 16, 196  # BEiT / data2vec vision: blocks of >= 16 patches of 14x14


@dataclass(frozen=True)
class Recipe:
    """The official value of each ``'auto'`` / None field of :class:`Data2VecConfig`, per mask kind."""

    mask_ratio: float
    loss_beta: float
    top_k_share: float
    """K as a share of ``final_stage_depth`` (official K / 12 blocks)."""
    target_layer: str
    target_norm: str
    final_norm: str
    loss_reduction: str
    head_layers: int
    ema_decay: float
    ema_end_decay: float
    ema_anneal_share: float
    """``ema_anneal_end_step`` as a share of the run's ``max_steps``."""
    ema_transformer_only: bool


TEXT = Recipe(
    mask_ratio=0.15, loss_beta=4.0, top_k_share=10 / 12, target_layer="ffn", target_norm="layer", final_norm="none",
    loss_reduction="sum", head_layers=2, ema_decay=0.999, ema_end_decay=0.9999, ema_anneal_share=0.3,
    ema_transformer_only=True,
)  # fmt: skip
"""fairseq ``examples/data2vec/config/text/pretraining/base.yaml`` + the paper's BERT masking (sec. 4.3)."""
VISION = Recipe(
    mask_ratio=0.6, loss_beta=2.0, top_k_share=6 / 12, target_layer="block", target_norm="layer", final_norm="layer",
    loss_reduction="mean", head_layers=1, ema_decay=0.9998, ema_end_decay=0.9998, ema_anneal_share=1.0,
    ema_transformer_only=False,
)  # fmt: skip
"""data2vec_vision ``beit/README.md``'s ViT-B command (``run_cyclical.py``), paper sec. 4.1; Swin follows it."""
OFFICIAL = {"token": TEXT, "block": VISION, "patch": VISION}


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
    ``token_type_ids``), optionally ``special_tokens_mask`` (never chosen), ``word_ids``
    (whole-word masking) and ``mask`` ``(B, prod(mask_grid))`` bool (the chosen positions;
    otherwise drawn from the global torch RNG, as the text corruption always is).
    Returns ``{"loss", "ema_decay", "target_var", "pred_var", "masked_fraction"}``:
    the current teacher momentum, the mean over channels of the standard deviation of the
    targets / predictions across hidden tokens (fairseq's ``compute_var``; near 0 means
    collapse) and the fraction of real final tokens the loss is taken at.
    """

    name = "data2vec"
    requires = ("supports_mask_token",)

    def __init__(self, backbone: nn.Module, config: Data2VecConfig):
        super().__init__(backbone, config)
        kind = backbone.mask_kind if config.mask_kind == "auto" else config.mask_kind
        if kind not in MASK_GENERATORS:
            raise ValueError(f"data2vec mask_kind must be 'auto' or one of {sorted(MASK_GENERATORS)}, got {kind!r}")
        self.mask_kind, official = kind, OFFICIAL[kind]
        r = self.recipe = _resolve(config, official)
        for field, choices in (("target_norm", NORMS), ("final_norm", NORMS), ("target_layer", DATA2VEC_TARGET_LAYERS),
                               ("loss_reduction", DATA2VEC_LOSS_REDUCTIONS)):  # fmt: skip
            if getattr(r, field) not in choices:
                allowed = choices if field == "target_norm" else ("auto", *choices)
                raise ValueError(f"data2vec {field} must be one of {allowed}, got {getattr(config, field)!r}")
        if r.target_layer == "ffn" and not backbone.supports_ffn_targets:
            raise ValueError(
                f"data2vec target_layer 'ffn' needs a backbone that declares supports_ffn_targets; "
                f"{type(backbone).__name__} does not: use target_layer 'block'"
            )
        self.mask_ratio, self.loss_beta = r.mask_ratio, r.loss_beta
        if not 0.0 < self.mask_ratio <= 1.0:
            raise ValueError(f"data2vec mask_ratio must be in (0, 1], got {self.mask_ratio}")
        if self.loss_beta < 0:
            raise ValueError(f"data2vec loss_beta must be >= 0, got {self.loss_beta}")
        if r.head_layers < 1:
            raise ValueError(f"data2vec head_layers must be >= 1, got {r.head_layers}")
        if not 0.0 <= r.ema_decay <= r.ema_end_decay <= 1.0:
            raise ValueError(
                f"data2vec needs 0 <= ema_decay <= ema_end_decay <= 1, got {r.ema_decay}, {r.ema_end_decay}"
            )
        # BERT's corruption where the input is token ids (the TokenMaskingConfig fields)
        token_fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(TokenMaskingConfig)}
        self.masking = TokenMaskingConfig(**{**token_fields, "mask_ratio": self.mask_ratio})
        check_corruption(self.masking)
        self.corrupts_tokens = kind == "token" and backbone.modality == "text"
        if self.corrupts_tokens:
            ids = {backbone.pad_token_id, backbone.mask_token_id, *config.special_ids} - {None}
            self.special_ids = tuple(sorted(ids))
        self.top_k = self._resolve_top_k(backbone, config.top_k_layers, official.top_k_share)
        self.num_prefix = backbone.num_prefix_tokens
        self.batch_keys = (backbone.input_key,)
        self.optional_batch_keys = tuple(backbone.extra_input_keys)  # read when present
        self.teacher = frozen_copy(backbone)
        self.head = regression_head(backbone.num_features, r.head_layers)
        # parameters outside the blocks (layer_id 0: embeddings; the top id: final norm, pooler)
        top = backbone.num_layers - 1
        self.shared = tuple(n for n, _ in backbone.named_parameters() if backbone.layer_id(n) in (0, top))
        # the momentum of the last EMA step (for logging; restored with the state dict)
        self.register_buffer("ema_decay", torch.tensor(float(r.ema_decay)))

    @staticmethod
    def _resolve_top_k(backbone: nn.Module, k: int | None, share: float) -> int:
        depth = backbone.final_stage_depth
        if k is None:
            return max(1, min(depth, math.floor(share * depth + 0.5)))
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
        chosen = self.draw_mask(batch, x, grid) & real  # (B, N_in)
        student_x, mask = x, chosen
        if self.corrupts_tokens:  # BERT: of the chosen, 80 % mask token, 10 % random id, 10 % kept
            mask, randomise, random_ids = bert_corruption(
                x, chosen, self.backbone.vocab_size, self.masking.replace_prob, self.masking.random_prob
            )
            student_x = torch.where(randomise, random_ids, x)
        valid = ~self.backbone.output_mask(~real, grid)  # (B, N_out) final tokens not all padding
        hidden = self.backbone.output_mask(mask, grid) & valid  # (B, N_out) the loss's positions
        target = self.targets(x, kwargs, valid)  # (B, N_out, D), no grad
        tokens = self.backbone.forward_features(student_x, mask=mask, **kwargs)[:, self.num_prefix :]
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
        scale = {"mean": 1.0, "sum": pred.shape[-1], "sqrt": math.sqrt(pred.shape[-1])}[self.recipe.loss_reduction]
        return {
            "loss": masked_smooth_l1(pred, target, hidden, self.loss_beta) * scale,
            "ema_decay": self.ema_decay.detach().clone(),
            "target_var": _spread(target, hidden),
            "pred_var": _spread(pred.detach(), hidden),
            "masked_fraction": hidden.sum() / valid.sum().clamp_min(1),
        }

    def on_step_end(self, step: int, max_steps: int) -> None:
        """EMA step of the teacher with the momentum of ``step`` (optimizer steps done)."""
        r = self.recipe
        end = self.config.ema_anneal_end_step
        end = max(1, round(r.ema_anneal_share * max_steps)) if end is None else end
        momentum = linear_momentum(step, end, r.ema_decay, r.ema_end_decay)
        self.ema_decay.fill_(momentum)
        if momentum < 1.0:
            ema_update_(self.teacher, self.backbone, momentum, copy=self.shared if r.ema_transformer_only else ())

    def train(self, mode: bool = True) -> "Data2Vec":
        """The teacher stays in eval mode."""
        super().train(mode)
        self.teacher.eval()
        return self

    # --- pieces -------------------------------------------------------------------------------
    def draw_mask(self, batch: dict, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """The chosen positions: ``batch["mask"]`` when given (checked), else one from the
        configured generator (on token ids: BERT's choice among real, non-special tokens, or
        whole words with ``whole_word_mask`` and ``batch["word_ids"]``)."""
        n = math.prod(grid)
        mask = batch.get("mask")
        if mask is None and self.corrupts_tokens:
            special = batch.get("special_tokens_mask")
            candidates = token_candidates(x, batch.get("attention_mask"), special, self.special_ids)  # (B, L)
            return choose_tokens(self.masking, candidates, batch.get("word_ids"))
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
        """The teacher's top-K layer outputs (``target_layer``: block or FFN outputs) on the
        full input, prefix tokens dropped, each normalised (``target_norm``), averaged, normalised
        again (``final_norm``): ``(B, N_out, D)`` float32. ``valid`` ``(B, N_out)`` marks the real
        tokens instance norm may use."""
        r = self.recipe
        extra = {"output": "ffn"} if r.target_layer == "ffn" else {}
        _, blocks = self.teacher.forward_intermediates(x, mask=None, indices=self.top_k, **kwargs, **extra)
        shapes = {tuple(b.shape) for b in blocks}
        if len(shapes) != 1:
            raise ValueError(
                f"the teacher's last {self.top_k} block outputs differ in shape {sorted(shapes)}; "
                f"{type(self.teacher).__name__}.final_stage_depth must count only final-resolution blocks"
            )
        layers = [normalize(b[:, self.num_prefix :].float(), r.target_norm, valid) for b in blocks]
        return normalize(torch.stack(layers).mean(dim=0), r.final_norm, valid)


def _resolve(config: Data2VecConfig, official: Recipe) -> Recipe:
    """``official`` with every field ``config`` sets explicitly (not None / 'auto') taken from it."""
    given = {f.name: getattr(config, f.name) for f in dataclasses.fields(Recipe) if hasattr(config, f.name)}
    return dataclasses.replace(official, **{k: v for k, v in given.items() if v is not None and v != "auto"})


def regression_head(dim: int, layers: int) -> nn.Module:
    """fairseq's data2vec regression head: ``layers - 1`` times Linear + GELU (the first widening
    to ``2·dim``), then Linear to ``dim``; one layer is a single Linear."""
    mods: list[nn.Module] = []
    width = dim
    for i in range(layers - 1):
        nxt = 2 * dim if i == 0 else width
        mods += [Linear(width, nxt), nn.GELU()]
        width = nxt
    mods.append(Linear(width, dim))
    head = mods[0] if layers == 1 else nn.Sequential(*mods)
    head.apply(init_linear_norm_)
    return head


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
