"""Text-to-image (Ramesh et al., 2021, DALL-E): one causal Transformer models the sequence
``[caption tokens ; image codes]``.

* caption: the run's tokenizer ids, right-padded with the pad id to ``text_length`` tokens (the
  pads are tokens like any other, as DALL-E's per-position pads: the image always starts at the
  same position), embedded by the text backbone (word + position embeddings);
* image: the ``h x w`` code ids of a frozen image tokenizer (:class:`~convergent.tasks.vqvae.VQVAE`,
  a ``vqvae`` run), row-major, each embedded by its own table plus a learned row and column
  embedding;
* the text backbone's blocks (causal) run over both (``forward_tokens``); position ``t`` predicts
  token ``t + 1``: caption tokens through the LM head tied to the word embeddings (real tokens
  only), image codes through their own linear head — the last caption position predicts the
  first code. Loss ``w * CE_text + (1 - w) * CE_image`` (DALL-E: w = 1/8).

:meth:`TextToImage.sample` draws the codes of new images for captions (temperature, top-k) and
decodes them with the tokenizer. With ``caption_dropout`` 1.0 the captions are always empty: an
unconditional model of visual tokens (iGPT's setting), sampled from the empty prompt.
"""

import torch
import torch.nn.functional as F
from torch import nn

from convergent.generation import check_sampling, pick_next
from convergent.layers.attention import KVCache
from convergent.losses.language import IGNORE_INDEX, token_cross_entropy
from convergent.tasks.configs import TextToImageConfig
from convergent.tasks.mlm import TiedLMTask
from convergent.tasks.vqvae import VQVAE


