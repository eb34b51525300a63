"""Zero-shot classification with a dual encoder (CLIP, Radford et al. 2021, §3.1.4): each class
is the text embedding of its name put into prompt templates, and an image is assigned the
class whose embedding is most similar to its own.

**Prompt ensembling.** Every template (``"a picture of {}"``; the placeholder is ``{}`` or
``{c}``) is filled with the class name and embedded; the class embedding is the mean of the
normalised embeddings, normalised again (CLIP's ``zeroshot_classifier``).

**Class names** are made readable for the prompts (:func:`readable_class_name`): underscores
become spaces, runs of spaces collapse, everything is lower-cased, other characters stay
(``"Smileys & Emotion"`` → ``"smileys & emotion"``, ``"T-shirt/top"`` → ``"t-shirt/top"``).
Results keep the original names.

**Ties count against the image**, as in :mod:`convergent.evaluation.retrieval`: an image is
right at ``k`` when fewer than ``k`` wrong classes score ``>=`` its own, so collapsed
embeddings score 0 rather than an accident of ``argmax``. The ``logit_scale`` of a model
rescales all similarities alike and so plays no part.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from convergent.data.protocol import Dataset
from convergent.evaluation.features import Transform
from convergent.evaluation.retrieval import embed_images, embed_texts, rank_of_target

DEFAULT_TEMPLATES = ("a picture of {}.", "a photo of {}.", "an image of {}.", "{}")
"""Prompt templates of :func:`zero_shot_accuracy`; the bare name (``"{}"``) suits models
trained on captions that are just names (emoji)."""
PLACEHOLDERS = ("{}", "{c}")


def readable_class_name(name: str) -> str:
    """``"Smileys_&_Emotion"`` → ``"smileys & emotion"`` (see the module docstring)."""
    return " ".join(str(name).replace("_", " ").split()).lower()


def fill_template(template: str, name: str) -> str:
    """``template`` with its placeholder(s) (``{}`` or ``{c}``) replaced by ``name``; other
    braces are left alone (no ``str.format``)."""
    if not any(p in template for p in PLACEHOLDERS):
        raise ValueError(f"prompt template {template!r} has no class-name placeholder ({' or '.join(PLACEHOLDERS)})")
    for p in PLACEHOLDERS:
        template = template.replace(p, name)
    return template


def class_text_embeddings(
    model: nn.Module,
    tokenizer,
    classes: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    max_length: int = 77,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``(K, D)`` normalised class embeddings: per class, the renormalised mean of the
    normalised ``model.encode_text`` embeddings of every template filled with the name (used
    as given: :func:`zero_shot_accuracy` passes readable names). Float32, on the CPU."""
    if isinstance(classes, str) or isinstance(templates, str):
        raise TypeError("classes and templates are sequences of strings, not one string")
    if not classes:
        raise ValueError("zero-shot classification needs at least one class name")
    if not templates:
        raise ValueError("zero-shot classification needs at least one prompt template")
    prompts = [fill_template(t, c) for c in classes for t in templates]  # (K * T,), class-major
    emb = embed_texts(model, tokenizer, prompts, max_length, batch_size, device)  # (K * T, D) normalised
    return F.normalize(emb.view(len(classes), len(templates), -1).mean(1), dim=-1)  # (K, D)


