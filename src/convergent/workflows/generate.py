"""``convergent generate``: continue prompts with the causal language model of a finished
(or interrupted) ``convergent pretrain --task.name causal-lm`` run.

The run directory holds everything: ``config.yaml`` (task and backbone), ``tokenizer/`` and
the newest checkpoint (backbone *and* LM head weights).
"""

from pathlib import Path
from typing import Any


def load_task_from_run(run_dir: str | Path) -> tuple[Any, Any]:
    """``(task, tokenizer)`` of a pre-training run, with the weights of its newest checkpoint
    (eval mode, CPU)."""
    from convergent.config import task_field
    from convergent.tasks.registry import build_task
    from convergent.training.checkpoint import checkpoints_dir, load_latest
    from convergent.workflows.pretrain import build_encoder, resume_config
    from convergent.workflows.text import load_run_tokenizer

    run_dir = Path(run_dir)
    cfg = resume_config(run_dir)
    tokenizer = load_run_tokenizer(run_dir, cfg)
    ck = load_latest(run_dir, clean=False)
    if ck is None:
        raise FileNotFoundError(f"{checkpoints_dir(run_dir)}: no complete checkpoint to load")
    cfg.model.init = None  # the checkpoint holds every weight; the architecture is the run's
    backbone = build_encoder(cfg, tokenizer, causal=cfg.task.name == "causal-lm")
    task = build_task(cfg.task.name, backbone, getattr(cfg.task, task_field(cfg.task.name)))
    task.load_state_dict(ck.weights, strict=True)
    return task.eval(), tokenizer


def generate_text(task: Any, tokenizer: Any, prompt: str, max_new_tokens: int = 30, temperature: float = 1.0,
                  top_k: int | None = None, greedy: bool = False, seed: int = 0, num: int = 1) -> list[str]:  # fmt: skip
    """``num`` continuations of ``prompt`` (decoded, special tokens dropped), prompt included."""
    import torch

    from convergent.generation import generate

    ids = tokenizer.encode(prompt)
    if ids and ids[-1] == tokenizer.eos_id:  # the post-processor closes a sequence; we continue it
        ids = ids[:-1]
    prompt_ids = torch.tensor([ids] * num, dtype=torch.long)
    g = torch.Generator().manual_seed(seed)
    out = generate(task, prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k, greedy=greedy,
                   eos_id=tokenizer.eos_id, generator=g)  # fmt: skip
    return [tokenizer.decode(row.tolist()) for row in out]
