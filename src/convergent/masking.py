"""Mask generators for masked image and language modelling, and the AvgDist masking metric.

* :class:`SimMIMMaskGenerator` — SimMIM (Xie et al., 2022): a fixed number of random
  ``mask_patch_size`` squares, returned at the model's patch resolution;
* :func:`random_masking` — MAE (He et al., 2022): per-sample shuffle by argsort of noise,
  the first ``int(N * (1 - ratio))`` patches are kept (exactly HF ``ViTMAEEmbeddings``);
* :func:`block_masking` — BEiT (Bao et al., 2022): random rectangles of at least
  ``min_num_patches`` patches and aspect ratio in [0.3, 1/0.3] until the target count;
* :func:`token_masking` / :func:`whole_word_masking` — BERT (Devlin et al., 2019): an exact
  count of each row's :func:`token_candidates`, as single tokens or whole words;
* :func:`avg_dist` — SimMIM's AvgDist: mean Euclidean distance (pixels) from each masked
  pixel to its nearest visible pixel, computed with an exact distance transform.

Masks are bool, True = hidden. Random draws use ``generator`` when given, otherwise the
global torch RNG (so a seeded, checkpointed RNG state makes training reproducible).
Torch only.
"""

import math

import torch


def _square(size, name: str) -> int:
    if isinstance(size, (tuple, list)):
        if len(size) != 2 or size[0] != size[1]:
            raise ValueError(f"{name} must be square, got {tuple(size)}")
        size = size[0]
    return int(size)


