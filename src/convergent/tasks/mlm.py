"""BERT masked language modelling (Devlin et al., 2019): choose 15 % of each sequence's real,
non-special tokens; replace 80 % of those by [MASK], 10 % by a random id and keep 10 %;
predict the original ids at the chosen positions with an LM head tied to the input embedding.

Encoder, head and loss are separate pieces: a text backbone with a ``mask_token_id``
encodes the corrupted ids, :class:`~convergent.heads.lm_head.LMHead` scores the vocabulary,
:func:`~convergent.losses.language.token_cross_entropy` averages over the chosen tokens.
Positions are chosen by :func:`~convergent.masking.token_masking` (an exact count per row,
from the global RNG) and corrupted by :func:`corrupt_tokens`, as HF
``DataCollatorForLanguageModeling`` does (random ids from the full vocabulary).
"""

import warnings

import torch

from convergent.backbones.protocol import TextBackbone, backbone_inputs
from convergent.heads.lm_head import LMHead
from convergent.losses.language import IGNORE_INDEX, token_cross_entropy
from convergent.masking import token_candidates, token_masking, whole_word_masking
from convergent.tasks.base import Task
from convergent.tasks.configs import MLMConfig, TokenMaskingConfig


class TiedLMTask(Task):
    """Base of the text language-model tasks (:class:`MLM`, ``CausalLM``): a text backbone
    and an :class:`~convergent.heads.lm_head.LMHead` (``head``) tied to its word embedding."""

    batch_keys = ("input_ids", "attention_mask")
    modality = "text"

    def __init__(self, backbone: TextBackbone, config):
        super().__init__(backbone, config)
        self.head = LMHead(backbone.num_features, backbone.vocab_size, backbone.act, backbone.norm_eps)

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Backbone tokens ``(..., C)`` → vocabulary logits ``(..., V)`` (head tied to the input embedding)."""
        return self.head(tokens, tied_embedding(self.backbone))


class MLM(TiedLMTask):
    """Masked language modelling around a bidirectional text backbone.

    ``forward(batch)`` reads ``batch["input_ids"]`` ``(B, L)``, ``batch["attention_mask"]``
    ``(B, L)`` (1 = real token) and, if present, ``batch["special_tokens_mask"]`` ``(B, L)``
    bool (never chosen; without it padding, the pad / mask ids and
    ``MLMConfig.special_ids`` are). Two ways to fix the corruption for exact tests:

    * ``batch["mlm_mask"]`` ``(B, L)`` bool: the chosen positions (80/10/10 still drawn);
    * ``batch["labels"]`` ``(B, L)``: HF style, ``input_ids`` already corrupted and the
      original ids at predicted positions, -100 elsewhere; nothing is drawn.

    Returns ``{"loss", "accuracy", "num_predictions"}``; with ``return_outputs=True`` also
    ``"logits"`` ``(B, L, V)``, ``"labels"`` ``(B, L)`` (-100 where not predicted) and the
    corrupted ``"input_ids"``. In training only the chosen positions go through the head,
    which saves the vocabulary projection of the other ~85 % of the tokens.
    """

    name = "mlm"
    requires = ("supports_mask_token",)

    def __init__(self, backbone: TextBackbone, config: MLMConfig):
        super().__init__(backbone, config)
        check_corruption(config)
        if backbone.mask_token_id is None:
            raise ValueError(
                f"task 'mlm' replaces chosen tokens by the backbone's mask_token_id, but {type(backbone).__name__} "
                "was built with mask_token_id=None; set it to your tokenizer's [MASK] id (103 for BERT uncased)"
            )
        if backbone.is_causal:
            raise ValueError(
                "task 'mlm' predicts tokens from both sides, but the backbone was built with causal=True; "
                "use causal=False (or the 'causal-lm' task)"
            )
        self.special_ids = tuple(sorted({backbone.pad_token_id, backbone.mask_token_id, *config.special_ids}))

    def forward(self, batch: dict[str, torch.Tensor], return_outputs: bool = False) -> dict[str, torch.Tensor]:
        input_ids, kwargs = backbone_inputs(self.backbone, batch)  # (B, L)
        if batch.get("labels") is not None:
            labels = batch["labels"]
            if labels.shape != input_ids.shape:
                raise ValueError(f"labels {tuple(labels.shape)} do not match input_ids {tuple(input_ids.shape)}")
        else:
            chosen = batch.get("mlm_mask")
            if chosen is None:
                candidates = token_candidates(
                    input_ids, batch.get("attention_mask"), batch.get("special_tokens_mask"), self.special_ids
                )  # (B, L) real, non-special
                chosen = choose_tokens(self.config, candidates, batch.get("word_ids"))
            elif chosen.shape != input_ids.shape:
                raise ValueError(f"mlm_mask {tuple(chosen.shape)} does not match input_ids {tuple(input_ids.shape)}")
            cfg, bb = self.config, self.backbone
            input_ids, labels = corrupt_tokens(
                input_ids, chosen.bool(), bb.mask_token_id, bb.vocab_size, cfg.replace_prob, cfg.random_prob
            )
        tokens = self.backbone.forward_features(input_ids, **kwargs)  # (B, L, C)
        predicted = labels != IGNORE_INDEX  # (B, L)
        if return_outputs:
            logits = self.logits(tokens)  # (B, L, V)
            picked = logits[predicted]
        else:
            picked = self.logits(tokens[predicted])  # (M, V): the chosen positions only
        loss, accuracy, count = token_cross_entropy(picked, labels[predicted])
        out = {"loss": loss, "accuracy": accuracy, "num_predictions": count}
        if return_outputs:
            out.update(logits=logits, labels=labels, input_ids=input_ids)
        return out


def corrupt_tokens(
    input_ids: torch.Tensor,
    chosen: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of the ``chosen`` ``(B, L)`` positions of ``input_ids`` ``(B, L)``.

    Each chosen token independently becomes ``mask_token_id`` with probability
    ``replace_prob``, a uniform id of ``[0, vocab_size)`` with probability ``random_prob``
    (the full vocabulary, as HF ``DataCollatorForLanguageModeling``), or stays. Draws come
    from ``generator`` (global RNG when None).

    Returns:
        the corrupted ids ``(B, L)`` and the labels ``(B, L)``: the original ids at chosen
        positions, -100 elsewhere.
    """
    replace, randomise, random_ids = bert_corruption(input_ids, chosen, vocab_size, replace_prob, random_prob, generator)
    corrupted = torch.where(replace, mask_token_id, input_ids)
    corrupted = torch.where(randomise, random_ids, corrupted)
    return corrupted, input_ids.masked_fill(~chosen, IGNORE_INDEX)


