"""Batched photometric augmentation of one view: colour jitter, random grayscale, Gaussian
blur, solarize — the BYOL / MoCo v3 recipe, on device, with per-sample parameters.

Images are float ``(B, C, H, W)`` in 0..255 (the random-resized crop's output); every op keeps
that range. Semantics are torchvision's tensor ops, written for a batch with one parameter per
image (``data.color_jitter`` etc. in :class:`convergent.config.DataConfig`):

* **colour jitter** (``ColorJitter(b, c, s, h)``, applied to an image with probability
  ``color_jitter_prob``): brightness multiplies by ``f ~ U[max(0, 1-b), 1+b]``; contrast blends
  with the mean of the image's grayscale, saturation with its per-pixel grayscale (factors
  drawn alike; ``blend(x, y, f) = clamp(f·x + (1-f)·y)``); hue adds ``U[-h, h]`` (of a full turn)
  to the hue in HSV. The four run in a random order per image, as torchvision's ``randperm``:
  the order is drawn as the argsort of four uniforms, and each of the four slots applies, to
  every image, the op its order puts there (``torch.where`` on the op's mask: 16 masked op
  evaluations per batch instead of a loop over images). An op whose strength is 0 is not run
  (torchvision: ``None``), so the others are exact. Grayscale images (1 channel) get brightness
  and contrast; saturation and hue leave them unchanged (as torchvision).
* **grayscale** with probability ``grayscale_prob``: ``0.2989 R + 0.587 G + 0.114 B``
  (torchvision's weights) copied to the 3 channels.
* **Gaussian blur** with probability ``blur_prob``: ``σ ~ U[blur_sigma]`` pixels, a separable
  kernel of :func:`blur_kernel_size` taps (10 % of the image side, made odd, at least 3: BYOL's
  23 at 224 px, SimCLR's rule), reflect padding (torchvision's ``GaussianBlur``). MoCo v3's
  official code blurs with PIL's ``GaussianBlur(radius=σ)`` (no kernel size); at 224 px the 23
  taps span ±5.5 σ at σ = 2, the same blur.
* **solarize** with probability ``solarize_prob``: values ``>= 128`` become ``255 - x`` (PIL's
  ``ImageOps.solarize(img, 128)``, as BYOL / MoCo v3).

Unlike PIL pipelines nothing is rounded to uint8 between ops (values stay continuous).

**Randomness.** :meth:`ViewAugment.draw` takes every random number from the run's
``torch.Generator``: a fixed amount per batch for a given config (an op with probability 0 draws
nothing, so a run without photometric augmentation draws exactly what it drew before), never
depending on the outcome — so a resumed run continues exactly.

**Why not kornia.** kornia's augmentations (``kornia.augmentation``) draw their parameters with
``torch.distributions`` samplers from the global RNG; their ``forward`` takes no generator. Driving
them from the run's generator would mean reseeding the global RNG per call (shared with masks and
dropout, so resume would no longer be exact), and kornia would become a dependency for six short
tensor functions. So the ops are written here, each tested against a per-image reference.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
"""ITU-R 601 luma weights of torchvision's ``rgb_to_grayscale``."""
SOLARIZE_THRESHOLD = 128.0
"""Of 0..255: PIL's ``ImageOps.solarize(img, 128)`` in BYOL / MoCo v3."""
MAX = 255.0
_JITTER = ("brightness", "contrast", "saturation", "hue")


def per_sample(v: torch.Tensor) -> torch.Tensor:
    """``(B,)`` → ``(B, 1, 1, 1)`` to broadcast over images."""
    return v.view(-1, 1, 1, 1)


