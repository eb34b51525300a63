"""End-to-end fine-tuning: wrap a (pre-trained) backbone in the :class:`Classify` task, train
all of it with the project's :class:`~convergent.training.loop.Trainer` (AdamW, cosine
schedule, layer-wise lr decay from ``OptimConfig.layer_decay`` through ``task.layer_id``), then
measure top-1 accuracy on a held-out set. Images or text: batches come from the dataset's
``collate_fn`` when it has one (text), and the transforms apply to ``batch["image"]`` only.
"""

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from convergent.config import OptimConfig, TrainerConfig
from convergent.evaluation.features import Transform, collate_for, evaluating, prepare_batch
from convergent.tasks.classify import Classify
from convergent.tasks.configs import ClassifyConfig
from convergent.training.loop import Trainer


def evaluate_classifier(task: Classify, dataset, transform: Transform | None, batch_size: int = 256,
                        num_workers: int = 0) -> float:
    """Top-1 accuracy in [0, 1] of ``task.predict`` over ``dataset`` (items ``{"image": uint8
    (C, H, W), "label": int}``, or a dataset with a ``collate_fn`` giving labelled dict batches,
    e.g. text), on the task's device, in eval mode (the previous mode is restored). Images are
    transformed with ``transform(images, None)``; ``transform`` may be None for text."""
    param = next(task.parameters())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_for(dataset))
    correct = total = 0
    with evaluating(task):
        for batch in loader:
            logits = task.predict(prepare_batch(batch, transform, param.device, param.dtype))  # (B, K)
            preds = logits.argmax(dim=-1)  # (B,)
            correct += (preds.cpu() == batch["label"]).sum().item()
            total += len(preds)
    if total == 0:
        raise ValueError("evaluate_classifier got an empty dataset")
    return correct / total


def finetune(
    backbone: torch.nn.Module,
    train_set,
    test_set,
    transform_train: Transform | None,
    transform_eval: Transform | None,
    num_classes: int,
    trainer_cfg: TrainerConfig,
    optim_cfg: OptimConfig,
    run_dir: str | Path,
    batch_size: int,
    num_workers: int = 0,
    task_cfg: ClassifyConfig | None = None,
    resume: bool = False,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Fine-tune ``backbone`` on ``train_set`` and report ``{"test_acc": float, "train_summary":
    what Trainer.fit returned}``.

    Args:
        backbone: any registered backbone (ViT, Swin, text), trained in place.
        train_set, test_set: map-style labelled datasets: ``{"image": uint8 (C, H, W), "label":
            int}`` items, or text datasets whose ``collate_fn`` gives ``input_ids``,
            ``attention_mask`` and ``label``.
        transform_train: ``transform(images, generator)`` with augmentation (the Trainer seeds
            it); None for text.
        transform_eval: deterministic transform, called with ``generator=None``; None for text.
        num_classes: classes of the head (overrides ``task_cfg.num_classes``).
        trainer_cfg, optim_cfg: the run's steps/devices/precision and optimizer/schedule;
            ``optim_cfg.layer_decay`` (e.g. 0.75) gives layer-wise lr decay.
        run_dir: where the Trainer writes checkpoints and metrics.
        batch_size: global training batch size (also used for evaluation).
        num_workers: DataLoader workers.
        task_cfg: pooling, label smoothing, head dropout/init (None: ``ClassifyConfig`` defaults).
        resume, callbacks: passed to ``Trainer.fit``.
    """
    cfg = dataclasses.replace(task_cfg or ClassifyConfig(), num_classes=num_classes)
    # the Trainer launches processes and seeds them: a head built after it starts identical everywhere
    trainer = Trainer(trainer_cfg, optim_cfg, Path(run_dir), batch_size=batch_size, num_workers=num_workers)
    task = Classify(backbone, cfg)
    summary = trainer.fit(task, train_set, transform=transform_train, resume=resume, callbacks=callbacks)
    acc = evaluate_classifier(task, test_set, transform_eval, batch_size, num_workers)
    return {"test_acc": acc, "train_summary": summary}