def bert_corruption(
    input_ids: torch.Tensor,
    chosen: torch.Tensor,
    vocab_size: int,
    replace_prob: float = 0.8,
    random_prob: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The decisions of :func:`corrupt_tokens`, for callers that hide tokens their own way
    (data2vec passes ``replace`` as the backbone's ``mask``): ``replace`` ``(B, L)`` bool (become
    the mask token), ``randomise`` ``(B, L)`` bool (take ``random_ids``) and ``random_ids``
    ``(B, L)`` uniform ids of ``[0, vocab_size)``; chosen positions in neither keep their id."""
    device = generator.device if generator is not None else input_ids.device
    u = torch.rand(input_ids.shape, generator=generator, device=device).to(input_ids.device)  # one draw decides
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator, device=device).to(input_ids)
    replace = chosen & (u < replace_prob)
    randomise = chosen & (u >= replace_prob) & (u < replace_prob + random_prob)
    return replace, randomise, random_ids


def tied_embedding(backbone: TextBackbone) -> torch.Tensor:
    """The word-embedding table ``(V, C)`` of a text backbone, which LM heads share."""
    return backbone.word_embeddings.weight


def choose_tokens(
    config: TokenMaskingConfig, candidates: torch.Tensor, word_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """The positions ``(B, L)`` to predict among ``candidates`` ``(B, L)`` (real, non-special):
    whole words when ``config.whole_word_mask`` and the batch carries ``word_ids`` ``(B, L)``,
    else tokens (with a warning when whole words were asked for)."""
    if config.whole_word_mask and word_ids is None:
        warnings.warn(f"{type(config).__name__}.whole_word_mask is set but batches carry no word_ids: masking tokens")
    if config.whole_word_mask and word_ids is not None:
        if word_ids.shape != candidates.shape:
            raise ValueError(f"word_ids {tuple(word_ids.shape)} do not match input_ids {tuple(candidates.shape)}")
        return whole_word_masking(word_ids, candidates, config.mask_ratio)
    return token_masking(candidates, config.mask_ratio)


def check_corruption(config: TokenMaskingConfig) -> None:
    """Check the BERT corruption fields of a :class:`TokenMaskingConfig` (``mask_ratio``,
    ``replace_prob``, ``random_prob``; MLM's and ViLT's)."""
    name = type(config).__name__
    if not 0.0 < config.mask_ratio <= 1.0:
        raise ValueError(f"{name}.mask_ratio must be in (0, 1], got {config.mask_ratio}")
    if config.replace_prob < 0 or config.random_prob < 0 or config.replace_prob + config.random_prob > 1:
        raise ValueError(
            f"{name}.replace_prob and random_prob must be >= 0 with a sum <= 1, got "
            f"{config.replace_prob} and {config.random_prob}"
        )
