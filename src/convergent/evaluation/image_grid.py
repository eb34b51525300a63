"""Pictures of images a person looks at: a grid of generated images as one PNG, and images with
their captions (generated and reference)."""

import math
import textwrap
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib import pyplot as plt
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


def save_captioned_images(images: torch.Tensor, captions: list[str], references: list[str], path: str | Path,
                          title: str = "") -> Path:  # fmt: skip
    """Images ``(N, C, H, W)`` in [0, 1], each above its generated caption (bold) and its first
    reference caption (grey), four per row, as one PNG."""
    matplotlib.use("Agg")
    n = len(images)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    def printable(text: str) -> str:  # an untrained model's byte-level tokens may decode to control characters
        return "".join(c if c.isprintable() else "?" for c in text)

    for i, (img, cap, ref) in enumerate(zip(images, captions, references)):
        cap, ref = printable(cap), printable(ref)
        ax = axes.flat[i]
        ax.imshow(img.clamp(0, 1).permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if img.shape[0] == 1 else None)
        ax.set_title(textwrap.fill(cap, 28), fontsize=8, fontweight="bold")
        ax.text(0.5, -0.06, textwrap.fill(ref, 32), fontsize=7, color="#777777", ha="center", va="top",
                transform=ax.transAxes)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
