"""A finished (or interrupted) pre-training run, loaded back: its task with the newest
checkpoint's weights and its tokenizer (``convergent generate``, ``convergent eval
zero-shot`` / ``retrieval``)."""

from pathlib import Path
from typing import Any


def load_task_from_run(run_dir: str | Path) -> tuple[Any, Any]:
    """``(task, tokenizer)`` of a pre-training run, with the weights of its newest checkpoint
    (eval mode, CPU); the tokenizer is None for runs without text."""
    from convergent.training.checkpoint import checkpoints_dir, load_latest
    from convergent.workflows.pretrain import build_run_task, resume_config
    from convergent.workflows.text import TOKENIZER_DIR, load_run_tokenizer

    run_dir = Path(run_dir)
    cfg = resume_config(run_dir)
    has_text = (run_dir / TOKENIZER_DIR).is_dir() or bool(cfg.data.tokenizer)
    tokenizer = load_run_tokenizer(run_dir, cfg) if has_text else None
    ck = load_latest(run_dir, clean=False)
    if ck is None:
        raise FileNotFoundError(f"{checkpoints_dir(run_dir)}: no complete checkpoint to load")
    # the architecture is the run's (its saved encoder when finished); the checkpoint holds every weight
    cfg.model.init = str(run_dir / "encoder") if (run_dir / "encoder" / "config.json").is_file() else None
    task = build_run_task(cfg, tokenizer)
    task.load_state_dict(ck.weights, strict=True)
    return task.eval(), tokenizer
