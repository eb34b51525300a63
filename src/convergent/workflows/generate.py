"""``convergent generate``: continue prompts with the causal language model of a finished
(or interrupted) ``convergent pretrain --task.name causal-lm`` run, or draw images for a
caption from a ``text-to-image`` run (optionally re-ranked by a CLIP run, as DALL-E re-ranked
its samples with CLIP).

The run directory holds everything: ``config.yaml`` (task and backbone), ``tokenizer/`` and
the newest checkpoint (backbone *and* head weights; a text-to-image run's image tokenizer too).
"""

from typing import Any

import torch
import torch.nn.functional as F

from convergent.data.transforms import denormalize
from convergent.evaluation.r_precision import clip_image_embeddings
from convergent.generation import generate


def generate_text(task: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 30, temperature: float = 1.0,
                  top_k: int | None = None, greedy: bool = False, seed: int = 0, num: int = 1) -> list[str]:  # fmt: skip
    """``num`` continuations of ``prompt`` (decoded, special tokens dropped), prompt included."""
    ids = tokenizer.encode(prompt)
    if ids and ids[-1] == tokenizer.eos_id:  # the post-processor closes a sequence; we continue it
        ids = ids[:-1]
    prompt_ids = torch.tensor([ids] * num, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    out = generate(task, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k, greedy=greedy,
                   eos_id=tokenizer.eos_id, generator=g)  # fmt: skip
    return [tokenizer.decode(row.tolist()) for row in out]


def caption_ids(tokenizer: Any, text: str, num: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(num, L)`` ids and attention mask of ``text`` as a run's collate makes them (the
    tokenizer's special tokens); the empty text gives no real token. A text longer than
    ``max_length`` tokens (the model's text context) is refused, not cut."""
    ids = tokenizer.encode(text) if text else []
    if len(ids) > max_length:
        raise ValueError(f"the prompt is {len(ids)} tokens long; this model's text context is {max_length} "
                         "(data.max_length of its run): shorten it")  # fmt: skip
    if not ids:
        return torch.zeros(num, 1, dtype=torch.long), torch.zeros(num, 1, dtype=torch.long)
    row = torch.tensor(ids, dtype=torch.long)
    return row.expand(num, -1).clone(), torch.ones(num, len(ids), dtype=torch.long)


@torch.no_grad()
def generate_images(task: Any, tokenizer: Any, cfg: Any, prompt: str, num: int = 8, temperature: float = 1.0,
                    top_k: int | None = None, seed: int = 0, clip: tuple | None = None,
                    candidates: int | None = None) -> tuple[torch.Tensor, list[float] | None]:  # fmt: skip
    """``num`` images ``(num, C, H, W)`` in [0, 1] for ``prompt`` from a text-to-image ``task``
    (its run's ``tokenizer`` and config ``cfg``). With ``clip`` = ``(clip_task, clip_tokenizer,
    clip_cfg)``, ``candidates`` (default ``4 * num``) are drawn and the ``num`` whose CLIP image
    embedding is closest to the prompt's are kept, best first, with their cosine scores."""
    drawn = max(candidates or 4 * num, num) if clip is not None else num
    ids, mask = caption_ids(tokenizer, prompt, drawn, cfg.data.max_length)
    g = torch.Generator().manual_seed(seed)
    codes = task.sample(ids, mask, temperature=temperature, top_k=top_k, generator=g)  # (N, h, w)
    images = denormalize(task.tokenizer.decode(codes).float(), cfg.data)  # (N, C, H, W) in [0, 1]
    if clip is None:
        return images, None
    clip_task, clip_tokenizer, clip_cfg = clip
    if not prompt:
        raise ValueError("re-ranking compares the images with the prompt: give a --prompt")
    text_ids, text_mask = caption_ids(clip_tokenizer, prompt, 1, clip_cfg.data.max_length)
    image_emb = F.normalize(clip_image_embeddings(clip_task, clip_cfg, images), dim=-1)  # (N, E)
    text_emb = F.normalize(clip_task.encode_text(text_ids, attention_mask=text_mask), dim=-1)  # (1, E)
    scores = (image_emb @ text_emb.T).squeeze(1)  # (N,)
    best = scores.argsort(descending=True)[:num]
    return images[best], scores[best].tolist()
