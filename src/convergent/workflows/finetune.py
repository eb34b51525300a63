"""``convergent finetune``: a classification head on a (pre-trained or random) backbone,
trained end to end, then top-1 accuracy on the held-out split."""

import json
import time
from pathlib import Path
from typing import Any

import yaml

from convergent.config import to_dict


def run_finetune(cfg: Any) -> dict:
    """Fine-tune per ``cfg`` (a ``FinetuneConfig``); returns the summary (also ``summary.json``)."""
    import dataclasses

    import torch

    from convergent.data.transforms import build_transform
    from convergent.evaluation.finetune import finetune
    from convergent.evaluation.report import format_report
    from convergent.workflows.evaluate import resolve_encoder
    from convergent.workflows.pretrain import build_datasets, build_encoder
    from convergent.workflows.text import prepare_text

    if cfg.model.init:
        enc_dir, _ = resolve_encoder(cfg.model.init)
        cfg.model.init = str(enc_dir)
    name = cfg.trainer.run_name or f"finetune-{'pretrained' if cfg.model.init else 'scratch'}-" + time.strftime(
        "%Y%m%d-%H%M%S"
    )
    run_dir = Path(cfg.trainer.out_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    torch.manual_seed(cfg.trainer.seed)
    train_set, test_set = build_datasets(cfg)
    if test_set is None or not train_set.classes:
        raise ValueError(f"dataset {cfg.data.name!r} needs class labels and a test split to fine-tune on")
    num_classes = len(train_set.classes)
    task_cfg = dataclasses.replace(cfg.classify, num_classes=num_classes)
    tokenizer = prepare_text(cfg, run_dir, train_set, test_set, encoder_dir=cfg.model.init)
    backbone = build_encoder(cfg, tokenizer)
    result = finetune(
        backbone, train_set, test_set, build_transform(cfg.data, train=True), build_transform(cfg.data, train=False),
        num_classes, cfg.trainer, cfg.optim, run_dir, cfg.data.batch_size, cfg.data.num_workers, task_cfg=task_cfg,
    )
    summary = {
        "init": cfg.model.init or "random",
        "backbone": cfg.model.backbone,
        "data": train_set.source,
        "test_acc": result["test_acc"],
        **{k: v for k, v in result.get("train_summary", {}).items() if k != "run_dir"},
        "run_dir": str(run_dir),
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(format_report(summary))
    return summary
