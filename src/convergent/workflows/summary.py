"""End of a pre-training run: save the encoder, draw the loss, evaluate, write the summary."""

import json
from pathlib import Path
from typing import Any

SUMMARY = "summary.json"


def finish_run(cfg: Any, trainer, task, train_set, test_set, run_dir: Path, train_summary: dict,
               tokenizer: Any = None) -> dict:  # fmt: skip
    """Rank 0: save ``encoder/`` (with the tokenizer of a text run), ``loss.png``, evaluation
    (probes; language-model metrics for text) and ``summary.json``; print it."""
    import time

    from convergent.evaluation.report import format_report
    from convergent.workflows.evaluate import evaluate_encoder
    from convergent.workflows.pictures import save_loss_plot
    from convergent.workflows.text import language_metrics

    fabric = getattr(trainer, "fabric", None)
    if fabric is not None and fabric.global_rank != 0:
        return train_summary
    backbone = task.backbone
    backbone.save_pretrained(run_dir / "encoder")
    if tokenizer is not None:
        tokenizer.save(run_dir / "encoder")
    save_loss_plot(run_dir / "metrics.jsonl", run_dir / "loss.png", f"{cfg.task.name} / {cfg.model.backbone}")
    t = time.perf_counter()
    results = evaluate_encoder(cfg, backbone, train_set, test_set)
    results.update(language_metrics(cfg, task, tokenizer))
    if results:
        results["eval_wall_s"] = round(time.perf_counter() - t, 1)
    summary = {
        "task": cfg.task.name,
        "backbone": cfg.model.backbone,
        "data": train_set.source,
        **train_summary,
        **results,
        "encoder": str(run_dir / "encoder"),
    }
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(format_report(summary))
    return summary
