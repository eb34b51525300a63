"""Pictures a person looks at: reconstructions (original | masked | prediction) and the loss curve."""

import json
from pathlib import Path

import matplotlib
import torch
from matplotlib import pyplot as plt


def _pyplot():
    """pyplot drawing into files (the Agg backend), never into a window."""
    matplotlib.use("Agg")
    return plt


def save_reconstructions(
    images: torch.Tensor, mask_pixels: torch.Tensor, prediction: torch.Tensor, path: str | Path, title: str = ""
) -> Path:
    """One row per image: original, masked input (hidden pixels grey), prediction with the
    visible pixels pasted back. All inputs are in [0, 1]: images/prediction (B, C, H, W),
    mask_pixels (B, 1, H, W) with 1 = hidden."""
    plt = _pyplot()
    images, prediction = images.clamp(0, 1).cpu(), prediction.clamp(0, 1).cpu()
    mask = mask_pixels.float().cpu()
    masked = images * (1 - mask) + 0.5 * mask
    pasted = images * (1 - mask) + prediction * mask
    n = images.shape[0]
    fig, axes = plt.subplots(n, 3, figsize=(4.5, 1.5 * n), squeeze=False)
    for i in range(n):
        for j, (img, name) in enumerate(((images, "original"), (masked, "masked"), (pasted, "prediction"))):
            ax = axes[i][j]
            ax.imshow(img[i].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if img.shape[1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_metrics(path: str | Path) -> list[dict]:
    """The JSON lines of a metrics file (a torn last line from a kill is ignored)."""
    rows = []
    path = Path(path)
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def save_loss_plot(metrics_file: str | Path, path: str | Path, title: str = "") -> Path | None:
    """Training loss against step from ``metrics.jsonl``; None when there is nothing to plot."""
    rows = [r for r in read_metrics(metrics_file) if "loss" in r and "step" in r]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
