"""R-precision of a text-to-image model (as AttnGAN / DALL-E evaluations): an image is drawn
for each held-out caption, and a CLIP run — trained on the training split, a judge independent
of the generator — ranks that caption among ``candidates`` captions (its own and random other
held-out captions, seeded); R-precision is the fraction of images whose own caption ranks
first. Chance is ``1 / candidates``. The gallery shows the first 16 images, each under its
prompt, with the caption the judge picked for it.

The generated images are mapped from the generator's normalisation to [0, 1], then to the CLIP
run's normalisation and image size. Captions are each image's first caption in the data.
"""

import torch
import torch.nn.functional as F

from convergent.data.pairs import ImageTextPairs
from convergent.data.transforms import denormalize, normalize
from convergent.evaluation.context import EvalContext
from convergent.evaluation.features import evaluating, model_device
from convergent.evaluation.image_grid import save_captioned_images


@torch.no_grad()
def clip_image_embeddings(clip, clip_cfg, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """CLIP image embeddings ``(N, E)`` of images ``(N, C, H, W)`` in [0, 1] (generated ones),
    brought to the CLIP run's image size (bilinear) and normalisation (``clip_cfg.data``)."""
    side = clip_cfg.data.img_size
    device = model_device(clip)
    out = []
    with evaluating(clip):
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size].to(device)
            if x.shape[-2:] != (side, side):
                x = F.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
            out.append(clip.encode_image(normalize(x * 255, clip_cfg.data.mean, clip_cfg.data.std)))
    return torch.cat(out)


def r_precision(image_emb: torch.Tensor, text_emb: torch.Tensor, candidates: int, seed: int = 0) -> float:
    """Fraction of images ``i`` (rows of ``image_emb`` ``(N, E)``) whose caption ``i`` (rows of
    ``text_emb``) is the most similar among itself and ``candidates - 1`` random other captions."""
    return sum(p == i for i, p in enumerate(judge_picks(image_emb, text_emb, candidates, seed))) / image_emb.shape[0]


def judge_picks(image_emb: torch.Tensor, text_emb: torch.Tensor, candidates: int, seed: int = 0) -> list[int]:
    """For each image ``i``, the caption the judge ranks first among caption ``i`` and
    ``candidates - 1`` random others (seeded): ``i`` itself when it is a hit."""
    n = image_emb.shape[0]
    if not 2 <= candidates <= n:
        raise ValueError(f"candidates must be in [2, {n}] (the captions drawn), got {candidates}")
    sims = F.normalize(image_emb.float(), dim=-1) @ F.normalize(text_emb.float(), dim=-1).T  # (N, N)
    g = torch.Generator().manual_seed(seed)
    picks = []
    for i in range(n):
        others = torch.randperm(n - 1, generator=g)[: candidates - 1]
        others = others + (others >= i).long()  # skip i itself
        best = int(others[sims[i, others].argmax()])
        picks.append(i if sims[i, i] > sims[i, best] else best)
    return picks


@torch.no_grad()
def evaluate_r_precision(ctx: EvalContext) -> dict:
    """The registered ``r-precision`` evaluation (options: ``clip``, ``candidates``,
    ``max_images``, ``top_k``, ``split``, ``gallery``)."""
    o, cfg = ctx.options, ctx.cfg
    if o.clip is None:
        raise ValueError("r-precision needs the CLIP run that judges the images: --clip RUN")
    clip, clip_tokenizer, clip_cfg = ctx.open_run(o.clip)
    if clip.name != "clip":
        raise ValueError(f"--clip {o.clip} trained task {clip.name!r}; r-precision needs a clip run")
    data = ctx.open_split(o.split)
    if not isinstance(data, ImageTextPairs):
        raise ValueError(f"r-precision needs image-caption pairs; {data.source} has no captions")
    data.preload()
    prompts = [c[0] for c in data.captions][: o.max_images]
    device = model_device(ctx.task)
    g = torch.Generator(device=device).manual_seed(cfg.trainer.seed)
    images = []
    with evaluating(ctx.task):
        for start in range(0, len(prompts), cfg.data.batch_size):
            batch = ctx.tokenizer.encode_batch(prompts[start : start + cfg.data.batch_size], cfg.data.max_length)
            out = ctx.task.generate_images(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                           top_k=o.top_k, generator=g)  # fmt: skip
            images.append(denormalize(out.float(), cfg.data).cpu())
    images = torch.cat(images)  # (N, C, H, W) in [0, 1]
    texts = clip_tokenizer.encode_batch(prompts, clip_cfg.data.max_length)
    image_emb = clip_image_embeddings(clip, clip_cfg, images).cpu()
    with evaluating(clip):
        device = model_device(clip)
        text_emb = clip.encode_text(texts["input_ids"].to(device), attention_mask=texts["attention_mask"].to(device)).cpu()
    r = min(o.candidates, len(prompts))
    picks = judge_picks(image_emb, text_emb, r, cfg.trainer.seed)
    hits = sum(p == i for i, p in enumerate(picks))
    results = {"data": f"{data.source} ({o.split})", "r_precision": hits / len(prompts), "chance": 1.0 / r,
               "candidates": r, "num_images": len(prompts), "judge": str(o.clip)}  # fmt: skip
    if o.gallery:
        shown = min(16, len(prompts))
        verdicts = ["judge: its prompt" if p == i else f"judge picked: {prompts[p]}" for i, p in enumerate(picks[:shown])]
        results["gallery"] = str(save_captioned_images(images[:shown], prompts[:shown], verdicts, o.gallery,
                                                       f"drawn for held-out captions (bold); the judge's pick among {r}"))
    return results
