"""Batched augmentation on device: no per-image Python loops.

A transform takes a uint8 batch ``(B, C, H, W)`` (on any device) and an optional
``torch.Generator`` and returns float32 ``(B, C, S, S)`` normalised with the config's
mean/std. All randomness is drawn from the generator (on the generator's device, a fixed
amount per batch whatever the outcome), so a run is reproducible and resumes exactly when the
generator state is saved.

Train: random resized crop (per-image boxes drawn vectorised, torchvision's rule: 10 tries of
area ~ U(scale) and log aspect ~ U(log ratio), first box that fits, else the centre crop at the
nearest allowed aspect) and horizontal flip with probability ``hflip``, all applied by one
``affine_grid`` + bilinear ``grid_sample`` (a flip is a negative x scale). Boxes are continuous
(not rounded to pixels). Then, per view, the photometric augmentation of
:mod:`convergent.data.color` (colour jitter, grayscale, blur, solarize; none by default, and then
nothing more is drawn, so such a run is unchanged). Eval: resize to ``S`` if needed, then
normalise.

Views: ``transform(images, generator, view=v)`` draws view ``v`` (0-based) of a two-view method;
each view draws its own crop and flip (same settings), the photometric settings are per view (MoCo v3 /
BYOL blur view 0 always and view 1 rarely, solarize only view 1).
"""

import math

import torch
import torch.nn.functional as F

from convergent.data.color import ViewAugment, view_augments
from convergent.data.protocol import IMAGE_KEYS

_ATTEMPTS = 10


def channel_stats(values, channels: int, what: str) -> list[float]:
    """``values`` as one float per channel (a single value, or all equal, is broadcast)."""
    values = [float(v) for v in (values if isinstance(values, (tuple, list)) else (values,))]
    if len(values) == channels:
        return values
    if len(values) == 1 or len(set(values)) == 1:
        return values[:1] * channels
    raise ValueError(f"data.{what} has {len(values)} values for images with {channels} channels")


def sample_boxes(n: int, height: int, width: int, scale, ratio, generator=None) -> torch.Tensor:
    """Random-resized-crop boxes ``(n, 4)`` = ``(x0, y0, w, h)`` in pixels (float32, on the
    generator's device), vectorised over images and tries."""
    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(n, _ATTEMPTS, 2, generator=generator, device=device)  # (n, tries, area|ratio)
    offset = torch.rand(n, 2, generator=generator, device=device)  # (n, x|y) in [0, 1)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])  # w / h
    w, h = (area * aspect).sqrt(), (area / aspect).sqrt()  # (n, tries)
    fits = (w <= width) & (h <= height)
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first try that fits (0 if none)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)  # (n,)
    # none fits: centre crop of the whole image at the nearest allowed aspect
    in_ratio = width / height
    fw, fh = float(width), float(height)
    if in_ratio < min(ratio):
        fh = width / min(ratio)
    elif in_ratio > max(ratio):
        fw = height * max(ratio)
    none = ~fits.any(dim=1)
    w, h = torch.where(none, fw, w), torch.where(none, fh, h)
    x0 = torch.where(none, (width - fw) / 2, offset[:, 0] * (width - w))
    y0 = torch.where(none, (height - fh) / 2, offset[:, 1] * (height - h))
    return torch.stack([x0, y0, w, h], dim=1)