def zero_shot_scores(
    image_emb: torch.Tensor, labels: torch.Tensor, class_emb: torch.Tensor, classes: Sequence[str]
) -> dict:
    """Accuracies of images ``(N, D)`` with labels ``(N,)`` (in ``[0, K)``) against class
    embeddings ``(K, D)`` named ``classes`` (result keys: :func:`zero_shot_accuracy`)."""
    k = len(classes)
    if class_emb.shape[0] != k or image_emb.ndim != 2 or image_emb.shape[1] != class_emb.shape[1]:
        raise ValueError(
            f"{k} classes; need image embeddings (N, D) and class embeddings ({k}, D), "
            f"got {tuple(image_emb.shape)} and {tuple(class_emb.shape)}"
        )
    scores = F.normalize(image_emb.float(), dim=-1) @ F.normalize(class_emb.float(), dim=-1).T  # (N, K)
    rank = rank_of_target(scores, labels.long())  # (N,)
    right = (rank == 0).double()
    out: dict = {"zero_shot_acc": right.mean().item()}
    if k >= 5:
        out["zero_shot_top5_acc"] = (rank < 5).double().mean().item()
    count = torch.bincount(labels, minlength=k).double()  # (K,) images per class
    per_class = torch.bincount(labels, weights=right, minlength=k) / count.clamp(min=1)  # (K,)
    present = count > 0
    out["zero_shot_mean_per_class_acc"] = per_class[present].mean().item()
    out["chance"] = 1.0 / k
    if k >= 5:
        out["chance_top5"] = 5.0 / k
    out["per_class_acc"] = {name: per_class[c].item() for c, name in enumerate(classes) if present[c]}
    out["num_images"] = len(labels)
    out["num_classes"] = k
    return out


def zero_shot_accuracy(
    model: nn.Module,
    dataset,
    tokenizer,
    classes: Sequence[str] | None = None,
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    transform: Transform | None = None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    max_length: int = 77,
    num_workers: int = 0,
) -> dict:
    """Zero-shot accuracy of a dual encoder on a labelled image dataset.

    Args:
        model: has ``encode_image(images (B, C, H, W))`` and ``encode_text(input_ids,
            attention_mask)``, both ``-> (B, D)`` (a CLIP task); run in eval mode, restored after.
        dataset: map-style, items ``{"image": uint8 (C, H, W), "label": int, …}`` (captions, if
            any, are ignored: no tokenizer needs to be attached); label -1 = unlabelled, left out.
        tokenizer: with ``encode_batch(texts, max_length)``, to embed the prompts.
        classes: class names in label order (None: ``dataset.classes``); made readable for the
            prompts (:func:`readable_class_name`), kept as given in ``per_class_acc``.
        templates: prompt templates, each with a ``{}`` or ``{c}`` placeholder.
        transform: evaluation transform of the images, ``transform(images, None)`` on ``device``.
        batch_size: images / prompts per forward pass.
        device: where to run (None: the model's device).
        max_length: tokens per prompt.
        num_workers: DataLoader workers.

    Returns:
        ``{"zero_shot_acc", "zero_shot_top5_acc" (K >= 5), "zero_shot_mean_per_class_acc"
        (mean over classes with images), "chance" (1 / K), "chance_top5" (5 / K, K >= 5),
        "per_class_acc": {class name: accuracy} (classes with images), "num_images" (labelled),
        "num_classes"}``, accuracies in [0, 1].
    """
    if classes is None:
        classes = dataset.classes if isinstance(dataset, Dataset) else ()
    classes = list(classes)
    if not classes:
        raise ValueError("zero-shot classification needs class names: the dataset has none, pass classes=")
    if isinstance(templates, str) or not templates:
        raise ValueError(f"templates must be a non-empty sequence of strings, got {templates!r}")
    for t in templates:  # a bad template fails now, not after embedding every image
        fill_template(t, "")
    image_emb, labels, _ = embed_images(model, dataset, transform, batch_size, device, num_workers)  # (N, D), (N,)
    if labels is None:
        raise KeyError("zero-shot classification needs labelled items ('label')")
    keep = labels >= 0
    if not keep.any():
        raise ValueError("zero-shot classification: no labelled images (every label is -1)")
    if labels.max() >= len(classes):
        raise ValueError(f"label {int(labels.max())} but only {len(classes)} class names {classes}")
    readable = [readable_class_name(c) for c in classes]
    class_emb = class_text_embeddings(model, tokenizer, readable, templates, max_length, batch_size, device)
    return zero_shot_scores(image_emb[keep], labels[keep], class_emb, classes)
