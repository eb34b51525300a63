"""Image↔text retrieval with a dual encoder (CLIP): Recall@K both ways, the protocol of CLIP,
ALBEF and the Flickr30k / COCO Karpathy-split evaluations.

Every image is embedded once and every caption once (``dataset.captions``: a list of captions
per image); similarities are cosine similarities (both sides are L2-normalised here again, so
a model's ``logit_scale``, which only rescales them, plays no part).

* **image → text**: an image query is correct at ``k`` when *any* of its captions is among the
  ``k`` most similar texts. Images without a caption (extra distractors for text → image) pose
  no query.
* **text → image**: a caption query is correct at ``k`` when *its* image is among the ``k``
  most similar images.

**Ties count against the query.** The rank of the answer is the number of *wrong* candidates
scoring at least as high as the best right one (``>=``, not ``>``), and a query is correct at
``k`` when that rank is below ``k``. A model whose embeddings collapsed to one point therefore
scores 0, not 1, and the result does not depend on how a sort orders equal scores. A NaN
similarity counts as ``-inf`` (a NaN answer is wrong).

**Chance** (``chance_i2t_R@k``, ``chance_t2i_R@k``): the expected recall of a ranking drawn
uniformly at random, exactly: an image with ``c`` of the ``M`` captions is found at ``k`` with
probability ``1 - C(M - c, k) / C(M, k)`` (averaged over image queries), a caption finds its
image among ``N`` with probability ``min(k, N) / N``.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from convergent.data.pairs import ImageTextPairs
from convergent.evaluation.features import Transform, collate_images, evaluating, place, prepare_batch

KS = (1, 5, 10)
"""Default recall cut-offs."""


# --- metrics --------------------------------------------------------------------------------
def rank_of_target(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(b,)`` 0-based rank of column ``target[i]`` in row ``i`` of ``scores`` ``(b, C)``: the
    number of other columns scoring ``>=`` it (ties count against the target; NaN is ``-inf``)."""
    scores = scores.nan_to_num(nan=float("-inf"))
    right = scores.gather(1, target[:, None])  # (b, 1)
    return (scores >= right).sum(1) - 1  # minus the target itself


def _i2t_ranks(image: torch.Tensor, text: torch.Tensor, image_of_text: torch.Tensor, chunk: int) -> torch.Tensor:
    """``(N,)`` rank of the best caption of each image among the other images' captions
    (``M``, the number of texts, for an image without captions: never found)."""
    ranks = []
    for start in range(0, len(image), chunk):
        sims = (image[start : start + chunk] @ text.T).nan_to_num(nan=float("-inf"))  # (b, M)
        query = torch.arange(start, start + len(sims), device=sims.device)
        match = image_of_text[None, :] == query[:, None]  # (b, M): caption j belongs to image i
        best = sims.masked_fill(~match, float("-inf")).amax(1, keepdim=True)  # (b, 1)
        ranks.append(((sims >= best) & ~match).sum(1))
    return torch.cat(ranks)


def _t2i_ranks(image: torch.Tensor, text: torch.Tensor, image_of_text: torch.Tensor, chunk: int) -> torch.Tensor:
    """``(M,)`` rank of each caption's image among all images."""
    return torch.cat([
        rank_of_target(text[s : s + chunk] @ image.T, image_of_text[s : s + chunk])  # (b, N) scores
        for s in range(0, len(text), chunk)
    ])  # fmt: skip


def chance_recall_i2t(captions_per_image: torch.Tensor, num_texts: int, k: int) -> float:
    """Mean over images (``captions_per_image`` ``(n,)``, each >= 1) of the probability that a
    uniformly random ranking of ``num_texts`` texts puts one of the image's captions in the top
    ``k``: ``1 - C(M - c, k) / C(M, k) = 1 - prod_{i<k} (M - c - i) / (M - i)``."""
    c = captions_per_image.double()
    miss = torch.ones_like(c)
    for i in range(min(k, num_texts)):
        miss = miss * ((num_texts - c - i) / (num_texts - i)).clamp(min=0)
    return (1 - miss).mean().item()