def blend(x: torch.Tensor, y: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``clamp(f·x + (1-f)·y, 0, 255)`` with ``factor`` ``(B,)``."""
    f = per_sample(factor)
    return (f * x + (1 - f) * y).clamp(0, MAX)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma ``(B, 1, H, W)`` of RGB ``x`` ``(B, 3, H, W)``; a 1-channel ``x`` is its own."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (x * per_sample(factor)).clamp(0, MAX)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return blend(x, mean, factor)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    return blend(x, grayscale(x), factor)


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Hue in [0, 1), saturation in [0, 1], value (0..255), each ``(B, H, W)``, of RGB ``x``."""
    r, g, b = x.unbind(1)
    v = x.amax(dim=1)
    chroma = v - x.amin(dim=1)
    grey = chroma == 0
    c = torch.where(grey, torch.ones_like(chroma), chroma)  # no division by zero; hue 0 there
    # sector of the colour wheel by which channel is the max (r first, then g, as colorsys)
    h = torch.where(v == r, (g - b) / c, torch.where(v == g, 2 + (b - r) / c, 4 + (r - g) / c))
    h = torch.where(grey, torch.zeros_like(h), torch.remainder(h / 6, 1.0))
    s = torch.where(v > 0, chroma / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    return h, s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`rgb_to_hsv`: ``(B, 3, H, W)``. Channel n of (R, G, B) is
    ``v - v·s·clamp(min(k, 4-k), 0, 1)`` with ``k = (n + 6h) mod 6``, n = 5, 3, 1."""
    n = torch.tensor([5.0, 3.0, 1.0], device=h.device, dtype=h.dtype).view(1, 3, 1, 1)
    k = torch.remainder(n + 6 * h.unsqueeze(1), 6)  # (B, 3, H, W)
    ramp = torch.minimum(k, 4 - k).clamp(0, 1)
    return v.unsqueeze(1) * (1 - s.unsqueeze(1) * ramp)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` ``(B,)`` of a full turn (torchvision: in [-0.5, 0.5])."""
    if x.shape[1] == 1:
        return x
    h, s, v = rgb_to_hsv(x)
    h = torch.remainder(h + shift.view(-1, 1, 1), 1.0)
    return hsv_to_rgb(h, s, v).clamp(0, MAX)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """Luma copied to every channel: ``(B, C, H, W)``."""
    return grayscale(x).expand_as(x)


def blur_kernel_size(side: int) -> int:
    """Taps of the blur kernel for images ``side`` pixels wide: 10 % of the side, made odd (by
    adding one to an even count), at least 3 — 23 at 224 px (BYOL, MoCo v3), 3 at 32 px."""
    k = int(0.1 * side)
    return max(3, k + 1 - k % 2)


def gaussian_kernels(sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised 1-D Gaussian kernels ``(B, size)`` (odd ``size``) for ``sigma`` ``(B,)``."""
    t = torch.arange(size, device=sigma.device, dtype=sigma.dtype) - size // 2  # (size,)
    w = torch.exp(-0.5 * (t / sigma[:, None]) ** 2)
    return w / w.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, size: int) -> torch.Tensor:
    """Blur each image of ``x`` ``(B, C, H, W)`` with its own ``sigma`` ``(B,)``: a separable
    ``size``-tap kernel, reflect padding, as one grouped convolution per axis."""
    B, C, H, W = x.shape
    w = gaussian_kernels(sigma.to(x.dtype), size).repeat_interleave(C, dim=0)  # (B*C, size)
    r = size // 2
    y = F.pad(x.reshape(1, B * C, H, W), (r, r, r, r), mode="reflect")
    y = F.conv2d(y, w.view(B * C, 1, 1, size), groups=B * C)  # along W
    y = F.conv2d(y, w.view(B * C, 1, size, 1), groups=B * C)  # along H
    return y.view(B, C, H, W)


def solarize(x: torch.Tensor, threshold: float = SOLARIZE_THRESHOLD) -> torch.Tensor:
    return torch.where(x >= threshold, MAX - x, x)


_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


@dataclass(frozen=True)
class ViewAugment:
    """The photometric augmentation of one view (see the module docstring). Defaults: none."""

    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    color_jitter_prob: float = 0.0
    grayscale_prob: float = 0.0
    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_prob: float = 0.0

    def __post_init__(self):
        j = tuple(self.color_jitter)
        if len(j) != 4 or min(j) < 0 or j[3] > 0.5:
            raise ValueError(
                f"data.color_jitter (brightness, contrast, saturation, hue) must be 4 values >= 0 with hue in "
                f"[0, 0.5], got {list(j)}"
            )
        for name in ("color_jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"data.{name} must be in [0, 1], got {p}")
        lo, hi = self.blur_sigma
        if not 0 < lo <= hi:
            raise ValueError(f"data.blur_sigma must be [low, high] with 0 < low <= high, got {[lo, hi]}")

    @property
    def jitter_on(self) -> bool:
        return self.color_jitter_prob > 0 and max(self.color_jitter) > 0

    @property
    def active(self) -> bool:
        """Whether this view changes any image (and draws any random number)."""
        return self.jitter_on or self.grayscale_prob > 0 or self.blur_prob > 0 or self.solarize_prob > 0

    def draw(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Per-image parameters for ``n`` images, all from ``generator`` (on its device), a
        fixed number of draws for this config: ``jitter`` (n,) bool, ``order`` (n, 4) the op in
        each slot (0 brightness .. 3 hue), ``factors`` (n, 4) (hue: the shift), ``gray``,
        ``blur``, ``solarize`` (n,) bool, ``sigma`` (n,)."""
        device = generator.device if generator is not None else torch.device("cpu")

        def rand(*shape):
            return torch.rand(*shape, generator=generator, device=device)

        out = {}
        if self.jitter_on:
            out["jitter"] = rand(n) < self.color_jitter_prob
            out["order"] = rand(n, 4).argsort(dim=1)  # a uniform random permutation per image
            b, c, s, h = self.color_jitter
            lo = torch.tensor([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h], device=device)
            hi = torch.tensor([1 + b, 1 + c, 1 + s, h], device=device)
            out["factors"] = lo + (hi - lo) * rand(n, 4)
        if self.grayscale_prob > 0:
            out["gray"] = rand(n) < self.grayscale_prob
        if self.blur_prob > 0:
            out["blur"] = rand(n) < self.blur_prob
            lo, hi = self.blur_sigma
            out["sigma"] = lo + (hi - lo) * rand(n)
        if self.solarize_prob > 0:
            out["solarize"] = rand(n) < self.solarize_prob
        return out

    def apply(self, x: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Augment float ``x`` ``(B, C, H, W)`` in 0..255 with parameters from :meth:`draw`."""
        if self.active and x.shape[1] not in (1, 3):
            raise ValueError(f"colour augmentation needs RGB or grayscale images, got {x.shape[1]} channels")
        params = {k: v.to(x.device) for k, v in params.items()}
        if "jitter" in params:
            x = self._jitter(x, params["jitter"], params["order"], params["factors"])
        if "gray" in params:
            x = torch.where(per_sample(params["gray"]), to_grayscale(x), x)
        if "blur" in params:
            blurred = gaussian_blur(x, params["sigma"], blur_kernel_size(min(x.shape[-2:])))
            x = torch.where(per_sample(params["blur"]), blurred, x)
        if "solarize" in params:
            x = torch.where(per_sample(params["solarize"]), solarize(x), x)
        return x

    def _jitter(self, x: torch.Tensor, on: torch.Tensor, order: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
        """Each jittered image gets its ops in its own order: in slot ``s``, the images whose op
        ``s`` is ``k`` are gathered and only they run op ``k`` (4 ops per image, not 4 per slot)."""
        used = [k for k in range(4) if self.color_jitter[k] > 0]  # a strength of 0: the op is not run
        x = x.clone()
        for slot in range(4):
            for k in used:
                rows = (on & (order[:, slot] == k)).nonzero().squeeze(1)  # (n,) images running op k now
                if rows.numel():
                    x[rows] = _OPS[k](x[rows], factors[rows, k].to(x.dtype))
        return x

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw and apply (nothing is drawn when the view has no photometric augmentation)."""
        if not self.active:
            return x
        return self.apply(x, self.draw(x.shape[0], generator))


def view_augments(cfg) -> tuple[ViewAugment, ...]:
    """One :class:`ViewAugment` per view of a :class:`~convergent.config.DataConfig`: view ``v``
    takes element ``v`` of each per-view tuple (its last element for further views)."""
    per_view = {k: tuple(getattr(cfg, k)) for k in ("color_jitter_prob", "grayscale_prob", "blur_prob", "solarize_prob")}
    for k, values in per_view.items():
        if not values:
            raise ValueError(f"data.{k} needs at least one value (one probability per view; the last repeats)")
    n = max(len(v) for v in per_view.values())
    return tuple(
        ViewAugment(color_jitter=tuple(cfg.color_jitter), blur_sigma=tuple(cfg.blur_sigma),
                    **{k: float(v[min(i, len(v) - 1)]) for k, v in per_view.items()})
        for i in range(n)
    )  # fmt: skip
