"""Fine-tuning: evaluation of a classifier, the wiring to the Trainer, and (once the engine
in ``convergent.training.loop`` exists) an end-to-end run on a separable synthetic task."""

import importlib.util

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.config import OptimConfig, TrainerConfig
from convergent.data.protocol import ItemList
from convergent.evaluation import finetune as finetune_module
from convergent.evaluation.finetune import evaluate_classifier, finetune
from convergent.tasks.classify import Classify
from convergent.tasks.configs import ClassifyConfig


def halves(n: int, seed: int) -> list[dict]:
    """Class = which half (left 0 / right 1) of a noisy image is bright; needs spatial features."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = torch.randint(0, 60, (n, 3, 32, 32), generator=g)
    for i, y in enumerate(labels.tolist()):
        images[i, :, :, 16 * y : 16 * y + 16] += 150
    return [{"image": images[i].to(torch.uint8), "label": int(labels[i])} for i in range(n)]


def to_float(images: torch.Tensor, generator=None) -> torch.Tensor:
    return images.float() / 127.5 - 1.0


def test_evaluate_classifier_counts_correct_predictions():
    task = Classify(build_backbone("vit_test"), ClassifyConfig(num_classes=3)).train()
    with torch.no_grad():
        task.head.fc.weight.normal_()
    data = [{"image": d["image"], "label": i % 3} for i, d in enumerate(halves(20, 0))]
    with torch.no_grad():
        preds = task.eval().predict(to_float(torch.stack([d["image"] for d in data]))).argmax(1)
    task.train()
    expected = (preds == torch.tensor([d["label"] for d in data])).float().mean().item()
    assert evaluate_classifier(task, data, to_float, batch_size=6) == pytest.approx(expected)
    assert task.training
    flipped = [{"image": d["image"], "label": int(p)} for d, p in zip(data, preds)]
    assert evaluate_classifier(task, flipped, to_float, batch_size=7) == 1.0


def test_finetune_wires_task_and_trainer(monkeypatch, tmp_path):
    """Against a stand-in Trainer: the task is a Classify with ``num_classes`` overriding
    ``task_cfg``, and the configs, run_dir, batch size and train transform reach the engine."""
    seen = {}

    class FakeTrainer:
        def __init__(self, trainer_cfg, optim_cfg, run_dir, batch_size, num_workers=0):
            seen.update(trainer_cfg=trainer_cfg, optim_cfg=optim_cfg, run_dir=run_dir, batch_size=batch_size)

        def fit(self, task, dataset, transform=None, resume=False, callbacks=()):
            seen.update(task=task, dataset=dataset, transform=transform)
            return {"steps": 0}

    monkeypatch.setattr(finetune_module, "Trainer", FakeTrainer)
    train, test = halves(8, 0), halves(6, 1)
    tcfg, ocfg = TrainerConfig(max_steps=1), OptimConfig()
    out = finetune(build_backbone("swinv2_test"), train, test, to_float, to_float, num_classes=2, trainer_cfg=tcfg,
                   optim_cfg=ocfg, run_dir=tmp_path, batch_size=4,
                   task_cfg=ClassifyConfig(num_classes=99, label_smoothing=0.0))
    assert out["train_summary"] == {"steps": 0} and 0.0 <= out["test_acc"] <= 1.0
    task = seen["task"]
    assert isinstance(task, Classify) and task.head.fc.out_features == 2 and task.config.label_smoothing == 0.0
    assert seen["trainer_cfg"] is tcfg and seen["optim_cfg"] is ocfg and seen["batch_size"] == 4
    assert seen["dataset"] is train and seen["transform"] is to_float and seen["run_dir"] == tmp_path


@pytest.mark.skipif(importlib.util.find_spec("convergent.training.loop") is None,
                    reason="the training engine (convergent.training.loop) is not written yet")
def test_finetune_learns_separable_task(tmp_path):
    """60 steps of the real Trainer on 'which half is bright' (needs spatial features; a ViT
    from scratch; 15/15 seeds tried reached >= 0.97)."""
    train, test = ItemList(halves(256, 0)), halves(128, 1)
    backbone = build_backbone("vit_test")
    before = evaluate_classifier(Classify(backbone, ClassifyConfig(num_classes=2)), test, to_float)
    tcfg = TrainerConfig(max_steps=60, accelerator="cpu", devices=1, log_every=20, checkpoint_every=1000,
                         seed=0, out_dir=str(tmp_path))
    ocfg = OptimConfig(lr=5e-3, min_lr=1e-4, warmup_steps=5, weight_decay=0.05, layer_decay=0.9)
    out = finetune(backbone, train, test, to_float, to_float, num_classes=2, trainer_cfg=tcfg, optim_cfg=ocfg,
                   run_dir=tmp_path / "ft", batch_size=32)
    assert before < 0.75  # the untrained model is near chance
    assert out["test_acc"] > 0.9, out
    assert isinstance(out["train_summary"], dict)
