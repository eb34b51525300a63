"""A grid of images as one PNG (generated images, a person looks at them)."""

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def save_image_grid(images: torch.Tensor, path: str | Path, scale: int = 4) -> Path:
    """Images ``(N, C, H, W)`` in [0, 1] as one PNG grid (nearest-neighbour upscaled ``scale``x)."""
    n, c, h, w = images.shape
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    grid = torch.ones(c, rows * (h + 2), cols * (w + 2))
    for i, img in enumerate(images):
        r, k = divmod(i, cols)
        grid[:, r * (h + 2) + 1 : r * (h + 2) + 1 + h, k * (w + 2) + 1 : k * (w + 2) + 1 + w] = img
    arr = (grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    picture = Image.fromarray(arr.squeeze(-1) if c == 1 else np.ascontiguousarray(arr))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path)
    return path
