"""The frozen-feature probes as registered evaluations (``knn``, ``linear-probe``): the
features of an :class:`~convergent.evaluation.context.EvalContext`'s encoder on its labelled
splits, extracted once and shared by both, then :func:`~.knn.knn_accuracy` and
:func:`~.linear_probe.linear_probe` with the settings of ``cfg.eval``."""

from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Subset

from convergent.data.transforms import build_transform
from convergent.evaluation.context import EvalContext
from convergent.evaluation.features import extract_features
from convergent.evaluation.knn import knn_accuracy
from convergent.evaluation.linear_probe import linear_probe


@dataclass
class ProbeFeatures:
    """Pooled frozen features ``(N, C)`` and labels ``(N,)`` of the two splits."""

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    layer: int

    def header(self) -> dict[str, Any]:
        """What was probed, reported with every probe's result."""
        return {"eval_train_samples": len(self.train_labels), "eval_test_samples": len(self.test_labels),
                "eval_layer": self.layer}  # fmt: skip


def probe_features(ctx: EvalContext) -> ProbeFeatures:
    """The features of ``ctx.backbone`` on ``ctx.train_set`` (at most ``eval.limit_train``
    samples, a seeded random subset: datasets may be ordered by class) and ``ctx.test_set``;
    computed on the first call, then taken from ``ctx.cache``."""
    if "probe_features" not in ctx.cache:
        cfg, train_set = ctx.cfg, ctx.train_set
        e = cfg.eval
        transform = build_transform(cfg.data, train=False)
        probe_train = train_set
        if e.limit_train is not None and e.limit_train < len(train_set):
            g = torch.Generator().manual_seed(cfg.trainer.seed)
            keep = torch.randperm(len(train_set), generator=g)[: e.limit_train].sort().values
            probe_train = Subset(train_set, keep.tolist())
        kw = dict(layer=e.layer, pooling=e.pooling)
        xtr, ytr = extract_features(ctx.backbone, probe_train, transform, **kw)
        xte, yte = extract_features(ctx.backbone, ctx.test_set, transform, **kw)
        ctx.cache["probe_features"] = ProbeFeatures(xtr, ytr, xte, yte, len(train_set.classes), e.layer)
    return ctx.cache["probe_features"]


def evaluate_knn(ctx: EvalContext) -> dict[str, Any]:
    """``knn_acc``: weighted kNN accuracy (``eval.knn_k``, ``eval.knn_temperature``)."""
    f, e = probe_features(ctx), ctx.cfg.eval
    acc = knn_accuracy(f.train, f.train_labels, f.test, f.test_labels, k=e.knn_k, temperature=e.knn_temperature,
                       num_classes=f.num_classes)  # fmt: skip
    return {**f.header(), "knn_acc": acc}


def evaluate_linear_probe(ctx: EvalContext) -> dict[str, Any]:
    """``linear_probe_acc`` and ``linear_probe_train_acc`` (``eval.probe_epochs``,
    ``eval.probe_lr``, seeded with ``trainer.seed``)."""
    f, e = probe_features(ctx), ctx.cfg.eval
    probe = linear_probe(f.train, f.train_labels, f.test, f.test_labels, f.num_classes, epochs=e.probe_epochs,
                         lr=e.probe_lr, seed=ctx.cfg.trainer.seed)  # fmt: skip
    return {**f.header(), "linear_probe_acc": probe["acc"], "linear_probe_train_acc": probe["train_acc"]}
