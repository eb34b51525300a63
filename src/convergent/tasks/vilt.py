"""ViLT (Kim, Son, Kim, 2021): a single-stream vision-and-language Transformer.

One Transformer reads the joint sequence ``[text tokens ; class token, image patches]``. Here
that Transformer is the task's ``backbone``, a ViT (ViLT starts from ViT-B/32): its patch
embedding, class token and position embeddings embed the image (:meth:`VisionTransformer.embed`),
its pre-norm blocks and final norm run over the joint sequence
(:meth:`VisionTransformer.forward_tokens`), with the text's padding masked out of attention.
The task owns the text embedding (word + learned position, LayerNorm: BERT's embeddings
without token types), two learned modality-type embeddings (text 0, image 1), ViLT's pooler
(``tanh(dense(first token))``, the first token being the text's [CLS]) and the heads:

* image–text matching (ITM): ``round(itm_neg_ratio * B)`` pairs of the batch, chosen at
  random (:func:`itm_negatives`), take another image: with ``itm_negatives='dataset'`` (ViLT's
  code, ``BaseDataset.get_false_image``) the random other image of the dataset that the data
  side drew for the sample (batch key ``false_image``, transformed like ``image``; never the
  sample's own); with 'batch' the image of another pair (a random derangement, so a negative
  never keeps its own image). A linear head on the pooled token scores matched (1) against
  not matched (0), cross-entropy;
* masked language modelling (MLM) conditioned on the image: BERT's corruption of 15 % of
  each text's real, non-special tokens (:func:`~convergent.masking.token_masking`, or whole
  words with ``whole_word_mask`` and ``batch["word_ids"]``,
  :func:`~convergent.masking.whole_word_masking`; then
  :func:`~convergent.tasks.mlm.corrupt_tokens`: 80 % [MASK], 10 % random, 10 % kept), an
  LM head (:class:`~convergent.heads.lm_head.LMHead`) tied to the task's word embedding,
  cross-entropy on the chosen tokens of matched pairs only.

``loss = itm_weight * itm_loss + mlm_weight * mlm_loss``. As ViLT's code, MLM and ITM are two
passes (MLM: masked text with its own image; ITM: clean text with half the images swapped);
they run as one batch of 2B through the Transformer. ``single_pass`` runs one pass of masked
text with the swapped images instead and drops the MLM targets of the swapped rows.

Layout = HF ``ViltModel`` (pre-norm blocks, final LayerNorm, pooler over the first token;
tested for parity at tiny size in ``tests/test_vilt.py``): HF's text token-type embedding
(always type 0) folds into our text positions, and HF's ``max_image_length`` patch sampling
(off by default) is not modelled. With a ``pre_norm`` (CLIP-layout) ViT, its ``norm_pre``
normalises the image part before the modality embedding is added.

Whole-word masking needs word ids from the data side: the pipeline must add
``word_ids`` ``(B, L)`` int64 to the batch (HF ``tokenizers``' ``Encoding.word_ids`` with
None → -1, as ``Tokenizer.encode_batch(..., word_ids=True)`` does); without them the task
warns once and masks tokens.
"""

import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones.text import Pooler
from convergent.choices import FALSE_IMAGE, ITM_NEGATIVES
from convergent.heads.lm_head import LMHead
from convergent.layers import init_linear_norm_
from convergent.losses.language import IGNORE_INDEX, token_cross_entropy
from convergent.masking import token_candidates
from convergent.tasks.base import Task
from convergent.tasks.configs import ViLTConfig
from convergent.tasks.mlm import check_corruption, choose_tokens, corrupt_tokens

TEXT, IMAGE = 0, 1  # rows of the modality-type embedding


