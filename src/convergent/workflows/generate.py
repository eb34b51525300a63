"""``convergent generate``: continue prompts with the causal language model of a finished
(or interrupted) ``convergent pretrain --task.name causal-lm`` run.

The run directory holds everything: ``config.yaml`` (task and backbone), ``tokenizer/`` and
the newest checkpoint (backbone *and* LM head weights).
"""

from typing import Any

import torch

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
