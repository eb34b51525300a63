"""Pixel reconstruction losses for masked image modelling (pure torch).

* :func:`masked_l1` — SimMIM: L1 per pixel, averaged over masked pixels and channels
  (``sum / (num_masked + 1e-5) / C``, as the official code and HF ``*ForMaskedImageModeling``);
* :func:`local_normalize` — SimMIM's normalised target (official Swin V2 recipe): each pixel
  standardised by the mean and variance of the window around it;
* :func:`masked_mse` — MAE: per-patch MSE (optionally against per-patch normalised pixels),
  averaged over masked patches (HF ``ViTMAEForPreTraining.forward``);
* :func:`patchify` / :func:`unpatchify` — images ↔ ``(B, N, p²·C)`` in MAE's order
  (row-major patches; inside a patch row, column, then channel).
"""

import torch


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask_pixels: torch.Tensor) -> torch.Tensor:
    """SimMIM loss.

    Args:
        pred, target: ``(B, C, H, W)`` images.
        mask_pixels: ``(B, 1, H, W)`` or ``(B, H, W)``, 1/True where the pixel was masked.
    Returns:
        scalar: ``sum(|pred - target| · mask) / (sum(mask) + 1e-5) / C``.
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    mask = mask_pixels if mask_pixels.ndim == 4 else mask_pixels.unsqueeze(1)  # (B, 1, H, W)
    mask = mask.to(pred.dtype)
    loss = (pred - target).abs()  # (B, C, H, W)
    return (loss * mask).sum() / (mask.sum() + 1e-5) / pred.shape[1]


def local_normalize(images: torch.Tensor, window: int, eps: float = 1e-6) -> torch.Tensor:
    """Each pixel minus the mean of the ``window`` x ``window`` square centred on it, divided by
    the square's standard deviation (unbiased; ``sqrt(var + eps)``), per channel. Squares at the
    border hold only the pixels inside the image (the official SimMIM ``norm_targets``).

    Args:
        images: ``(B, C, H, W)``.
        window: odd side of the square in pixels.
    """
    if window < 3 or window % 2 == 0:
        raise ValueError(f"local_normalize needs an odd window of at least 3 pixels, got {window}")
    pad = window // 2
    ones = torch.ones_like(images[:1, :1])
    # avg_pool2d without the padding: the mean over the pixels inside the image; their count from a ones image
    count = torch.nn.functional.avg_pool2d(ones, window, stride=1, padding=pad, count_include_pad=True) * window**2
    mean = torch.nn.functional.avg_pool2d(images, window, stride=1, padding=pad, count_include_pad=False)
    mean_sq = torch.nn.functional.avg_pool2d(images.square(), window, stride=1, padding=pad, count_include_pad=False)
    var = ((mean_sq - mean.square()) * count / (count - 1)).clamp_min(0.0)
    return (images - mean) / (var + eps).sqrt()


def masked_mse(
    pred_patches: torch.Tensor,
    target_patches: torch.Tensor,
    mask: torch.Tensor,
    norm_pix: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """MAE loss.

    Args:
        pred_patches: ``(B, N, p²·C)`` predictions.
        target_patches: ``(B, N, p²·C)`` pixels (see :func:`patchify`).
        mask: ``(B, N)``, 1/True for hidden patches (the only ones that count).
        norm_pix: normalise each target patch by its mean and (unbiased) variance first.
        eps: added to the variance.
    Returns:
        scalar: mean over hidden patches of the per-patch mean squared error.
    """
    if pred_patches.shape != target_patches.shape:
        raise ValueError(
            f"prediction {tuple(pred_patches.shape)} and target {tuple(target_patches.shape)} differ in shape"
        )
    target = normalize_patches(target_patches, eps) if norm_pix else target_patches
    mask = mask.to(pred_patches.dtype)
    loss = (pred_patches - target).square().mean(dim=-1)  # (B, N)
    return (loss * mask).sum() / mask.sum().clamp_min(1)  # nothing masked: 0, not 0/0


def normalize_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the last dimension (MAE's ``norm_pix_loss`` target)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps) ** 0.5


def patchify(images: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, H, W)`` → ``(B, (H/p)·(W/p), p²·C)``, each patch flattened as (row, column, channel)."""
    b, c, h, w = images.shape
    if h % p or w % p:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {p}")
    x = images.reshape(b, c, h // p, p, w // p, p)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(patches: torch.Tensor, p: int, grid: tuple[int, int] | None = None, channels: int = 3) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, h*w, p²·C)`` → ``(B, C, h·p, w·p)`` (``grid`` default: square)."""
    b, n, d = patches.shape
    if grid is None:
        side = int(round(n**0.5))
        grid = (side, side)
    h, w = grid
    if h * w != n or d != p * p * channels:
        raise ValueError(f"patches {tuple(patches.shape)} do not fit a {h}x{w} grid of {p}x{p}x{channels} patches")
    x = patches.reshape(b, h, w, p, p, channels).permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
    return x.reshape(b, channels, h * p, w * p)
