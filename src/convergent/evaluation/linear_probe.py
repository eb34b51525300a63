"""Linear probe on frozen features (MAE ``main_linprobe.py``, simplified).

MAE puts a ``BatchNorm1d(affine=False)`` in front of the linear layer, so the probe sees
standardised features whatever their scale. Here the statistics are those of the whole
training set, computed once (the same map as that BatchNorm in eval mode with exact rather
than running statistics), and applied to train and test features alike. The classifier is
one ``Linear`` (weights trunc-normal std 0.01, zero bias, as MAE), trained with AdamW on a
cosine schedule and cross-entropy; MAE's LARS is for batch sizes of 16k, not needed here.
Everything random (init, order) comes from one generator seeded with ``seed``.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn


def standardize(train: torch.Tensor, test: torch.Tensor, eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Subtract the train mean and divide by the train std, per feature (``(N, C)`` each)."""
    mean = train.mean(dim=0, keepdim=True)  # (1, C)
    std = train.var(dim=0, unbiased=False, keepdim=True).add(eps).sqrt()  # (1, C)
    return (train - mean) / std, (test - mean) / std


@torch.no_grad()
def accuracy(model: nn.Module, feats: torch.Tensor, labels: torch.Tensor, batch_size: int = 4096) -> float:
    """Top-1 accuracy of ``model`` on ``feats`` ``(N, C)``."""
    correct = sum(
        (model(feats[i : i + batch_size]).argmax(1) == labels[i : i + batch_size]).sum().item()
        for i in range(0, len(feats), batch_size)
    )
    return correct / max(len(feats), 1)


def _check(feats: torch.Tensor, labels: torch.Tensor, num_classes: int, split: str) -> None:
    if feats.ndim != 2 or labels.shape != feats.shape[:1] or len(feats) == 0:
        raise ValueError(
            f"{split} features must be (N, C) with N labels; got {tuple(feats.shape)}, {tuple(labels.shape)}"
        )
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"{split} labels must lie in [0, {num_classes}); got [{labels.min()}, {labels.max()}]")


def linear_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    test_feats: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    epochs: int = 20,
    lr: float = 1e-2,
    batch_size: int = 256,
    weight_decay: float = 0.0,
    seed: int = 0,
) -> dict[str, float]:
    """Train a linear classifier on standardised ``train_feats`` ``(N, C)``; report
    ``{"acc": test accuracy, "train_acc": final train accuracy, "loss": last epoch's mean loss}``.

    Runs on the device of ``train_feats``; deterministic for a given ``seed`` (on CPU)."""
    _check(train_feats, train_labels, num_classes, "train")
    _check(test_feats, test_labels, num_classes, "test")
    device = train_feats.device
    x_train, x_test = standardize(train_feats.float(), test_feats.float().to(device))
    y_train, y_test = train_labels.long().to(device), test_labels.long().to(device)
    gen = torch.Generator().manual_seed(seed)
    model = nn.Linear(x_train.shape[1], num_classes).to(device)
    with torch.no_grad():
        nn.init.trunc_normal_(model.weight, std=0.01, a=-0.02, b=0.02, generator=gen)
        nn.init.zeros_(model.bias)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    total = max(epochs * steps_per_epoch, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    epoch_loss = float("nan")
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=gen).to(device)
        losses = []
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        epoch_loss = sum(losses) / len(losses)
    return {"acc": accuracy(model, x_test, y_test), "train_acc": accuracy(model, x_train, y_train), "loss": epoch_loss}
