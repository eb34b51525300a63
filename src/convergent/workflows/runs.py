"""A finished (or interrupted) pre-training run, loaded back: its task with the newest
checkpoint's weights and its tokenizer (``convergent generate``, ``convergent eval
zero-shot`` / ``retrieval``)."""

from pathlib import Path
from typing import Any


def load_task_from_run(run_dir: str | Path) -> tuple[Any, Any, Any]:
    """``(task, tokenizer, cfg)`` of a pre-training run: its task with the weights of its newest
    checkpoint (eval mode, CPU), its tokenizer (None for runs without text) and its config."""
    from convergent.training.checkpoint import checkpoints_dir, load_latest
    from convergent.workflows.pretrain import build_run_task, resume_config
    from convergent.workflows.text import find_tokenizer

    run_dir = Path(run_dir)
    cfg = resume_config(run_dir)
    tokenizer = find_tokenizer(cfg, run_dir)
    ck = load_latest(run_dir, clean=False)
    if ck is None:
        raise FileNotFoundError(f"{checkpoints_dir(run_dir)}: no complete checkpoint to load")
    # the architecture is the run's (its saved encoder when finished); the checkpoint holds every weight
    cfg.model.init = str(run_dir / "encoder") if (run_dir / "encoder" / "config.json").is_file() else None
    task = build_run_task(cfg, tokenizer)
    task.load_state_dict(ck.weights, strict=True)
    return task.eval(), tokenizer, cfg