class TextToImage(TiedLMTask):
    """DALL-E's transformer around a causal text backbone, with a frozen image ``tokenizer``.

    ``forward(batch)`` reads ``batch["input_ids"]`` / ``batch["attention_mask"]`` ``(B, L)``
    (``L <= text_length``) and ``batch["image"]`` ``(B, C, H, W)`` (or ``batch["image_ids"]``
    ``(B, h, w)``: the codes themselves). Returns ``{"loss", "text_loss", "image_loss",
    "image_accuracy"}``.
    """

    name = "text-to-image"
    batch_keys = ("image", "input_ids", "attention_mask")
    optional_batch_keys = ("image_ids",)
    requires = ("supports_causal", "supports_joint_tokens")

    def __init__(self, backbone: nn.Module, config: TextToImageConfig, tokenizer: VQVAE):
        super().__init__(backbone, config)
        if not backbone.is_causal:
            raise ValueError("task 'text-to-image' needs a text backbone built with causal=True")
        if not 0.0 <= config.text_loss_weight <= 1.0 or not 0.0 <= config.caption_dropout <= 1.0:
            raise ValueError(f"text_loss_weight and caption_dropout must be in [0, 1], got "
                             f"{config.text_loss_weight} and {config.caption_dropout}")  # fmt: skip
        self.text_length = config.text_length or backbone.max_length
        if self.text_length > backbone.max_length:
            raise ValueError(f"text_length {self.text_length} exceeds the backbone's {backbone.max_length} positions")
        tokenizer.eval()
        tokenizer.requires_grad_(False)
        self.tokenizer = tokenizer  # part of the state dict, as BEiT's
        side = tokenizer.backbone.image_size // tokenizer.stride
        self.grid = (side, side)
        dim = backbone.num_features
        self.code_embed = nn.Embedding(tokenizer.num_codes, dim)
        self.row_embed = nn.Parameter(torch.zeros(side, dim))
        self.col_embed = nn.Parameter(torch.zeros(side, dim))
        self.image_head = nn.Linear(dim, tokenizer.num_codes)
        for w in (self.code_embed.weight, self.row_embed, self.col_embed, self.image_head.weight):
            nn.init.normal_(w, std=0.02)
        nn.init.zeros_(self.image_head.bias)

    @classmethod
    def configure_text(cls, config: TextToImageConfig, vocab: dict) -> None:
        """Captions are padded to the run's ``max_length`` unless ``text_length`` says otherwise."""
        if config.text_length is None:
            config.text_length = vocab["max_length"]

    @property
    def num_image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def padded_captions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple:
        """``(B, text_length)`` ids right-padded with the pad id, and which of them are real."""
        b, n = input_ids.shape
        if n > self.text_length:
            raise ValueError(f"captions of {n} tokens exceed text_length {self.text_length}")
        real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        pad = self.text_length - n
        ids = F.pad(input_ids.masked_fill(~real, self.backbone.pad_token_id), (0, pad), value=self.backbone.pad_token_id)
        return ids, F.pad(real, (0, pad), value=False)

    def embed_codes(self, codes: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Code ids ``(B, n)`` at grid positions ``start .. start + n - 1`` (row-major) → ``(B, n, C)``."""
        n = codes.shape[1]
        pos = (self.row_embed[:, None, :] + self.col_embed[None, :, :]).flatten(0, 1)[start : start + n]  # (n, C)
        return self.code_embed(codes) + pos

    def hidden(self, ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Final tokens ``(B, text_length + n, C)`` of ``[caption ; codes]``."""
        x = torch.cat([self.backbone.embed(ids), self.embed_codes(codes)], dim=1)
        return self.backbone.forward_tokens(x)[0]

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        ids, real = self.padded_captions(batch["input_ids"], batch.get("attention_mask"))
        if self.training and self.config.caption_dropout > 0:
            drop = torch.rand(ids.shape[0], device=ids.device) < self.config.caption_dropout  # (B,)
            ids = ids.masked_fill(drop[:, None], self.backbone.pad_token_id)
            real = real & ~drop[:, None]
        codes = batch.get("image_ids")
        if codes is None:
            codes = self.tokenizer.encode(batch["image"])  # (B, h, w), no grad
        if tuple(codes.shape[1:]) != self.grid:
            raise ValueError(f"the image codes form a {tuple(codes.shape[1:])} grid, the task's is {self.grid}")
        codes = codes.flatten(1)  # (B, n)
        h = self.hidden(ids, codes)  # (B, T + n, C)
        t = self.text_length
        text_targets = ids[:, 1:].masked_fill(~(real[:, 1:] & real[:, :-1]), IGNORE_INDEX)  # (B, T-1)
        text_loss, _, _ = token_cross_entropy(self.logits(h[:, : t - 1]), text_targets)
        image_logits = self.image_head(h[:, t - 1 : -1])  # (B, n, K): position t-1+j predicts code j
        image_loss = F.cross_entropy(image_logits.float().flatten(0, 1), codes.flatten())
        w = self.config.text_loss_weight
        loss = w * text_loss + (1 - w) * image_loss  # a batch of empty captions: text_loss 0
        with torch.no_grad():
            accuracy = (image_logits.argmax(-1) == codes).float().mean()
        return {"loss": loss, "text_loss": text_loss.detach(), "image_loss": image_loss.detach(),
                "image_accuracy": accuracy}  # fmt: skip

    @torch.no_grad()
    def sample(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, temperature: float = 1.0,
               top_k: int | None = None, generator: torch.Generator | None = None,
               use_cache: bool = True) -> torch.Tensor:  # fmt: skip
        """Code ids ``(B, h, w)`` drawn one by one for captions ``(B, L)`` (temperature, top-k).
        ``use_cache``: keys and values of the sequence so far are kept (:class:`KVCache`), so each
        step runs one new token; False reruns the whole sequence each step (the same codes)."""
        check_sampling(temperature, top_k)
        ids, _ = self.padded_captions(input_ids, attention_mask)
        codes = ids.new_zeros(ids.shape[0], 0)
        cache = KVCache(len(self.backbone.blocks)) if use_cache else None
        h = self.backbone.forward_tokens(self.backbone.embed(ids), cache=cache)[0][:, -1] if use_cache else None
        for j in range(self.num_image_tokens):
            if not use_cache:
                h = self.hidden(ids, codes)[:, -1]  # (B, C): the last position predicts the next code
            nxt = pick_next(self.image_head(h), temperature, top_k, False, generator)[:, None]  # (B, 1)
            codes = torch.cat([codes, nxt], dim=1)
            if use_cache and j + 1 < self.num_image_tokens:
                h = self.backbone.forward_tokens(self.embed_codes(nxt, start=j), cache=cache)[0][:, -1]
        return codes.view(-1, *self.grid)

    @torch.no_grad()
    def generate_images(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                        temperature: float = 1.0, top_k: int | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
        """Images ``(B, C, H, W)`` (the run's normalised space) drawn for captions ``(B, L)``:
        :meth:`sample`, decoded by the tokenizer."""
        return self.tokenizer.decode(self.sample(input_ids, attention_mask, temperature, top_k, generator))

    def train(self, mode: bool = True) -> "TextToImage":
        """The tokenizer stays in eval mode (its codebook is not updated)."""
        super().train(mode)
        self.tokenizer.eval()
        return self
