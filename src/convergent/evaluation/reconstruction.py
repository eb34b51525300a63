"""How well an image tokenizer (a VQ-VAE run) keeps the images: each held-out image is encoded
to code ids and decoded back (``decode(encode(x))``, the path every user of the tokenizer
takes), both mapped back to [0, 1] pixels with the data's normalisation.

* ``psnr``: ``10 log10(1 / MSE)`` per image, averaged over the images (in dB);
* ``mse``: mean squared error over all pixels, in [0, 1] units;
* ``codebook_usage``: fraction of the codes used at least once over the split;
* ``code_perplexity``: ``exp`` of the entropy of the codes' frequencies over the split (the
  number of equally used codes it corresponds to).
* ``baseline_psnr``: the same images kept in the same number of bits without learning — each
  averaged down to the token grid (``h x w``) and every grid cell's colour rounded to
  ``log2(num_codes)`` bits (split evenly over the channels: 3 bits per channel for 512 codes and
  RGB), then resized back (bilinear); ``psnr_gain_se``: the standard error of the mean per-image
  PSNR gain over it (the images are paired), so a tokenizer's gain can be judged against noise.
"""

import math

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from convergent.data.transforms import build_transform, denormalize
from convergent.evaluation.context import EvalContext, ImageTokenizer
from convergent.evaluation.features import collate_images, evaluating, model_device


def grid_baseline(images: torch.Tensor, grid: tuple[int, int], bits: int) -> torch.Tensor:
    """``images`` ``(B, C, H, W)`` in [0, 1] kept in ``bits`` bits per cell of ``grid``: averaged
    down to it, each cell's colour rounded to ``bits // C`` bits per channel, resized back."""
    per_channel = bits // images.shape[1]
    if per_channel < 1:
        raise ValueError(f"{bits} bits per grid cell cannot hold {images.shape[1]} channels (need >= 1 bit each)")
    levels = 2**per_channel - 1
    small = F.adaptive_avg_pool2d(images.float(), grid)
    small = torch.round(small.clamp(0, 1) * levels) / levels
    return F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR (dB) of ``a`` against ``b``, both ``(B, ...)`` in [0, 1]."""
    return 10 * torch.log10(1 / (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10))


def reconstruction_metrics(tokenizer: ImageTokenizer, dataset, data_cfg, batch_size: int = 256,
                           max_images: int | None = None) -> dict[str, float | int]:  # fmt: skip
    """The metrics above of ``tokenizer`` on the images of ``dataset`` (uint8 ``image``
    batches, normalised with ``data_cfg`` as the run's eval transform does)."""
    transform = build_transform(data_cfg, train=False)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_images)  # images only
    device = model_device(tokenizer)
    counts = torch.zeros(tokenizer.num_codes, dtype=torch.float64)
    bits = int(math.log2(tokenizer.num_codes))
    sq_sum, pixels, images = 0.0, 0, 0
    psnrs, gains = [], []
    with evaluating(tokenizer):
        for batch in loader:
            x = transform(batch["image"].to(device), None)
            if max_images is not None:
                x = x[: max_images - images]
            ids = tokenizer.encode(x)  # (B, h, w)
            y = denormalize(tokenizer.decode(ids).float(), data_cfg)
            x01 = denormalize(x.float(), data_cfg)
            err = (y - x01).pow(2).flatten(1)  # (B, C*H*W)
            psnr = _psnr(y, x01)
            psnrs.append(psnr.cpu())
            gains.append((psnr - _psnr(grid_baseline(x01, tuple(ids.shape[1:]), bits), x01)).cpu())
            sq_sum += err.sum().item()
            pixels += err.numel()
            images += x.shape[0]
            counts += torch.bincount(ids.flatten().cpu(), minlength=tokenizer.num_codes).double()
            if max_images is not None and images >= max_images:
                break
    if images == 0:
        raise ValueError("reconstruction_metrics: no images in the dataset")
    p = counts / counts.sum()
    psnr, gain = torch.cat(psnrs).double(), torch.cat(gains).double()
    return {
        "psnr": psnr.mean().item(),
        "baseline_psnr": (psnr - gain).mean().item(),
        "psnr_gain_se": (gain.std() / math.sqrt(len(gain))).item() if len(gain) > 1 else float("nan"),
        "mse": sq_sum / pixels,
        "codebook_usage": (counts > 0).double().mean().item(),
        "code_perplexity": torch.exp(-(p * torch.log(p + 1e-12)).sum()).item(),
        "reconstruction_images": images,
    }


def evaluate_reconstruction(ctx: EvalContext) -> dict[str, float | int]:
    """The registered ``reconstruction`` evaluation: :func:`reconstruction_metrics` of the
    context's task on the held-out split of its data (validation, else test); empty without one."""
    for split in ("val", "test"):
        try:
            data = ctx.open_split(split, heldout_only=True)
        except (ValueError, KeyError, FileNotFoundError):
            continue
        if data is not None:
            found = reconstruction_metrics(ctx.task, data, ctx.cfg.data, batch_size=ctx.cfg.data.batch_size)
            return {f"{split}_{k}": v for k, v in found.items()}
    return {}