class TextEmbedding(nn.Module):
    """Token ids ``(B, L)`` → ``(B, L, dim)``: word + learned absolute position embeddings,
    LayerNorm, dropout (BERT's embeddings without token types; ViLT's text embeddings)."""

    def __init__(self, vocab_size: int, max_len: int, dim: int, pad_token_id: int, eps: float, dropout: float):
        super().__init__()
        self.word_embed = nn.Embedding(vocab_size, dim, padding_idx=pad_token_id)
        self.pos_embed = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.drop = nn.Dropout(dropout)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """BERT: embeddings ~ normal(0, 0.02) with a zero padding row, LayerNorm at identity."""
        nn.init.normal_(self.word_embed.weight, std=0.02)
        self.word_embed.weight[self.word_embed.padding_idx].zero_()
        nn.init.normal_(self.pos_embed.weight, std=0.02)
        init_linear_norm_(self.norm)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if input_ids.ndim != 2:
            raise ValueError(f"expected input_ids of shape (B, L), got {tuple(input_ids.shape)}")
        vocab, max_len = self.word_embed.num_embeddings, self.pos_embed.num_embeddings
        if input_ids.shape[1] > max_len:
            raise ValueError(f"text length {input_ids.shape[1]} exceeds ViLTConfig.max_text_len {max_len}")
        outside = not torch.compiler.is_compiling() and bool(((input_ids < 0) | (input_ids >= vocab)).any())
        if outside:  # a clear error instead of an index error inside nn.Embedding (one host sync)
            raise ValueError(
                f"input_ids must lie in [0, {vocab}) (ViLTConfig.vocab_size), got values in "
                f"[{int(input_ids.min())}, {int(input_ids.max())}]"
            )
        x = self.word_embed(input_ids) + self.pos_embed.weight[: input_ids.shape[1]]  # (B, L, C)
        return self.drop(self.norm(x))


