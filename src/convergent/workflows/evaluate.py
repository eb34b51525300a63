"""Evaluation of a saved encoder on frozen features: ``convergent eval`` and the end of
``convergent pretrain``."""

import json
from pathlib import Path
from typing import Any

import yaml


def evaluate_encoder(cfg: Any, backbone, train_set, test_set) -> dict:
    """kNN and linear-probe accuracy of frozen features (``cfg.eval``) on the labelled
    train/test splits; empty when the data has no labels or no test split."""
    import torch

    from convergent.data.transforms import build_transform
    from convergent.evaluation.features import extract_features
    from convergent.evaluation.knn import knn_accuracy
    from convergent.evaluation.linear_probe import linear_probe

    e = cfg.eval
    if test_set is None or not train_set.classes or not (e.knn or e.linear_probe):
        return {}
    if train_set.streamed:
        print("note: the training split is streamed; kNN / linear probe need a map-style one: no probes")
        return {}
    transform = build_transform(cfg.data, train=False)
    probe_train = train_set
    if e.limit_train is not None and e.limit_train < len(train_set):
        # a seeded random subset: datasets may be ordered by class (WordNet: file by file)
        g = torch.Generator().manual_seed(cfg.trainer.seed)
        keep = torch.randperm(len(train_set), generator=g)[: e.limit_train].sort().values
        probe_train = torch.utils.data.Subset(train_set, keep.tolist())
    kw = dict(layer=e.layer, pooling=e.pooling)
    xtr, ytr = extract_features(backbone, probe_train, transform, **kw)
    xte, yte = extract_features(backbone, test_set, transform, **kw)
    results: dict = {"eval_train_samples": len(ytr), "eval_test_samples": len(yte), "eval_layer": e.layer}
    num_classes = len(train_set.classes)
    if e.knn:
        results["knn_acc"] = knn_accuracy(xtr, ytr, xte, yte, k=e.knn_k, temperature=e.knn_temperature,
                                          num_classes=num_classes)
    if e.linear_probe:
        probe = linear_probe(xtr, ytr, xte, yte, num_classes, epochs=e.probe_epochs, lr=e.probe_lr,
                             seed=cfg.trainer.seed)
        results["linear_probe_acc"] = probe["acc"]
        results["linear_probe_train_acc"] = probe["train_acc"]
    return results


def resolve_encoder(path: str | Path) -> tuple[Path, dict | None]:
    """An encoder directory (``config.json`` + ``model.safetensors``) from ``path``, which may be
    the encoder itself or a pre-training run directory (then its ``config.yaml`` is returned too)."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path, None
    if (path / "encoder" / "config.json").is_file():
        run_cfg = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").is_file() else None
        return path / "encoder", run_cfg
    raise FileNotFoundError(f"{path}: neither an encoder directory (config.json) nor a run directory (encoder/)")


def run_eval(cfg: Any, encoder: str | Path, out: str | Path | None = None) -> dict:
    """kNN / linear probe of the encoder at ``encoder`` on ``cfg.data`` with ``cfg.eval``."""
    from convergent.backbones.pretrained import from_pretrained
    from convergent.evaluation.report import format_report
    from convergent.workflows.pretrain import build_datasets
    from convergent.workflows.text import prepare_text

    enc_dir, _ = resolve_encoder(encoder)
    backbone = from_pretrained(enc_dir).eval()
    train_set, test_set = build_datasets(cfg)
    prepare_text(cfg, None, train_set, test_set, encoder_dir=enc_dir)
    if test_set is None:
        raise ValueError(f"dataset {cfg.data.name!r} has no labelled test split to evaluate on")
    results = {"encoder": str(enc_dir), "data": train_set.source}
    results.update(evaluate_encoder(cfg, backbone, train_set, test_set))
    if out is not None:
        Path(out).write_text(json.dumps(results, indent=2) + "\n")
    print(format_report(results))
    return results