def crop_flip(x: torch.Tensor, boxes: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Resample boxes ``(B, 4)`` of float ``x`` ``(B, C, H, W)`` to ``(B, C, size, size)``,
    mirrored where ``flip`` ``(B,)`` is true, with one bilinear ``grid_sample``."""
    B, C, H, W = x.shape
    boxes = boxes.to(device=x.device, dtype=torch.float32)
    x0, y0, w, h = boxes.unbind(1)
    # align_corners=False: normalised -1..1 spans pixel edges 0..W, so a box maps to
    # centre 2 * (x0 + w / 2) / W - 1 and half-extent w / W
    sx = (w / W) * torch.where(flip.to(x.device), -1.0, 1.0)
    sy = h / H
    cx, cy = 2 * (x0 + w / 2) / W - 1, 2 * (y0 + h / 2) / H - 1
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta, [B, C, size, size], align_corners=False)  # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class BatchTransform:
    """``(uint8 (B, C, H, W), generator, view) -> float32 (B, C, img_size, img_size)``, normalised.

    ``views``: the photometric augmentation of each view (:class:`~convergent.data.color.ViewAugment`;
    view ``v`` uses ``views[v]``, the last one for further views; empty: none)."""

    def __init__(self, img_size: int, mean, std, train: bool, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip: float = 0.0,
                 views: tuple[ViewAugment, ...] = ()):  # fmt: skip
        if train and not (0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1]):
            raise ValueError(
                f"data.scale {tuple(scale)} must satisfy 0 < lo <= hi <= 1 and data.ratio {tuple(ratio)} 0 < lo <= hi"
            )
        if not 0.0 <= hflip <= 1.0:
            raise ValueError(f"data.hflip must be a probability, got {hflip}")
        self.img_size, self.mean, self.std = img_size, mean, std
        self.train, self.scale, self.ratio, self.hflip = train, tuple(scale), tuple(ratio), hflip
        self.views = tuple(views)

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None, view: int = 0) -> torch.Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError(f"transform expects a uint8 batch (B, C, H, W), got {images.dtype} {tuple(images.shape)}")
        S = self.img_size
        x = images.float()  # (B, C, H, W), 0..255
        if x.shape[-2:] != (S, S):  # datasets deliver S already; otherwise antialiased resize first
            x = F.interpolate(x, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        if self.train:
            B = x.shape[0]
            boxes = sample_boxes(B, S, S, self.scale, self.ratio, generator)
            device = generator.device if generator is not None else torch.device("cpu")
            flip = torch.rand(B, generator=generator, device=device) < self.hflip
            x = crop_flip(x, boxes, flip, S)
            if view < 0:
                raise ValueError(f"view is a 0-based view index, got {view}")
            if self.views:
                x = self.views[min(view, len(self.views) - 1)](x, generator)
        return normalize(x, self.mean, self.std)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, for float ``x`` ``(B, C, H, W)`` in 0..255."""
    C = x.shape[1]
    m = torch.tensor(channel_stats(mean, C, "mean"), device=x.device).view(1, C, 1, 1)
    s = torch.tensor(channel_stats(std, C, "std"), device=x.device).view(1, C, 1, 1)
    return (x / 255 - m) / s


def build_transform(cfg, train: bool) -> BatchTransform:
    """The train or eval transform of a :class:`convergent.config.DataConfig`."""
    if not train:
        return BatchTransform(cfg.img_size, cfg.mean, cfg.std, train=False)
    return BatchTransform(cfg.img_size, cfg.mean, cfg.std, True, cfg.scale, cfg.ratio, cfg.hflip, view_augments(cfg))


def denormalize(x: torch.Tensor, cfg) -> torch.Tensor:
    """Undo the normalisation of ``x`` ``(B, C, H, W)``: float in [0, 1], for pictures."""
    C = x.shape[1]
    m = torch.tensor(channel_stats(cfg.mean, C, "mean"), device=x.device, dtype=x.dtype).view(1, C, 1, 1)
    s = torch.tensor(channel_stats(cfg.std, C, "std"), device=x.device, dtype=x.dtype).view(1, C, 1, 1)
    return (x * s + m).clamp(0, 1)


def transform_batch(batch: dict, transform, generator: torch.Generator, views: int = 1) -> dict:
    """``batch`` with its images made model inputs, as the Trainer makes them: ``image`` as view
    0, then ``image2`` ... ``imageN`` (``views = N``) as further views of the same images, drawn
    in that order from ``generator``; other images a dataset yields (``IMAGE_KEYS``: ViLT's false
    images) transformed alike. In place; returns ``batch``."""
    if "image" in batch:
        images = batch["image"]  # uint8
        batch["image"] = transform(images, generator)
        for v in range(2, views + 1):
            batch[f"image{v}"] = transform(images, generator, view=v - 1)
    for key in IMAGE_KEYS[1:]:
        if key in batch:
            batch[key] = transform(batch[key], generator)
    return batch
