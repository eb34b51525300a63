"""``convergent eval zero-shot RUN`` and ``convergent eval retrieval RUN``: evaluate the
image–text model (CLIP) of a pre-training run on the held-out split of its data."""

import json
from pathlib import Path
from typing import Any


def _load(run_dir: str | Path, split: str, data: dict | None = None):
    """Task, tokenizer, config (its data settings updated by ``data``), dataset and transform."""
    import dataclasses

    from convergent.data.registry import build_dataset
    from convergent.data.tokenizer import TOKENIZER_FILE
    from convergent.data.transforms import build_transform
    from convergent.workflows.pretrain import CONFIG_FILE
    from convergent.workflows.runs import load_task_from_run
    from convergent.workflows.text import TOKENIZER_DIR

    task, tokenizer, cfg = load_task_from_run(run_dir)
    if not (hasattr(task, "encode_image") and hasattr(task, "encode_text")):
        raise ValueError(f"{run_dir} trained task {task.name!r}; this evaluation needs an image-text model (clip)")
    if tokenizer is None:  # e.g. converted from a HF CLIP directory without tokenizer.json
        where = Path(run_dir) / TOKENIZER_DIR / TOKENIZER_FILE
        raise ValueError(f"{run_dir}: no tokenizer (expected {where} or data.tokenizer in "
                         f"{Path(run_dir) / CONFIG_FILE}); this evaluation embeds texts")  # fmt: skip
    if data:
        fields = {f.name for f in dataclasses.fields(cfg.data)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown data options {unknown}; expected fields of the data config: {sorted(fields)}")
        cfg.data = dataclasses.replace(cfg.data, **data)
    data = build_dataset(cfg.data.name, split, root=cfg.data.root, img_size=cfg.data.img_size,
                         in_chans=cfg.data.in_chans)  # fmt: skip
    return cfg, task, tokenizer, data, build_transform(cfg.data, train=False)


def run_zero_shot(run_dir: str | Path, classes=None, templates=None, split: str = "test",
                  out: str | Path | None = None, data: dict | None = None) -> dict:  # fmt: skip
    """Zero-shot accuracy of the run's image–text model over the class names of its data
    (``data``: data settings that replace the run's, e.g. ``{"name": ..., "root": ...}``)."""
    from convergent.evaluation.report import format_report
    from convergent.evaluation.zero_shot import DEFAULT_TEMPLATES, zero_shot_accuracy

    cfg, task, tokenizer, data, transform = _load(run_dir, split, data)
    results = zero_shot_accuracy(task, data, tokenizer, classes=classes or None,
                                 templates=tuple(templates or DEFAULT_TEMPLATES), transform=transform,
                                 batch_size=cfg.data.batch_size, max_length=cfg.data.max_length)  # fmt: skip
    results = {"run": str(run_dir), "data": f"{data.source} ({split})", **results}
    _write(results, out)
    print(format_report(results, "zero-shot"))
    return results


def run_retrieval(run_dir: str | Path, ks=(1, 5, 10), split: str = "test", gallery: str | Path | None = None,
                  out: str | Path | None = None, data: dict | None = None) -> dict:  # fmt: skip
    """Image→text and text→image Recall@k of the run's image–text model (``data`` as in
    :func:`run_zero_shot`); optionally a gallery."""
    from convergent.evaluation.report import format_report
    from convergent.evaluation.retrieval import embed_pairs, retrieval_metrics
    from convergent.workflows.gallery import retrieval_gallery

    cfg, task, tokenizer, data, transform = _load(run_dir, split, data)
    data.preload()  # drops unreadable images with their captions, so images and captions stay aligned
    images, texts, owner = embed_pairs(task, data, tokenizer, transform, batch_size=cfg.data.batch_size,
                                       max_length=cfg.data.max_length)  # fmt: skip
    results = {"run": str(run_dir), "data": f"{data.source} ({split})", **retrieval_metrics(images, texts, owner, ks)}
    if gallery:
        results["gallery"] = [str(p) for p in retrieval_gallery(data.images, list(data.texts()), images, texts, owner,
                                                                 gallery, title=data.source)]  # fmt: skip
    _write(results, out)
    print(format_report(results, "retrieval"))
    return results


def _write(results: dict, out: Any) -> None:
    if out is not None:
        Path(out).write_text(json.dumps(results, indent=2, default=str) + "\n")