class ViLT(Task):
    """Single-stream image–text Transformer with ITM and MLM (see the module docstring).

    ``forward(batch)`` reads ``batch["image"]`` ``(B, C, H, W)``, ``batch["input_ids"]``
    ``(B, L)``, ``batch["attention_mask"]`` ``(B, L)`` (1 = real token; padding on the right)
    and, when present, ``batch["special_tokens_mask"]`` ``(B, L)`` (never chosen for MLM;
    without it the pad / mask ids and ``ViLTConfig.special_ids`` are not) and ``batch["word_ids"]``
    ``(B, L)`` (whole-word masking); with ``itm_negatives='dataset'`` also ``batch["false_image"]``
    ``(B, C, H, W)``, a random other image per pair. Pair ``i`` is ``(image[i], text[i])``. Which
    pairs become ITM negatives (and, with 'batch', whose image they take) and the MLM positions
    are drawn from the global RNG.

    Returns ``{"loss", "itm_loss", "mlm_loss", "itm_acc", "mlm_acc"}``. With
    ``return_outputs=True`` also ``"itm_logits"`` ``(B, 2)``, ``"itm_labels"`` ``(B,)`` (1 =
    matched), ``"itm_image"`` ``(B,)`` (the batch index of the image each ITM row saw; -1: its
    ``false_image``),
    ``"mlm_image"`` ``(B,)`` (likewise for the MLM rows), ``"mlm_input_ids"`` (the corrupted
    ids) and ``"mlm_labels"`` ``(B, L)`` (-100 where nothing is predicted).

    Args:
        backbone: a ViT (``VisionTransformer``), the joint Transformer.
        config: :class:`~convergent.tasks.configs.ViLTConfig` with the tokenizer's
            ``vocab_size`` and ``mask_token_id`` set.
    """

    name = "vilt"
    batch_keys = ("image", "input_ids", "attention_mask")
    modality = "image"
    requires = ("supports_joint_tokens",)

    @classmethod
    def configure_text(cls, config: ViLTConfig, vocab: dict) -> None:
        """The task's own word embeddings take the tokenizer's vocabulary and ids."""
        config.vocab_size, config.pad_token_id = vocab["vocab_size"], vocab["pad_token_id"]
        config.mask_token_id = vocab["mask_token_id"]
        config.max_text_len = max(config.max_text_len, vocab["max_length"])

    def __init__(self, backbone: nn.Module, config: ViLTConfig):
        super().__init__(backbone, config)
        _check_config(config)
        if config.itm_negatives == "dataset":
            self.batch_keys = (*ViLT.batch_keys, FALSE_IMAGE)
        c = backbone.num_features
        self.text_embed = TextEmbedding(
            config.vocab_size, config.max_text_len, c, config.pad_token_id, backbone.norm_eps, backbone.dropout
        )
        self.modality_embed = nn.Embedding(2, c)  # (text, image), ViLT's token_type_embeddings
        self.pooler = Pooler(c)
        self.itm_head = nn.Linear(c, 2)
        self.mlm_head = LMHead(c, config.vocab_size, backbone.act, backbone.norm_eps)
        nn.init.normal_(self.modality_embed.weight, std=0.02)
        for layer in (self.pooler.dense, self.itm_head):  # ViLT's init: normal(0, 0.02), zero bias
            init_linear_norm_(layer, std=0.02, truncated=False)
        self.special_ids = tuple(sorted({config.pad_token_id, config.mask_token_id, *config.special_ids}))

    # --- the joint Transformer ------------------------------------------------------------
    def encode(
        self, input_ids: torch.Tensor, image: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Texts ``(B, L)`` (+ ``attention_mask`` ``(B, L)``, 1 = real) and images ``(B, C, H, W)``
        → the final joint tokens ``(B, L + 1 + N, C)`` (text first, then class token and patches)
        and the pooled first token ``(B, C)``."""
        if image.shape[0] != input_ids.shape[0]:
            raise ValueError(f"{image.shape[0]} images but {input_ids.shape[0]} texts; ViLT needs pairs")
        text = self.text_embed(input_ids) + self.modality_embed.weight[TEXT]  # (B, L, C)
        img = self.backbone.embed(image) + self.modality_embed.weight[IMAGE]  # (B, 1 + N, C)
        real = _real_tokens(input_ids, attention_mask)
        real = torch.cat([real, real.new_ones(img.shape[:2])], dim=1)  # every image token is real
        tokens, _ = self.backbone.forward_tokens(torch.cat([text, img], dim=1), key_padding_mask=real)
        return tokens, self.pooler(tokens[:, 0])

    def mlm_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text tokens ``(..., C)`` → vocabulary logits ``(..., V)`` (head tied to the word embedding)."""
        return self.mlm_head(tokens, self.text_embed.word_embed.weight)

    # --- training -------------------------------------------------------------------------
    def forward(self, batch: dict[str, torch.Tensor], return_outputs: bool = False) -> dict[str, torch.Tensor]:
        cfg = self.config
        ids, image = batch["input_ids"], batch["image"]
        b, length = ids.shape
        if image.shape[0] != b:
            raise ValueError(f"{image.shape[0]} images but {b} texts; ViLT needs pairs")
        attention = _real_tokens(ids, batch.get("attention_mask"))
        negative, partner = itm_negatives(b, cfg.itm_neg_ratio, device=ids.device)  # (B,), (B,)
        own = torch.arange(b, device=ids.device)
        if cfg.itm_negatives == "dataset":  # ViLT: the sample's random other image of the dataset
            false = batch[FALSE_IMAGE]
            if false.shape != image.shape:
                raise ValueError(
                    f"batch['{FALSE_IMAGE}'] {tuple(false.shape)} must match batch['image'] {tuple(image.shape)}"
                )
            itm_images = torch.where(negative[:, None, None, None], false, image)  # (B, C, H, W)
            itm_image = torch.where(negative, -1, own)  # (B,) -1: the false image
        else:  # another pair's image of the batch
            itm_image = torch.where(negative, partner, own)  # (B,) the image each ITM row sees
            itm_images = image[itm_image]
        mlm_ids, mlm_labels = self.corrupt(ids, attention, batch)  # (B, L), (B, L)
        if cfg.single_pass:
            mlm_labels = mlm_labels.masked_fill(negative[:, None], IGNORE_INDEX)  # matched pairs only
            tokens, pooled = self.encode(mlm_ids, itm_images, attention)
            text_tokens, mlm_image = tokens[:, :length], itm_image
        else:  # ITM on clean text, MLM with each text's own image: one batch of 2B
            tokens, pooled = self.encode(
                torch.cat([ids, mlm_ids]), torch.cat([itm_images, image]), torch.cat([attention, attention])
            )
            pooled, text_tokens, mlm_image = pooled[:b], tokens[b:, :length], own
        itm_logits = self.itm_head(pooled)  # (B, 2)
        itm_labels = (~negative).long()  # 1 = matched
        itm_loss = F.cross_entropy(itm_logits.float(), itm_labels)
        predicted = mlm_labels != IGNORE_INDEX  # (B, L)
        mlm_loss, mlm_acc, _ = token_cross_entropy(self.mlm_logits(text_tokens[predicted]), mlm_labels[predicted])
        out = {
            "loss": cfg.itm_weight * itm_loss + cfg.mlm_weight * mlm_loss,
            "itm_loss": itm_loss,
            "mlm_loss": mlm_loss,
            "itm_acc": (itm_logits.detach().argmax(-1) == itm_labels).float().mean(),
            "mlm_acc": mlm_acc,
        }
        if return_outputs:
            out.update(
                itm_logits=itm_logits, itm_labels=itm_labels, itm_image=itm_image, mlm_image=mlm_image,
                mlm_input_ids=mlm_ids, mlm_labels=mlm_labels,
            )  # fmt: skip
        return out

    def corrupt(
        self, input_ids: torch.Tensor, real: torch.Tensor, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """BERT's MLM corruption of ``input_ids`` ``(B, L)``: the corrupted ids and the labels
        (original ids at the chosen positions, -100 elsewhere)."""
        cfg = self.config
        candidates = token_candidates(input_ids, real, batch.get("special_tokens_mask"), self.special_ids)  # (B, L)
        chosen = choose_tokens(cfg, candidates, batch.get("word_ids"))
        return corrupt_tokens(
            input_ids, chosen, cfg.mask_token_id, cfg.vocab_size, cfg.replace_prob, cfg.random_prob
        )

    # --- optimizer metadata ---------------------------------------------------------------
    def no_weight_decay(self) -> set[str]:
        """:meth:`Task.no_weight_decay` plus the text position and modality embeddings (as the
        ViT's position embedding and the text backbone's)."""
        return super().no_weight_decay() | {"text_embed.pos_embed.weight", "modality_embed.weight"}

    def layer_id(self, name: str) -> int:
        """The backbone's ids; text and modality embeddings are embeddings (0); the pooler and
        heads take the top id."""
        if name.startswith(("text_embed.", "modality_embed.")):
            return 0
        return super().layer_id(name)


# --- ITM negatives ----------------------------------------------------------------------------


def itm_negatives(
    batch_size: int,
    neg_ratio: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which pairs of a batch become ITM negatives, and whose image each would take.

    Returns:
        ``negative`` ``(B,)`` bool: ``round(neg_ratio * B)`` pairs chosen uniformly (none when
        ``B < 2``); ``partner`` ``(B,)`` int64: a random derangement of ``0..B-1``
        (``partner[i] != i``; one cycle through the batch in random order, so each row's
        partner is uniform over the other rows). Draws from ``generator`` (global RNG when None).
    """
    draw_on = generator.device if generator is not None else device
    own = torch.arange(batch_size, device=draw_on)
    if batch_size < 2:
        return torch.zeros(batch_size, dtype=torch.bool, device=draw_on), own
    k = int(round(neg_ratio * batch_size))
    negative = torch.zeros(batch_size, dtype=torch.bool, device=draw_on)
    negative[torch.randperm(batch_size, generator=generator, device=draw_on)[:k]] = True
    cycle = torch.randperm(batch_size, generator=generator, device=draw_on)
    partner = torch.empty_like(own)
    partner[cycle] = cycle.roll(-1)  # cycle[i] takes the image of cycle[i + 1]
    if device is not None:
        negative, partner = negative.to(device), partner.to(device)
    return negative, partner


# --- helpers ---------------------------------------------------------------------------------


def _real_tokens(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``(B, L)`` bool: True for real tokens (all when there is no ``attention_mask``)."""
    if attention_mask is None:
        return torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask of shape {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}"
        )
    return attention_mask.bool()


def _check_config(config: ViLTConfig) -> None:
    if config.vocab_size is None or config.vocab_size < 1:
        raise ValueError(
            f"ViLTConfig.vocab_size must be set to the tokenizer's vocabulary size, got {config.vocab_size} "
            "(a pretrain run sets it from its tokenizer)"
        )
    if config.mask_token_id is None:
        raise ValueError("ViLTConfig.mask_token_id must be set to the tokenizer's mask id (MLM replaces tokens by it)")
    for field in ("pad_token_id", "mask_token_id"):
        if not 0 <= getattr(config, field) < config.vocab_size:
            raise ValueError(
                f"ViLTConfig.{field} {getattr(config, field)} is outside the vocabulary of {config.vocab_size}"
            )
    if config.max_text_len < 1:
        raise ValueError(f"ViLTConfig.max_text_len must be >= 1, got {config.max_text_len}")
    if config.itm_negatives not in ITM_NEGATIVES:
        raise ValueError(f"ViLTConfig.itm_negatives must be one of {ITM_NEGATIVES}, got {config.itm_negatives!r}")
    if not 0.0 <= config.itm_neg_ratio <= 1.0:
        raise ValueError(f"ViLTConfig.itm_neg_ratio must be in [0, 1], got {config.itm_neg_ratio}")
    check_corruption(config)
    if config.itm_weight < 0 or config.mlm_weight < 0:
        raise ValueError(f"ViLTConfig loss weights must be >= 0, got itm {config.itm_weight}, mlm {config.mlm_weight}")
