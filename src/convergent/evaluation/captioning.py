"""Captions of held-out images against their reference captions.

Each image of the held-out split is captioned by the run's task (``Caption.generate``: beam
search with the task's ``beam_size`` / ``max_new_tokens``), decoded by the run's tokenizer
(special tokens dropped), and scored against all of that image's captions in the data:

* ``bleu4``: corpus BLEU-4 of sacrebleu (its default 13a tokenisation, exponential smoothing),
  in [0, 100] — zero when no caption reaches four tokens (short names such as "red heart"); the references are each image's captions (an image with fewer than the most is
  given its first again, as sacrebleu needs one stream per reference);
* ``cider``: CIDEr-D of the COCO caption evaluation code (``pycocoevalcap``), on lowercased
  captions split at spaces and punctuation (in place of its Java PTB tokenizer), x 1 (COCO
  reports it x 100 in papers' tables).

Beside them, the **nearest-neighbour-caption baseline** (Devlin et al. 2015, "Exploring nearest
neighbor approaches for image captioning", in its 1-NN form): each held-out image gets the first
caption of the training image closest to it (cosine similarity of the average-pooled final
tokens of the run's own image encoder), scored alike (``nn_bleu4``, ``nn_cider``);
``cider_gain_se`` is the standard error of the mean per-image CIDEr gain of the captioner over
it (paired images), so the gain can be judged against noise. A captioner that only retrieves
memorised captions does not beat it.

Both metrics come from maintained packages, the ``caption`` extra (``pip install
convergent[caption]``), imported only here.
"""

import re

import torch

try:  # the caption extra; this module loads only when the captioning evaluation runs
    import sacrebleu
    from pycocoevalcap.cider.cider import Cider

    _MISSING = None
except ImportError as e:
    sacrebleu = Cider = None
    _MISSING = str(e)
from torch.utils.data import DataLoader

from convergent.data.pairs import ImageTextPairs
from convergent.data.transforms import build_transform
from convergent.evaluation.context import Captioner, EvalContext
from convergent.evaluation.features import collate_images, evaluating, model_device
from convergent.evaluation.image_grid import save_captioned_images
from convergent.heads.classifier import pool_tokens

_WORDS = re.compile(r"[a-z0-9]+")


def _metric_packages():
    if _MISSING is not None:
        raise ImportError(f"caption metrics need the caption extra: pip install 'convergent[caption]' ({_MISSING})")
    return sacrebleu, Cider


def caption_scores(hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
    """BLEU-4 and CIDEr of one hypothesis per image against its references."""
    scores, _ = _scores(hypotheses, references)
    return scores


def _scores(hypotheses: list[str], references: list[list[str]]) -> tuple[dict[str, float], torch.Tensor]:
    """:func:`caption_scores` and the per-image CIDEr ``(N,)``."""
    if len(hypotheses) != len(references) or not hypotheses:
        raise ValueError(f"{len(hypotheses)} captions for {len(references)} reference lists")
    sacrebleu, Cider = _metric_packages()
    most = max(len(r) for r in references)
    streams = [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(most)]
    bleu = sacrebleu.corpus_bleu(hypotheses, streams).score

    def words(text: str) -> str:
        return " ".join(_WORDS.findall(text.lower()))

    gts = {i: [words(r) for r in refs] for i, refs in enumerate(references)}
    res = {i: [words(h)] for i, h in enumerate(hypotheses)}
    cider, per_image = Cider().compute_score(gts, res)
    return {"bleu4": float(bleu), "cider": float(cider)}, torch.as_tensor(per_image, dtype=torch.float64).flatten()


@torch.no_grad()
def image_embeddings(backbone, dataset, data_cfg, batch_size: int = 256) -> torch.Tensor:
    """Unit-length average-pooled final tokens ``(N, C)`` of ``backbone`` for the images of ``dataset``."""
    transform = build_transform(data_cfg, train=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_images)
    device = model_device(backbone)
    out = []
    with evaluating(backbone):
        for batch in loader:
            tokens = backbone.forward_features(transform(batch["image"].to(device), None))
            out.append(torch.nn.functional.normalize(pool_tokens(backbone, tokens, "avg").float(), dim=-1).cpu())
    if not out:
        raise ValueError("image_embeddings: no images in the dataset")
    return torch.cat(out)


def nearest_neighbour_captions(backbone, train: ImageTextPairs, heldout: ImageTextPairs, data_cfg,
                               batch_size: int = 256) -> list[str]:  # fmt: skip
    """For each held-out image, the first caption of its most similar training image (see the
    module docstring)."""
    train.preload()
    heldout.preload()
    sims = image_embeddings(backbone, heldout, data_cfg, batch_size) @ image_embeddings(
        backbone, train, data_cfg, batch_size).T  # fmt: skip
    return [train.captions[j][0] for j in sims.argmax(1).tolist()]


def generate_captions(model: Captioner, tokenizer, dataset, data_cfg, batch_size: int = 64,
                      max_images: int | None = None) -> list[str]:  # fmt: skip
    """One caption per image of ``dataset`` (uint8 images, the run's eval transform)."""
    transform = build_transform(data_cfg, train=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_images)
    device = model_device(model)
    out: list[str] = []
    with evaluating(model):
        for batch in loader:
            images = transform(batch["image"].to(device), None)
            ids = model.generate(images, tokenizer.bos_id, tokenizer.eos_id)
            out.extend(tokenizer.decode(row) for row in ids)
            if max_images is not None and len(out) >= max_images:
                return out[:max_images]
    return out


@torch.no_grad()
def evaluate_captioning(ctx: EvalContext) -> dict[str, float | int]:
    """The registered ``captioning`` evaluation on the held-out split (validation, else test);
    empty without one, or when the data has no captions."""
    for split in ("val", "test"):
        try:
            data = ctx.open_split(split, heldout_only=True)
        except (ValueError, KeyError, FileNotFoundError):
            continue
        if data is None:
            continue
        if not isinstance(data, ImageTextPairs):
            return {}  # no captions to compare with
        data.preload()  # drops unreadable images with their captions, so images and captions stay aligned
        references = data.captions
        hypotheses = generate_captions(ctx.task, ctx.tokenizer, data, ctx.cfg.data, ctx.cfg.data.batch_size)
        scores, cider = _scores(hypotheses, references[: len(hypotheses)])
        examples = [f"{h!r} (ref {r[0]!r})" for h, r in list(zip(hypotheses, references))[:3]]
        out = {f"{split}_{k}": v for k, v in scores.items()} | {f"{split}_captioned_images": len(hypotheses),
                                                                 f"{split}_caption_examples": examples}  # fmt: skip
        train = ctx.open_split("train")
        if isinstance(train, ImageTextPairs):
            nearest = nearest_neighbour_captions(ctx.task.backbone, train, data, ctx.cfg.data, ctx.cfg.data.batch_size)
            nn_scores, nn_cider = _scores(nearest, references)
            gain = cider - nn_cider
            out |= {f"{split}_nn_{k}": v for k, v in nn_scores.items()} | {
                f"{split}_cider_gain_se": (gain.std() / len(gain) ** 0.5).item() if len(gain) > 1 else float("nan")}
        if ctx.options.gallery:
            first = torch.stack([torch.as_tensor(data[i]["image"]) for i in range(min(16, len(hypotheses)))])
            out["gallery"] = str(save_captioned_images(first.float() / 255, hypotheses[:16],
                                                       [r[0] for r in references[:16]], ctx.options.gallery,
                                                       f"{data.source}: generated (bold) / reference"))  # fmt: skip
        return out
    return {}