class SimMIMMaskGenerator:
    """SimMIM's random square masking (the official ``MaskGenerator``, batched).

    ``ceil(mask_ratio * (input_size / mask_patch_size)²)`` of the mask squares are hidden in
    every sample; each square covers ``(mask_patch_size / model_patch_size)²`` model patches.

    Args:
        input_size: image side in pixels.
        mask_patch_size: side of a masked square in pixels (a divisor of ``input_size``).
        model_patch_size: the backbone's patch side in pixels (a divisor of ``mask_patch_size``).
        mask_ratio: fraction of squares hidden, in [0, 1].
    """

    def __init__(self, input_size: int, mask_patch_size: int = 32, model_patch_size: int = 4, mask_ratio: float = 0.6):
        input_size = _square(input_size, "input_size")
        if input_size % mask_patch_size:
            raise ValueError(f"input_size {input_size} is not a multiple of mask_patch_size {mask_patch_size}")
        if mask_patch_size % model_patch_size:
            raise ValueError(
                f"mask_patch_size {mask_patch_size} is not a multiple of model_patch_size {model_patch_size}"
            )
        if not 0.0 <= mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1], got {mask_ratio}")
        self.input_size = input_size
        self.mask_patch_size = mask_patch_size
        self.model_patch_size = model_patch_size
        self.mask_ratio = mask_ratio
        self.rand_size = input_size // mask_patch_size  # squares per side
        self.scale = mask_patch_size // model_patch_size  # model patches per square side
        self.token_count = self.rand_size**2
        self.mask_count = int(math.ceil(self.token_count * mask_ratio))

    @property
    def grid(self) -> int:
        """Model patches per side of the returned mask."""
        return self.rand_size * self.scale

    def __call__(
        self, batch_size: int, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """``(B, (input_size / model_patch_size)²)`` bool masks in row-major patch order."""
        draw_on = generator.device if generator is not None else device
        noise = torch.rand(batch_size, self.token_count, generator=generator, device=draw_on)
        chosen = noise.argsort(dim=1)[:, : self.mask_count]  # a random subset per sample
        mask = torch.zeros(batch_size, self.token_count, dtype=torch.bool, device=noise.device)
        mask.scatter_(1, chosen, True)
        mask = mask.view(batch_size, self.rand_size, self.rand_size)
        mask = mask.repeat_interleave(self.scale, 1).repeat_interleave(self.scale, 2)  # (B, G, G)
        return mask.flatten(1).to(device if device is not None else noise.device)


def _gen_device(generator: torch.Generator | None) -> torch.device | None:
    return generator.device if generator is not None else None


def random_masking(
    batch: int,
    num_patches: int,
    mask_ratio: float,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MAE masking: shuffle patches by ``argsort(noise)``, keep the first ``int(N * (1 - r))``.

    Args:
        batch: batch size B.
        num_patches: patches per sample N.
        mask_ratio: fraction hidden, in [0, 1).
        generator: RNG for the noise (global RNG when None); ignored when ``noise`` is given.
        noise: ``(B, N)`` float noise for exact reproduction (HF ViTMAE's ``noise``).
        device: where to draw the noise (default: ``noise``'s device or CPU).

    Returns:
        ``ids_keep`` ``(B, K)`` indices of the kept patches (in shuffled order),
        ``mask`` ``(B, N)`` bool, True = hidden, and ``ids_restore`` ``(B, N)``, the inverse
        permutation (position of each patch in the shuffled order).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if noise is None:
        noise = torch.rand(batch, num_patches, generator=generator, device=_gen_device(generator) or device)
    elif noise.shape != (batch, num_patches):
        raise ValueError(f"noise must have shape (B={batch}, N={num_patches}), got {tuple(noise.shape)}")
    len_keep = int(num_patches * (1 - mask_ratio))
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]  # (B, K)
    shuffled = torch.arange(num_patches, device=noise.device).expand(batch, -1) >= len_keep  # (B, N) in shuffled order
    mask = torch.gather(shuffled, 1, ids_restore)  # back to patch order
    return ids_keep, mask, ids_restore


def block_masking(
    batch: int,
    grid: int | tuple[int, int],
    mask_ratio: float,
    min_num_patches: int = 16,
    max_num_patches: int | None = None,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """BEiT blockwise masking (``MaskingGenerator`` of the BEiT code), all samples at once.

    Each sample adds rectangles of area ``U(min_num_patches, remaining)`` and log-uniform
    aspect ratio in ``[min_aspect, max_aspect]`` while they cover at least one new patch and
    no more than the remaining count; it stops at the target ``round(mask_ratio * N)`` or
    after 10 failed attempts in a row (so it may fall a few patches short, as BEiT's does).
    The samples take their attempts in lockstep, one batched draw per attempt (no Python loop
    over samples); every attempt adds a patch or counts a failure, so the loop is bounded.

    Returns:
        ``(B, H*W)`` bool masks, True = hidden, on the generator's device (CPU without one).
    """
    h, w = (grid, grid) if isinstance(grid, int) else tuple(grid)
    target = int(round(mask_ratio * h * w))
    max_num_patches = target if max_num_patches is None else max_num_patches
    max_aspect = max_aspect or 1.0 / min_aspect
    lo, hi = math.log(min_aspect), math.log(max_aspect)
    dev = _gen_device(generator)
    f64 = dict(dtype=torch.float64, device=dev)
    masks = torch.zeros(batch, h, w, dtype=torch.bool, device=dev)
    rows = torch.arange(h, device=dev).view(1, h, 1)
    cols = torch.arange(w, device=dev).view(1, 1, w)
    count = torch.zeros(batch, dtype=torch.long, device=dev)
    fails = torch.zeros_like(count)  # failed attempts in a row
    active = count < target  # (B,)
    while bool(active.any()):  # CPU unless the generator lives elsewhere
        max_new = (target - count).clamp(max=max_num_patches)  # (B,)
        u = torch.rand(batch, 4, generator=generator, **f64)  # area, aspect, top, left
        area = min_num_patches + (max_new - min_num_patches) * u[:, 0]
        aspect = torch.exp(lo + (hi - lo) * u[:, 1])
        bh = torch.sqrt(area * aspect).round().long()  # (B,) half to even, as Python's round
        bw = torch.sqrt(area / aspect).round().long()
        fits = (bh < h) & (bw < w)
        top = (u[:, 2] * (h - bh + 1).clamp(min=1)).long().view(-1, 1, 1)  # uniform in [0, h - bh]
        left = (u[:, 3] * (w - bw + 1).clamp(min=1)).long().view(-1, 1, 1)
        rect = (rows >= top) & (rows < top + bh.view(-1, 1, 1)) & (cols >= left) & (cols < left + bw.view(-1, 1, 1))
        new = (rect & ~masks).sum(dim=(1, 2))  # (B,) patches the rectangle would add
        ok = active & fits & (new > 0) & (new <= max_new)
        masks |= rect & ok.view(-1, 1, 1)
        count += torch.where(ok, new, 0)
        fails = torch.where(ok, 0, fails + 1)
        active &= (count < target) & (fails < 10)
    return masks.flatten(1)


# --- AvgDist ------------------------------------------------------------------------------------


def mask_to_pixels(mask: torch.Tensor, grid: int | tuple[int, int], patch: int) -> torch.Tensor:
    """Patch mask ``(B, Gh*Gw)`` (or ``(Gh*Gw,)``) → pixel mask ``(B, Gh*patch, Gw*patch)``
    (or ``(H, W)``), each patch repeated over its ``patch × patch`` pixels."""
    gh, gw = (grid, grid) if isinstance(grid, int) else tuple(grid)
    if mask.shape[-1] != gh * gw:
        raise ValueError(f"mask has {mask.shape[-1]} patches, expected a {gh}x{gw} grid")
    m = mask.reshape(*mask.shape[:-1], gh, gw)
    return m.repeat_interleave(patch, -2).repeat_interleave(patch, -1)


def distance_to_visible(mask_pixels: torch.Tensor) -> torch.Tensor:
    """Exact Euclidean distance from every pixel to the nearest visible (False) pixel.

    Separable exact EDT: first the distance along each row, ``g(r, j)`` (running max / min
    of visible column indices), then ``D²(i, j) = min_r (i - r)² + g(r, j)²`` by brute force
    over rows, ``O(H²·W)`` per image (11 M terms at 224²). Visible pixels get 0; an image with no visible pixel
    gets ``inf`` everywhere.

    Args:
        mask_pixels: ``(H, W)`` or ``(B, H, W)`` bool, True = masked.
    Returns:
        float32 distances of the same shape.
    """
    single = mask_pixels.ndim == 2
    m = mask_pixels[None] if single else mask_pixels
    if m.ndim != 3:
        raise ValueError(f"expected a (H, W) or (B, H, W) mask, got {tuple(mask_pixels.shape)}")
    m = m.bool()
    out = torch.stack([_edt(x) for x in m])
    return out[0] if single else out


def _edt(mask: torch.Tensor) -> torch.Tensor:
    h, w = mask.shape
    big = float(2 * (h + w))  # farther than any in-image distance: "no visible pixel in this row"
    cols = torch.arange(w, device=mask.device, dtype=torch.float32).expand(h, w)
    # 1-D distance along each row to the nearest visible pixel on the left / right: O(H·W)
    left = torch.where(mask, -big, cols).cummax(dim=1).values  # column of the last visible pixel <= j
    right = torch.where(mask, big + w, cols).flip(1).cummin(dim=1).values.flip(1)  # first visible >= j
    g = torch.minimum(cols - left, right - cols).clamp(max=big)  # (H, W)
    # combine over rows: D²(i, j) = min_r (i - r)² + g(r, j)²,  (H_i, H_r, W) -> (H, W)
    rows = torch.arange(h, device=mask.device, dtype=torch.float32)
    dy2 = (rows[:, None] - rows[None, :]).square()  # (H_i, H_r)
    g2 = g.square()
    chunk = max(1, 2**20 // (h * w))  # rows per step: temporaries of ~1 M floats stay in cache
    d = torch.cat([(dy2[i : i + chunk, :, None] + g2[None]).amin(dim=1) for i in range(0, h, chunk)]).sqrt()
    return torch.where(d >= big, torch.full_like(d, float("inf")), d)


def avg_dist(mask_pixels: torch.Tensor) -> torch.Tensor:
    """SimMIM's AvgDist: mean distance (pixels) from the masked pixels to the nearest visible one.

    Args:
        mask_pixels: ``(H, W)`` or ``(B, H, W)`` bool at pixel resolution, True = masked.
    Returns:
        a scalar for ``(H, W)``, ``(B,)`` for a batch. ``nan`` where nothing is masked,
        ``inf`` where nothing is visible.
    """
    d = distance_to_visible(mask_pixels)
    m = mask_pixels.bool()
    total = torch.where(m, d, torch.zeros_like(d)).sum(dim=(-2, -1))
    count = m.sum(dim=(-2, -1))
    return total / count  # 0/0 -> nan


# --- tokens (BERT) ------------------------------------------------------------------------------


def token_candidates(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    special_tokens_mask: torch.Tensor | None = None,
    special_ids: tuple[int, ...] = (),
) -> torch.Tensor:
    """``(B, L)`` bool: the tokens of ``input_ids`` ``(B, L)`` that BERT-style masking may
    hide: real (``attention_mask``, 1 = real; all when None) and not special
    (``special_tokens_mask``, True = special; without it, ids among ``special_ids``)."""
    real = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if special_tokens_mask is not None:
        return real & ~special_tokens_mask.bool()
    for i in special_ids:  # a few ids, compared as scalars: no id tensor copied to the device (a sync) per step
        real = real & (input_ids != i)
    return real


def token_masking(
    candidates: torch.Tensor, mask_ratio: float = 0.15, generator: torch.Generator | None = None
) -> torch.Tensor:
    """BERT token masking: hide ``round(mask_ratio * n)`` (at least one) uniformly chosen
    positions among each row's ``n`` candidates.

    Args:
        candidates: ``(B, L)`` bool, True where a token may be hidden (real, non-special tokens).
        mask_ratio: fraction of candidates hidden, in (0, 1].
        generator: RNG (global RNG when None).

    Returns:
        ``(B, L)`` bool, True = hidden; rows without candidates hide nothing.
    """
    candidates = candidates.bool()
    k = _row_budget(candidates, mask_ratio)  # (B, 1) hidden per row
    noise = _row_noise(candidates, generator).masked_fill(~candidates, 2.0)  # non-candidates sort last
    rank = noise.argsort(1).argsort(1)  # (B, L) position of each token in its row's order
    return rank < k


def whole_word_masking(
    word_ids: torch.Tensor, candidates: torch.Tensor, mask_ratio: float = 0.15, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Whole-word masking (BERT's later release; ViLT): words, taken in random order, are
    hidden with all their pieces while they fit in the budget ``round(mask_ratio * n)`` of a
    row's ``n`` candidate tokens (the first word always; Google's ``create_pretraining_data``
    goes on trying shorter words after one that does not fit, this stops there).

    Args:
        word_ids: ``(B, L)`` word index of each token; the pieces of a word are adjacent and
            share the id (special tokens: -1; only changes of id matter).
        candidates: ``(B, L)`` bool, tokens that may be hidden (real, non-special).
        mask_ratio: fraction of the candidate tokens hidden, in (0, 1].
        generator: RNG (global RNG when None).

    Returns:
        ``(B, L)`` bool, True = hidden; never outside ``candidates``.
    """
    candidates = candidates.bool()
    budget = _row_budget(candidates, mask_ratio)  # (B, 1) tokens per row
    w = word_ids.masked_fill(~candidates, -1)
    before = torch.cat([torch.full_like(w[:, :1], -2), w[:, :-1]], dim=1)
    start = candidates & (w != before)  # (B, L) the first piece of each candidate word
    word = (start.long().cumsum(1) - 1).clamp(min=0)  # (B, L) each token's word, 0..L-1
    pieces = torch.zeros_like(word).scatter_add_(1, word, candidates.long())  # (B, L) pieces per word
    order = _row_noise(word, generator).masked_fill(pieces == 0, 2.0).argsort(1)  # words in random order, empty last
    size = pieces.gather(1, order)
    take = (size.cumsum(1) <= budget) & (size > 0)
    take[:, 0] |= size[:, 0] > 0  # at least one word in a row with candidates
    chosen_words = torch.zeros_like(take).scatter_(1, order, take)  # (B, L) by word index
    return chosen_words.gather(1, word) & candidates


def _row_budget(candidates: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """``(B, 1)`` int64: ``round(mask_ratio * n)``, at least 1, of each row's ``n`` candidates
    (0 for a row without any)."""
    if not 0.0 < mask_ratio <= 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1], got {mask_ratio}")
    n = candidates.sum(1, keepdim=True)  # (B, 1)
    return torch.where(n > 0, (n.float() * mask_ratio).round().clamp(min=1), 0).long()


def _row_noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Uniform noise of ``like``'s shape, drawn on the generator's device (``like``'s without
    one) and returned on ``like``'s device."""
    noise = torch.rand(like.shape, generator=generator, device=_gen_device(generator) or like.device)
    return noise.to(like.device)