def _check(image_emb: torch.Tensor, text_emb: torch.Tensor, image_of_text: torch.Tensor, ks: Sequence[int]) -> None:
    if image_emb.ndim != 2 or text_emb.ndim != 2 or image_emb.shape[1] != text_emb.shape[1]:
        raise ValueError(
            "embeddings must be (N, D) and (M, D) with the same D; "
            f"got images {tuple(image_emb.shape)}, texts {tuple(text_emb.shape)}"
        )
    if len(image_emb) == 0 or len(text_emb) == 0:
        raise ValueError(f"retrieval needs images and texts; got {len(image_emb)} and {len(text_emb)}")
    if image_of_text.shape != text_emb.shape[:1] or image_of_text.is_floating_point():
        raise ValueError(
            f"image_of_text must be an integer tensor of shape ({len(text_emb)},), "
            f"got {image_of_text.dtype} {tuple(image_of_text.shape)}"
        )
    if image_of_text.min() < 0 or image_of_text.max() >= len(image_emb):
        raise ValueError(
            f"image_of_text must index the {len(image_emb)} images; got values in "
            f"[{int(image_of_text.min())}, {int(image_of_text.max())}]"
        )
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks must be recall cut-offs >= 1, got {tuple(ks)}")


@torch.no_grad()
def retrieval_metrics(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    image_of_text: torch.Tensor,
    ks: Sequence[int] = KS,
    chunk: int = 1024,
) -> dict[str, float | int]:
    """Recall@K of image → text and text → image retrieval (protocol, ties and chance: module
    docstring).

    Args:
        image_emb: ``(N, D)`` image embeddings (normalised here).
        text_emb: ``(M, D)`` text embeddings (normalised here).
        image_of_text: ``(M,)`` integer, the image of each text.
        ks: recall cut-offs.
        chunk: queries per similarity block (memory ``chunk * max(N, M)``); runs on the
            embeddings' device.

    Returns:
        ``{"i2t_R@k", …, "t2i_R@k", … (in [0, 1]), "mean_recall" (mean of all of them, ALBEF's
        r_mean / 100), "chance_i2t_R@k", …, "chance_t2i_R@k", …, "num_images", "num_texts",
        "i2t_queries" (images with a caption)}``.
    """
    _check(image_emb, text_emb, image_of_text, ks)
    image = F.normalize(image_emb.float(), dim=-1)  # (N, D)
    text = F.normalize(text_emb.float().to(image.device), dim=-1)  # (M, D)
    image_of_text = image_of_text.long().to(image.device)
    n, m = len(image), len(text)
    counts = torch.bincount(image_of_text, minlength=n)  # (N,) captions per image
    i2t = _i2t_ranks(image, text, image_of_text, chunk)[counts > 0]  # (n_queries,)
    t2i = _t2i_ranks(image, text, image_of_text, chunk)  # (M,)
    ks = sorted({int(k) for k in ks})
    out: dict[str, float | int] = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in ks:
            out[f"{name}_R@{k}"] = (ranks < k).double().mean().item()
    out["mean_recall"] = sum(out.values()) / len(out)
    for k in ks:
        out[f"chance_i2t_R@{k}"] = chance_recall_i2t(counts[counts > 0].cpu(), m, k)
    for k in ks:
        out[f"chance_t2i_R@{k}"] = min(k, n) / n
    out.update(num_images=n, num_texts=m, i2t_queries=len(i2t))
    return out


