"""Sampling text (token ids) from a causal language model.

    task = build_task("causal-lm", build_backbone("bert_tiny", causal=True))
    ids = generate(task, prompt_ids, max_new_tokens=20, top_k=40)

Tokenizer-free: ids in, ids out. The model is anything with
``next_token_logits(ids (B, L)) -> (B, V)`` and ``max_length`` (a
:class:`~convergent.tasks.causal_lm.CausalLM` task). There is no key/value cache: every step
runs the whole sequence again (``O(n²)`` blocks for ``n`` new tokens), which is fine for the
short sequences of a learned-position BERT-style model (at most ``max_length`` tokens, where
generation stops). Torch only.
"""

from typing import Any

import torch


@torch.no_grad()
def generate(
    task_or_model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    greedy: bool = False,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    pad_id: int | None = None,
) -> torch.Tensor:
    """Continue ``input_ids`` by up to ``max_new_tokens`` tokens.

    Args:
        task_or_model: a causal LM task, or any model with its ``next_token_logits`` and
            ``max_length`` (see the module docstring); run in eval mode here and put back in
            its previous mode afterwards.
        input_ids: prompt ids ``(L,)`` or ``(B, L)`` of equal-length, unpadded prompts.
        max_new_tokens: tokens to add at the most.
        temperature: logits are divided by it before sampling (> 0; ignored when ``greedy``).
        top_k: sample only among the ``top_k`` most likely tokens (None: all; 1: greedy).
        greedy: take the most likely token (argmax) instead of sampling.
        eos_id: a row that produces it is finished; generation ends when all rows are.
        generator: RNG for sampling (global RNG when None).
        pad_id: what finished rows get after their ``eos_id`` (default: the model's
            ``pad_token_id``, else ``eos_id``).

    Returns:
        ``(L + n,)`` or ``(B, L + n)`` ids, prompt first; ``n < max_new_tokens`` when every row
        has produced ``eos_id`` or the sequence reached ``model.max_length``.

    Raises:
        ValueError: a prompt that leaves no room below ``model.max_length`` (the model has no
            position for another token), an empty prompt, or bad sampling settings.
    """
    model = task_or_model
    ids = input_ids[None] if input_ids.ndim == 1 else input_ids
    _check_args(model, ids, max_new_tokens, temperature, top_k)
    steps = max_new_tokens
    max_length = getattr(model, "max_length", None)
    if max_length is not None:
        steps = min(steps, max_length - ids.shape[1])
    pad = pad_id if pad_id is not None else getattr(model, "pad_token_id", eos_id)
    finished = torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    try:
        for _ in range(steps):
            logits = model.next_token_logits(ids)  # (B, V)
            nxt = pick_next(logits, temperature, top_k, greedy, generator).to(ids)  # (B,)
            if eos_id is not None:
                nxt = nxt.masked_fill(finished, pad)
                finished |= nxt == eos_id
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            if eos_id is not None and bool(finished.all()):
                break
    finally:
        if was_training:
            model.train()
    return ids[0] if input_ids.ndim == 1 else ids


def pick_next(
    logits: torch.Tensor, temperature: float, top_k: int | None, greedy: bool, generator: torch.Generator | None
) -> torch.Tensor:
    """Next ids ``(B,)`` from logits ``(B, V)``: argmax (``greedy``), or a draw from the softmax of
    ``logits / temperature`` restricted to the ``top_k`` most likely (every sampler here uses it)."""
    if greedy:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1) the k-th largest
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_sampling(temperature: float, top_k: int | None) -> None:
    """Sampling settings :func:`pick_next` takes: ``temperature > 0``, ``top_k`` None or >= 1."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature} (use greedy=True for argmax decoding)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1 or None, got {top_k}")


def _check_args(model: Any, ids: torch.Tensor, max_new_tokens: int, temperature: float, top_k: int | None) -> None:
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"input_ids must be a non-empty (L,) or (B, L) tensor of ids, got shape {tuple(ids.shape)}")
    if ids.is_floating_point():
        raise ValueError(f"input_ids must be integer token ids, got {ids.dtype}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_sampling(temperature, top_k)
    max_length = getattr(model, "max_length", None)
    if max_length is not None and max_new_tokens > 0 and ids.shape[1] >= max_length:
        raise ValueError(
            f"the prompt has {ids.shape[1]} tokens, but the model takes at most max_length={max_length}; "
            f"shorten it to at most {max_length - 1} tokens to leave room for new ones"
        )
    if not callable(getattr(model, "next_token_logits", None)):
        raise TypeError(f"{type(model).__name__} has no next_token_logits(ids); pass a causal-lm task")
