"""The Backbone contract shared by text and image encoders.

Every registered backbone subclasses :class:`Backbone` and provides:

* ``forward_features(x, mask=None, **kw) -> (B, N, C)`` final (normalised) tokens;
  ``mask`` is a ``(B, N_tokens)`` bool tensor, True where the input is hidden and the mask
  token replaces it (SimMIM, BERT MLM, data2vec students).
* ``forward_intermediates(x, mask=None, indices=None, **kw) -> (tokens, [per-block outputs])``
  for data2vec targets and probes (block outputs are taken before the final norm); a backbone
  declaring ``supports_ffn_targets`` also takes ``output="ffn"``: each selected block's
  feed-forward output before the last residual (and before a post-norm), data2vec's text targets.
* ``pooled(tokens) -> (B, C)``, ``embed_dim``, ``num_features``, ``no_weight_decay()``,
  ``set_grad_checkpointing()``, ``layer_id(param_name)`` / ``num_layers`` for layer decay.

Optional capabilities are class flags checked when a run is built, so a bad pairing fails
at once: ``supports_mask_token`` (SimMIM/MLM), ``supports_token_drop`` (MAE: encode only
kept tokens, ``forward_features(x, keep=ids)``), ``supports_causal`` (causal LM).

Inputs come from dict batches without the task knowing the modality: ``input_key`` names
the batch entry that is ``x`` (``"image"`` or ``"input_ids"``) and ``extra_input_keys`` the
optional entries passed on as keyword arguments (text: ``attention_mask``,
``token_type_ids``); :func:`backbone_inputs` does that lookup. ``mask_kind`` names the mask
generator that suits the backbone's input (``"token"`` text, ``"block"`` ViT, ``"patch"``
Swin) for modality-agnostic objectives such as data2vec.

Where masks go in and what they hide at the output, for such objectives:

* ``mask_grid(x)`` — the grid of positions ``mask`` covers for input ``x``: ``(L,)`` tokens,
  ``(H/p, W/p)`` patches; ``mask`` is that grid flattened row-major, ``(B, prod(grid))``;
* ``mask_unit`` — side, in grid cells, of the input square one final token summarises
  (1; Swin: ``2^(stages-1)``); masks drawn in whole units make ``output_mask`` exact;
* ``output_mask(mask, grid)`` — ``(B, N_out)``: which final tokens (prefix tokens excluded)
  are hidden; a token counts as hidden only when every position it summarises is;
* ``final_stage_depth`` — how many trailing blocks give outputs shaped like the final tokens
  (all blocks; Swin: the last stage's depth), the blocks whose outputs can be averaged.

What a backbone is, declared so that tasks and workflows never read ``backbone.config``:

* ``modality`` — ``"image"`` or ``"text"``; families subclass :class:`ImageBackbone` or
  :class:`TextBackbone`, which add the geometry of their modality:
* image: ``in_chans``, ``patch_size`` (pixels per input position the mask grid counts),
  ``image_size`` (the configured resolution), ``output_stride`` (pixels per final token) and
  ``feature_info`` (per stage: channels and reduction, as timm's);
* text: ``vocab_size``, ``max_length`` (positions), ``pad_token_id``, ``mask_token_id``,
  ``is_causal`` (built with left-to-right attention), ``word_embeddings``;
* every backbone: ``norm_eps``, ``act`` and ``dropout`` of its blocks (heads that mirror the encoder, such
  as MAE's decoder or an LM head, take them), ``supports_joint_tokens`` (``embed`` +
  ``forward_tokens`` over a longer sequence a task builds: ViLT).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


class Backbone(nn.Module):
    """Base class: shared plumbing for the contract above."""

    modality: ClassVar[str] = "image"
    """What the backbone reads: ``"image"`` or ``"text"``."""
    supports_mask_token: bool = True
    supports_token_drop: bool = False
    supports_joint_tokens: bool = False
    """``embed(x)`` and ``forward_tokens(tokens, key_padding_mask)`` run the blocks over a
    sequence a task builds around the embedded input (ViLT's ``[text ; image]``)."""
    supports_patch_tokens: bool = False
    """The final tokens (prefix tokens aside) are one per mask position, in its order
    (``output_stride == patch_size``: ViT), so a task can predict something per masked patch (BEiT)."""
    supports_causal: bool = False
    supports_unpad: bool = False
    """``forward_intermediates(..., unpad=True)`` skips padded tokens (text, see layers/unpad.py)."""
    supports_ffn_targets: bool = False
    """``forward_intermediates(..., output="ffn")`` gives the blocks' feed-forward outputs before
    the last residual instead of the block outputs (``output="block"``, what every backbone gives)."""
    num_prefix_tokens: int = 0
    input_key: str = "image"
    extra_input_keys: tuple[str, ...] = ()
    mask_kind: str = "patch"
    mask_unit: int = 1

    @property
    def first_token_summarises(self) -> bool:
        """Whether the first output token sees and summarises the whole input, so pooling it
        (``"cls"``, ``pooled``) means something: a class token (ViT), or the ``[CLS]`` a tokenizer
        puts first in a bidirectional text encoder. Not for Swin (one window) nor a causal text
        encoder (its first token sees only itself)."""
        return self.num_prefix_tokens > 0

    def __init__(self, config: Any):
        super().__init__()
        self.config = config
        self.grad_checkpointing = False

    # --- contract -----------------------------------------------------------------------
    def forward(self, x: torch.Tensor, **kwargs) -> torch.Tensor:
        return self.forward_features(x, **kwargs)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return self.forward_intermediates(x, mask=mask, indices=[], **kwargs)[0]

    def forward_intermediates(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, indices: Any = None, **kwargs
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        raise NotImplementedError

    def pooled(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def mask_grid(self, x: torch.Tensor) -> tuple[int, ...]:
        """Grid of the positions ``forward_features(x, mask=...)`` can hide for input ``x``."""
        raise NotImplementedError(f"{type(self).__name__} does not declare its mask grid (mask_grid)")

    def output_mask(self, mask: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        """Input mask ``(B, prod(grid))`` → ``(B, N_out)`` hidden final tokens (prefix tokens
        excluded). The default: final tokens correspond one-to-one to grid positions."""
        return mask

    @property
    def final_stage_depth(self) -> int:
        """Trailing blocks whose outputs have the final tokens' shape (before the final norm)."""
        raise NotImplementedError(f"{type(self).__name__} does not declare final_stage_depth")

    @property
    def norm_eps(self) -> float:
        """LayerNorm epsilon of the blocks."""
        return self.config.norm_eps

    @property
    def dropout(self) -> float:
        """Dropout rate on embeddings and residual branches."""
        return self.config.dropout

    @property
    def act(self) -> str:
        """Feed-forward activation of the blocks (``gelu``, ``gelu_tanh``, ``quick_gelu``, ``relu``)."""
        return self.config.act

    def no_weight_decay(self) -> set[str]:
        """Parameter names (as in ``named_parameters``) that take no weight decay."""
        return set()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @property
    def num_layers(self) -> int:
        """Layer-decay depth: 0 = embeddings, 1..depth = blocks, depth+1 = final norm/head."""
        raise NotImplementedError

    def layer_id(self, name: str) -> int:
        raise NotImplementedError

    # --- helpers for subclasses ---------------------------------------------------------
    def run_block(self, block: nn.Module, *args) -> torch.Tensor:
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    @classmethod
    def transfer_config(cls, source_config: Any, config: Any, overrides: dict) -> Any:
        """Config to build when weights saved with ``source_config`` are loaded with
        ``overrides``; lets a family fill in derived fields. The default changes nothing."""
        return config

    def adapt_state_dict(self, state_dict: dict, source_config: Any) -> dict:
        """Map a state dict saved with ``source_config`` onto this model's configuration
        (resolution / window transfer). The default changes nothing."""
        return state_dict

    def load_weights(self, state_dict: dict, source: str = "state dict") -> None:
        """Strict load that reports all missing and unexpected keys in one message."""
        missing, unexpected = _key_diff(self.state_dict().keys(), state_dict.keys())
        if missing or unexpected:
            raise KeyError(
                f"{source} does not match {type(self).__name__}: "
                f"missing keys {missing or 'none'}; unexpected keys {unexpected or 'none'}"
            )
        shapes = [
            f"{k}: {tuple(v.shape)} vs expected {tuple(self.state_dict()[k].shape)}"
            for k, v in state_dict.items()
            if tuple(v.shape) != tuple(self.state_dict()[k].shape)
        ]
        if shapes:
            raise ValueError(f"{source} has tensors of the wrong shape: " + "; ".join(shapes))
        self.load_state_dict(state_dict, strict=True)

    def save_pretrained(self, path: str | Path) -> Path:
        from convergent.backbones.pretrained import save_pretrained

        return save_pretrained(self, path)

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides) -> "Backbone":
        from convergent.backbones.pretrained import from_pretrained

        return from_pretrained(path, **overrides)


@dataclass(frozen=True)
class FeatureInfo:
    """One stage of an image backbone (timm's ``feature_info``)."""

    num_chs: int
    """Channels (token width) of the stage's output."""
    reduction: int
    """Pixels per token side of the stage's output."""


class ImageBackbone(Backbone):
    """An image encoder: ``x`` is ``(B, in_chans, H, W)``; its geometry is declared here."""

    modality = "image"
    input_key = "image"

    @property
    def in_chans(self) -> int:
        return self.config.in_chans

    @property
    def patch_size(self) -> int:
        """Pixels per side of one position of the mask grid (the patch or stem stride)."""
        return self.config.patch_size

    @property
    def image_size(self) -> int:
        """Side of the square images the model is laid out for (position tables, windows)."""
        return self.config.img_size

    @property
    def feature_info(self) -> list[FeatureInfo]:
        """Channels and reduction of each stage's output, first to last."""
        raise NotImplementedError(f"{type(self).__name__} does not declare feature_info")

    @property
    def output_stride(self) -> int:
        """Pixels per side of one final token (ViT: the patch size; Swin: patch · 2^(stages-1))."""
        return self.feature_info[-1].reduction

    @property
    def output_grid(self) -> tuple[int, int]:
        """Grid of final tokens (prefix tokens excluded) at ``image_size``."""
        side = -(-self.image_size // self.output_stride)
        return (side, side)


class TextBackbone(Backbone):
    """A text encoder: ``x`` is ``(B, L)`` token ids; its vocabulary is declared here."""

    modality = "text"
    input_key = "input_ids"
    mask_kind = "token"

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def max_length(self) -> int:
        """Longest sequence the backbone takes (its learned positions)."""
        return self.config.max_position

    @property
    def pad_token_id(self) -> int:
        return self.config.pad_token_id

    @property
    def mask_token_id(self) -> int | None:
        """Id whose embedding replaces masked positions (None: a learned mask token)."""
        return self.config.mask_token_id

    @property
    def is_causal(self) -> bool:
        """Built with left-to-right attention."""
        return self.config.causal

    @property
    def word_embeddings(self) -> nn.Embedding:
        """The word-embedding table ``(V, C)`` (LM heads tie their decoder to it)."""
        raise NotImplementedError(f"{type(self).__name__} does not declare word_embeddings")


def backbone_inputs(backbone: Backbone, batch: dict) -> tuple[torch.Tensor, dict]:
    """``(x, kwargs)`` for ``backbone`` from a dict batch: ``batch[backbone.input_key]`` and
    those of ``backbone.extra_input_keys`` that the batch holds."""
    key = backbone.input_key
    if key not in batch:
        raise KeyError(f"{type(backbone).__name__} reads batch[{key!r}], but the batch holds {sorted(batch)}")
    extra = {k: batch[k] for k in backbone.extra_input_keys if batch.get(k) is not None}
    return batch[key], extra


def select_indices(indices: Any, n: int) -> list[int]:
    """Normalise ``indices`` (None: all, int k: last k, sequence: those, negatives allowed)."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        return list(range(n - indices, n))
    out = sorted({i % n for i in indices}) if n else []
    for i in indices:
        if not -n <= i < n:
            raise IndexError(f"intermediate index {i} out of range for {n} blocks")
    return out


INTERMEDIATE_OUTPUTS = ("block", "ffn")
"""What ``forward_intermediates(..., output=...)`` collects per block: its output, or ('ffn', with
``supports_ffn_targets``) its feed-forward output before the last residual."""


def check_intermediate_output(output: str) -> None:
    """A clear error for an ``output`` outside :data:`INTERMEDIATE_OUTPUTS`."""
    if output not in INTERMEDIATE_OUTPUTS:
        raise ValueError(f"forward_intermediates output must be one of {INTERMEDIATE_OUTPUTS}, got {output!r}")


def apply_mask_token(tokens: torch.Tensor, mask: torch.Tensor | None, mask_token: torch.Tensor) -> torch.Tensor:
    """Replace ``tokens`` ``(B, N, C)`` where ``mask`` ``(B, N)`` is True by ``mask_token``."""
    if mask is None:
        return tokens
    if mask.shape != tokens.shape[:2]:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match tokens {tuple(tokens.shape[:2])}")
    w = mask.unsqueeze(-1).to(tokens.dtype)
    return tokens * (1 - w) + mask_token.to(tokens.dtype) * w


def coarsen_mask(mask: torch.Tensor, grid: tuple[int, int], unit: int, pad: bool = True) -> torch.Tensor:
    """Input mask ``(B, Gh*Gw)`` → ``(B, Oh*Ow)``, one entry per ``unit × unit`` square of the
    grid (row-major), True when every position in the square is: the ``output_mask`` of a
    hierarchical backbone whose final tokens each summarise such a square.

    ``pad``: a grid that is not a multiple of ``unit`` is padded on the right/bottom and the
    padding counts as hidden, ``Oh = ceil(Gh/unit)`` (Swin's patch merging pads); otherwise the
    trailing partial squares are dropped, ``Oh = Gh // unit`` (strided convolutions floor: ConvNeXt).
    """
    gh, gw = grid
    m = mask.reshape(mask.shape[0], gh, gw)
    if pad:
        m = F.pad(m, (0, -gw % unit, 0, -gh % unit), value=True)  # (B, Hu*u, Wu*u)
    else:
        m = m[:, : gh - gh % unit, : gw - gw % unit]  # (B, Hu*u, Wu*u)
    b, h, w = m.shape
    return m.reshape(b, h // unit, unit, w // unit, unit).all(dim=4).all(dim=2).flatten(1)


def _key_diff(expected: Sequence[str], got: Sequence[str]) -> tuple[list[str], list[str]]:
    expected, got = set(expected), set(got)
    return sorted(expected - got), sorted(got - expected)
