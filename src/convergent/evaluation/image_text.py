"""The image–text evaluations as registered evaluations (``zero-shot``, ``retrieval``): a
run's image–text model (an :class:`~convergent.evaluation.context.ImageTextModel`, the CLIP
task) on one split of its data, with the options of the command line
(:class:`~convergent.evaluation.context.EvalOptions`)."""

from typing import Any

from convergent.data.transforms import build_transform
from convergent.evaluation.context import EvalContext
from convergent.evaluation.gallery import retrieval_gallery
from convergent.evaluation.retrieval import embed_pairs, retrieval_metrics
from convergent.evaluation.zero_shot import DEFAULT_TEMPLATES, zero_shot_accuracy


def evaluate_zero_shot(ctx: EvalContext) -> dict[str, Any]:
    """Zero-shot accuracy over the class names of the split (or ``options.classes``), the
    prompts filled into ``options.templates``."""
    cfg, o = ctx.cfg, ctx.options
    data = ctx.open_split(o.split)
    results = zero_shot_accuracy(ctx.task, data, ctx.tokenizer, classes=o.classes or None,
                                 templates=tuple(o.templates or DEFAULT_TEMPLATES),
                                 transform=build_transform(cfg.data, train=False), batch_size=cfg.data.batch_size,
                                 max_length=cfg.data.max_length)  # fmt: skip
    return {"data": f"{data.source} ({o.split})", **results}


def evaluate_retrieval(ctx: EvalContext) -> dict[str, Any]:
    """Image→text and text→image Recall@k (``options.ks``) over the pairs of the split;
    with ``options.gallery``, a picture of the top results (PNG + HTML) there."""
    cfg, o = ctx.cfg, ctx.options
    data = ctx.open_split(o.split)
    transform = build_transform(cfg.data, train=False)
    data.preload()  # drops unreadable images with their captions, so images and captions stay aligned
    images, texts, owner = embed_pairs(ctx.task, data, ctx.tokenizer, transform, batch_size=cfg.data.batch_size,
                                       max_length=cfg.data.max_length)  # fmt: skip
    results = {"data": f"{data.source} ({o.split})", **retrieval_metrics(images, texts, owner, tuple(o.ks))}
    if o.gallery:
        written = retrieval_gallery(data.images, list(data.texts()), images, texts, owner, o.gallery, title=data.source)
        results["gallery"] = [str(p) for p in written]
    return results
