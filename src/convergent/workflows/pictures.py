"""Pictures a person looks at: reconstructions (original | masked | prediction), the loss curve,
and a scaling sweep's curves."""

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
    mask_pixels (B, 1, H, W) with 1 = hidden. A task that hides every pixel (an autoencoder)
    gets two columns: original | reconstruction."""
    plt = _pyplot()
    images, prediction = images.clamp(0, 1).cpu(), prediction.clamp(0, 1).cpu()
    mask = mask_pixels.float().cpu()
    masked = images * (1 - mask) + 0.5 * mask
    pasted = images * (1 - mask) + prediction * mask
    columns = [(images, "original"), (masked, "masked"), (pasted, "prediction")]
    if bool((mask == 1).all()):
        columns = [(images, "original"), (pasted, "reconstruction")]
    n = images.shape[0]
    fig, axes = plt.subplots(n, len(columns), figsize=(1.5 * len(columns), 1.5 * n), squeeze=False)
    for i in range(n):
        for j, (img, name) in enumerate(columns):
            ax = axes[i][j]
            ax.imshow(img[i].permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray" if img.shape[1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=8)
    return _save(plt, fig, path, title, title_size=8, dpi=120)


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
    return _save(plt, fig, path, dpi=120)


def save_scaling_plot(points: list[dict], frontier: list[str], rho: float | None, path: str | Path,
                      title: str = "") -> Path:  # fmt: skip
    """A sweep's ``scaling.png``, three panels of its measured ``points`` (records of
    ``convergent sweep``): held-out loss against steps, one line per model and data fraction;
    against training FLOPs, with the Pareto frontier (``frontier``: point keys) drawn through;
    downstream score against held-out loss, with Spearman's ``rho`` in the title."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    size = {p["variant"]: p["params"] for p in points}
    variants = sorted(size, key=size.get)  # smallest model first
    fractions = sorted({p["fraction"] for p in points})
    colour = {v: plt.get_cmap("viridis")(i / max(len(variants) - 1, 1)) for i, v in enumerate(variants)}
    styles = ("-", "--", "-.", ":")
    ax = axes[0]
    for v in variants:
        for j, f in enumerate(fractions):
            run = sorted((p for p in points if p["variant"] == v and p["fraction"] == f), key=lambda p: p["steps"])
            if run:
                ax.plot([p["steps"] for p in run], [p["val_loss"] for p in run], styles[j % len(styles)], marker="o",
                        color=colour[v], ms=3, lw=1, label=f"{v}, {f:g} of data")  # fmt: skip
    _axes(ax, "steps", "held-out loss", "loss vs steps", log_x=True)
    if points:
        ax.legend(fontsize=6, ncol=max(1, len(variants) // 2))
    ax = axes[1]
    for v in variants:
        own = [p for p in points if p["variant"] == v]
        ax.scatter([p["train_flops"] for p in own], [p["val_loss"] for p in own], s=12, color=colour[v], label=v)
    on = sorted((p for p in points if p["key"] in set(frontier)), key=lambda p: p["train_flops"])
    if on:
        ax.plot([p["train_flops"] for p in on], [p["val_loss"] for p in on], "k-", lw=1, drawstyle="steps-post",
                label="Pareto frontier")
        ax.legend(fontsize=7)
    _axes(ax, "training FLOPs", "held-out loss", "loss vs compute", log_x=True)
    ax = axes[2]
    scored = [p for p in points if p.get("score") is not None]
    for v in variants:
        own = [p for p in scored if p["variant"] == v]
        ax.scatter([p["val_loss"] for p in own], [p["score"] for p in own], s=12, color=colour[v], label=v)
    name = scored[0]["score_name"] if scored else "no downstream score"
    shown = f"Spearman rho {rho:.3f}" if rho is not None else "Spearman rho -"
    _axes(ax, "held-out loss", name, f"{name} vs loss ({shown}, {len(scored)} points)")
    return _save(plt, fig, path, title, title_size=10, dpi=110)


def _save(plt, fig, path: str | Path, title: str = "", title_size: int = 10, dpi: int = 120) -> Path:
    """Title (when given), tight layout, write ``path``, close the figure; returns the path."""
    if title:
        fig.suptitle(title, fontsize=title_size)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _axes(ax, x: str, y: str, title: str, log_x: bool = False) -> None:
    if log_x:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