# --- embedding ------------------------------------------------------------------------------
def embed_images(
    model: nn.Module,
    dataset,
    transform: Transform | None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor | None, list]:
    """``model.encode_image`` of every item of ``dataset`` in order: ``(embeddings (N, D)
    float32 normalised on the CPU, labels (N,) or None, skipped)``, ``skipped`` the unreadable
    images the dataset passed over (see :func:`~convergent.evaluation.features.collate_images`). The model is moved to
    ``device`` (None: its own) and run in eval mode; images are cast to its dtype."""
    device = place(model, device)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), None)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_images)  # fmt: skip
    embs, labels, skipped = [], [], []
    with evaluating(model):
        for batch in loader:
            skipped += batch.pop("skipped")
            x = prepare_batch({"image": batch["image"]}, transform, device, dtype)["image"]  # (B, C, H, W)
            embs.append(F.normalize(model.encode_image(x).float(), dim=-1).cpu())  # (B, D)
            if "label" in batch:
                labels.append(batch["label"])
    if not embs:
        raise ValueError("embed_images got an empty dataset")
    return torch.cat(embs), (torch.cat(labels) if labels else None), skipped


def embed_texts(
    model: nn.Module,
    tokenizer,
    texts: Sequence[str],
    max_length: int = 77,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``model.encode_text`` of ``texts`` tokenized by ``tokenizer.encode_batch`` (truncated to
    ``max_length``): ``(M, D)`` float32 normalised, on the CPU. Eval mode, no gradients."""
    if isinstance(texts, str):
        raise TypeError("embed_texts takes a sequence of texts, not one string")
    texts = list(texts)
    if not texts:
        raise ValueError("embed_texts got no texts")
    device = place(model, device)
    embs = []
    with evaluating(model):
        for start in range(0, len(texts), batch_size):
            enc = tokenizer.encode_batch(texts[start : start + batch_size], max_length=max_length)
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)  # (b, L) each
            embs.append(F.normalize(model.encode_text(ids, mask).float(), dim=-1).cpu())  # (b, D)
    return torch.cat(embs)


def embed_pairs(
    model: nn.Module,
    dataset,
    tokenizer,
    transform: Transform | None,
    batch_size: int = 256,
    device: torch.device | str | None = None,
    max_length: int = 77,
    num_workers: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embed every image of ``dataset`` once and every caption of ``dataset.captions`` (a list
    of captions per image, e.g. :class:`~convergent.data.pairs.ImageTextPairs`).

    Args:
        model: has ``encode_image(images (B, C, H, W))`` and ``encode_text(input_ids,
            attention_mask)``, both ``-> (B, D)`` (a CLIP task).
        dataset: map-style, item ``i`` ``{"image": uint8 (C, H, W), …}`` is image ``i`` of
            ``captions``. An unreadable image that the dataset replaced by the next one
            would misalign images and captions: that is an error (call
            ``ImageTextPairs.preload()`` first, which drops such images with their captions).
        tokenizer: with ``encode_batch(texts, max_length)`` (:class:`~convergent.data.tokenizer.Tokenizer`).
        transform: evaluation transform of the images, ``transform(images, None)`` on ``device``.
        batch_size: images / texts per forward pass.
        device: where to run (None: the model's device).
        max_length: tokens per caption, longer ones truncated.
        num_workers: DataLoader workers for the images.

    Returns:
        ``(image_emb (N, D), text_emb (M, D), image_of_text (M,) long)``, float32 normalised
        embeddings on the CPU; texts in the order of ``captions`` flattened.
    """
    captions = dataset.captions if isinstance(dataset, ImageTextPairs) else None
    if captions is None or len(captions) != len(dataset):
        raise ValueError(
            "embed_pairs needs a dataset with `captions`, one list of captions per item "
            f"(an ImageTextPairs); got {type(dataset).__name__}"
        )
    texts = [t for caps in captions for t in caps]
    image_of_text = torch.repeat_interleave(torch.arange(len(captions)), torch.tensor([len(c) for c in captions]))
    image_emb, _, skipped = embed_images(model, dataset, transform, batch_size, device, num_workers)
    if skipped:
        where = ", ".join(f"{p} ({why})" for p, why in skipped[:3])
        raise ValueError(
            f"{len(skipped)} image(s) could not be read ({where}…); the dataset substituted the next image, "
            "which misaligns images and captions: call dataset.preload() first to drop them"
        )
    text_emb = embed_texts(model, tokenizer, texts, max_length, batch_size, device)
    return image_emb, text_emb, image_of_text

