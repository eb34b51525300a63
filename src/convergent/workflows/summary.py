"""End of a pre-training run: save the encoder, draw the loss, evaluate, write the summary."""

import json
import time
from typing import Any

from convergent.config import PretrainConfig
from convergent.data.protocol import Dataset
from convergent.evaluation.report import format_report
from convergent.rundir import RunDir
from convergent.tasks.base import Task
from convergent.training.loop import Trainer
from convergent.workflows.evaluate import evaluate_end_of_run
from convergent.workflows.pictures import save_loss_plot


def finish_run(cfg: PretrainConfig, trainer: Trainer, task: Task, train_set: Dataset, test_set: Dataset | None,
               run: RunDir, train_summary: dict, tokenizer: Any = None) -> dict:  # fmt: skip
    """Rank 0: save ``encoder/`` (with the tokenizer of a text run), ``loss.png``, the default
    evaluation (:func:`~convergent.workflows.evaluate.evaluate_end_of_run`) and
    ``summary.json``; print it."""
    if trainer.fabric.global_rank != 0:
        return train_summary
    backbone = task.backbone
    backbone.save_pretrained(run.encoder)
    if tokenizer is not None:
        tokenizer.save(run.encoder)
    save_loss_plot(run.metrics, run.loss_plot, f"{cfg.task.name} / {cfg.model.backbone}")
    t = time.perf_counter()
    results = evaluate_end_of_run(cfg, task, tokenizer, train_set, test_set)
    if results:
        results["eval_wall_s"] = round(time.perf_counter() - t, 1)
    summary = {
        "task": cfg.task.name,
        "backbone": cfg.model.backbone,
        "data": train_set.source,
        **train_summary,
        **results,
        "encoder": str(run.encoder),
    }
    run.summary.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(format_report(summary))
    return summary
