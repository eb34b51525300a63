"""Image-to-text: an encoder-decoder captioner.

* encoder: the task's image backbone; its final tokens (prefix tokens included) are the states
  the decoder attends over, linearly projected to the decoder's width when the widths differ
  (HF ``VisionEncoderDecoderModel``'s ``enc_to_dec_proj``);
* decoder: a text backbone built causal and with ``cross_attention`` (HF ``BertLMHeadModel`` with
  ``add_cross_attention``, proven equal by ``tests/converters/test_hf_bert.py``) and an
  :class:`~convergent.heads.lm_head.LMHead` tied to its word embeddings;
* training: teacher forcing, position ``t`` of the caption (``cls pieces sep``) predicts token
  ``t + 1`` where both are real — the loss of ``BertLMHeadModel(labels=...)``;
* decoding: from the start token, greedy (``beam_size`` 1) or beam search (log-probabilities
  summed, finished beams ranked by their mean log-probability per token), until the end token
  or ``max_new_tokens``.
"""

import torch
from torch import nn

from convergent.backbones.registry import build_backbone
from convergent.heads.lm_head import LMHead
from convergent.layers.attention import KVCache
from convergent.layers.linear import Linear
from convergent.losses.language import IGNORE_INDEX, token_cross_entropy
from convergent.tasks.base import Task, configure_text_tower
from convergent.tasks.configs import CaptionConfig


class Caption(Task):
    """Captioning around an image backbone.

    ``forward(batch)`` reads ``batch["image"]`` ``(B, C, H, W)``, ``batch["input_ids"]`` and
    ``batch["attention_mask"]`` ``(B, L)`` (one caption per image, right-padded); returns
    ``{"loss", "accuracy", "num_predictions"}``.
    """

    name = "caption"
    batch_keys = ("image", "input_ids", "attention_mask")
    modality = "image"

    @classmethod
    def configure_text(cls, config: CaptionConfig, vocab: dict) -> None:
        """The decoder takes the tokenizer's vocabulary and ids; explicit ``text_overrides`` win."""
        configure_text_tower(config, vocab)

    def __init__(self, backbone: nn.Module, config: CaptionConfig):
        super().__init__(backbone, config)
        if config.beam_size < 1 or config.max_new_tokens < 1:
            raise ValueError(f"beam_size and max_new_tokens must be >= 1, got {config.beam_size}, {config.max_new_tokens}")
        decoder = build_backbone(config.text_backbone, **{**config.text_overrides, "causal": True, "cross_attention": True})
        if decoder.modality != "text":
            raise ValueError(f"the caption decoder must be a text backbone, got {config.text_backbone!r}")
        self.decoder = decoder
        width = decoder.num_features
        self.proj = Linear(backbone.num_features, width) if backbone.num_features != width else nn.Identity()
        self.head = LMHead(width, decoder.vocab_size, decoder.act, decoder.norm_eps)

    def states(self, images: torch.Tensor) -> torch.Tensor:
        """The decoder's cross-attention states ``(B, N, C_dec)`` of images ``(B, C, H, W)``."""
        return self.proj(self.backbone.forward_features(images))

    def logits(self, input_ids: torch.Tensor, states: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """Next-token logits ``(B, L, V)`` of captions ``(B, L)`` given image states."""
        tokens, _ = self.decoder.forward_intermediates(input_ids, indices=[], attention_mask=attention_mask,
                                                       states=states)  # fmt: skip
        return self.head(tokens, self.decoder.word_embeddings.weight)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, real = batch["input_ids"], batch["attention_mask"].bool()
        logits = self.logits(ids, self.states(batch["image"]), batch["attention_mask"])[:, :-1]
        targets = ids[:, 1:].masked_fill(~(real[:, 1:] & real[:, :-1]), IGNORE_INDEX)
        loss, accuracy, count = token_cross_entropy(logits, targets, self.config.label_smoothing)
        return {"loss": loss, "accuracy": accuracy, "num_predictions": count}

    @torch.no_grad()
    def generate(self, images: torch.Tensor, bos_id: int, eos_id: int, beam_size: int | None = None,
                 max_new_tokens: int | None = None, use_cache: bool = True) -> list[list[int]]:  # fmt: skip
        """Token ids of one caption per image (start token first, end token last when reached).
        ``use_cache``: the decoder keeps the keys and values of each beam (:class:`KVCache`,
        reordered as the beams are); False reruns the whole caption each step (the same result)."""
        beam_size = beam_size or self.config.beam_size
        max_new = max_new_tokens or self.config.max_new_tokens
        if beam_size < 1 or max_new < 1:
            raise ValueError(f"beam_size and max_new_tokens must be >= 1, got {beam_size}, {max_new}")
        max_new = min(max_new, self.decoder.max_length - 1)
        states = self.states(images)  # (B, N, C)
        return [self._beam_search(s[None], bos_id, eos_id, beam_size, max_new, use_cache) for s in states]

    def _next_logprobs(self, seqs: torch.Tensor, states: torch.Tensor, cache: KVCache | None) -> torch.Tensor:
        """Log-probabilities ``(beams, V)`` of the token after each row of ``seqs``; with ``cache``
        only the last token of each row is new."""
        states = states.expand(len(seqs), -1, -1)
        if cache is None:
            return self.logits(seqs, states)[:, -1].float().log_softmax(-1)
        t = seqs.shape[1] - 1
        x = self.decoder.embed(seqs[:, -1:], position_ids=torch.tensor([t], device=seqs.device))
        h = self.decoder.forward_tokens(x, states=states, cache=cache)[0][:, -1]
        return self.head(h, self.decoder.word_embeddings.weight).float().log_softmax(-1)

    def _beam_search(self, states: torch.Tensor, bos: int, eos: int, k: int, max_new: int,
                     use_cache: bool) -> list[int]:  # fmt: skip
        """One image's best caption: ``k`` beams (``k = 1``: greedy)."""
        seqs = torch.full((1, 1), bos, dtype=torch.long, device=states.device)  # (beams, t)
        scores = torch.zeros(1, device=states.device)  # summed log-probabilities
        cache = KVCache(len(self.decoder.blocks)) if use_cache else None
        finished: list[tuple[float, list[int]]] = []
        for _ in range(max_new):
            logp = self._next_logprobs(seqs, states, cache)  # (beams, V)
            total = (scores[:, None] + logp).flatten()  # (beams * V,)
            top, idx = total.topk(min(k, total.numel()))
            beam, token = idx // logp.shape[1], idx % logp.shape[1]
            seqs, scores = torch.cat([seqs[beam], token[:, None]], dim=1), top
            done = token == eos
            for s, sc in zip(seqs[done], scores[done]):
                finished.append((sc.item() / (s.shape[0] - 1), s.tolist()))
            keep = (~done).nonzero().flatten()
            seqs, scores = seqs[keep], scores[keep]
            if cache is not None:
                cache.reorder(beam[keep])
            if len(finished) >= k or len(seqs) == 0:
                break
        for s, sc in zip(seqs, scores):  # unfinished beams compete by the same mean
            finished.append((sc.item() / (s.shape[0] - 1), s.tolist()))
        return max(finished, key=lambda f: f[0])[1]
