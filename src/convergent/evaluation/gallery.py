"""A retrieval gallery a person looks at: text queries with the images a dual encoder (CLIP)
ranks first for them, as a PNG and as a self-contained HTML page (thumbnails embedded as
base64 PNGs). A retrieved image that is the caption's own is framed green."""

import base64
import html
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import pyplot as plt
from PIL import Image

from convergent.evaluation.retrieval import rank_of_target

GREEN, GREY = "#1a9c3a", "#bbbbbb"


def pick_queries(num_texts: int, queries: int | Sequence[int]) -> list[int]:
    """Text indices to show: ``queries`` itself when a sequence, else that many evenly spaced
    over all texts (deterministic, and spread over the images rather than the first few)."""
    if not isinstance(queries, int):
        picked = [int(q) for q in queries]
        if any(not 0 <= q < num_texts for q in picked):
            raise ValueError(f"query indices must lie in [0, {num_texts}), got {picked}")
        return picked
    if queries < 1:
        raise ValueError(f"queries must be >= 1, got {queries}")
    return sorted({int(q) for q in np.linspace(0, num_texts - 1, min(queries, num_texts)).round()})


def rank_images(
    image_emb: torch.Tensor, text_emb: torch.Tensor, image_of_text: torch.Tensor, picked: list[int], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For the texts ``picked``: ``(top (Q, k) image indices, their cosine similarities (Q, k),
    rank (Q,) of the caption's own image)`` (ranks as in :mod:`convergent.evaluation.retrieval`:
    ties count against it; equal scores are shown in index order)."""
    text = F.normalize(text_emb[picked].float(), dim=-1)  # (Q, D)
    sims = text @ F.normalize(image_emb.float().to(text.device), dim=-1).T  # (Q, N)
    order = sims.sort(dim=1, descending=True, stable=True).indices[:, :k]  # (Q, k)
    target = image_of_text[picked].long().to(sims.device)
    return order.cpu(), sims.gather(1, order).cpu(), rank_of_target(sims, target).cpu()


def _hwc(image) -> np.ndarray:
    """uint8 ``(C, H, W)`` → ``(H, W, C)`` numpy, or ``(H, W)`` for one channel."""
    x = torch.as_tensor(image).detach().cpu()
    if x.ndim != 3 or x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 (C, H, W) each, got {x.dtype} {tuple(x.shape)}")
    x = x.permute(1, 2, 0).numpy()
    return x[..., 0] if x.shape[-1] == 1 else x


def _save_png(images, captions, picked, top, sims, ranks, image_of_text, path: Path, title: str) -> Path:
    matplotlib.use("Agg")  # a file, never a window
    q, k = top.shape
    fig, axes = plt.subplots(q, k + 1, figsize=(1.3 * k + 2.6, 1.4 * q),
                             gridspec_kw={"width_ratios": [2.0] + [1.0] * k}, squeeze=False)  # fmt: skip
    for row, t in enumerate(picked):
        label = axes[row][0]
        label.axis("off")
        text = textwrap.fill(captions[t], 28, max_lines=4, placeholder=" …")
        label.text(0.0, 0.5, f"{text}\n(its image: #{int(ranks[row]) + 1})", fontsize=7, va="center", ha="left",
                   transform=label.transAxes)  # fmt: skip
        for col in range(k):
            ax = axes[row][col + 1]
            img = _hwc(images[int(top[row, col])])
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            right = int(top[row, col]) == int(image_of_text[t])
            for spine in ax.spines.values():
                spine.set_edgecolor(GREEN if right else GREY)
                spine.set_linewidth(4 if right else 1)
            ax.set_title(f"#{col + 1}  {float(sims[row, col]):.2f}", fontsize=6)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _png_base64(image) -> str:
    buf = io.BytesIO()
    Image.fromarray(_hwc(image)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _save_html(images, captions, picked, top, sims, ranks, image_of_text, path: Path, title: str) -> Path:
    cache: dict[int, str] = {}
    rows = []
    for row, t in enumerate(picked):
        cells = [f"<td class='q'>{html.escape(captions[t])}<br><small>its image: #{int(ranks[row]) + 1}</small></td>"]
        for col in range(top.shape[1]):
            i = int(top[row, col])
            src = cache.setdefault(i, _png_base64(images[i]))
            cls = "hit" if i == int(image_of_text[t]) else "miss"
            cells.append(f"<td><img class='{cls}' src='data:image/png;base64,{src}' alt='image {i}'>"
                         f"<br><small>#{col + 1} {float(sims[row, col]):.2f}</small></td>")  # fmt: skip
        rows.append("<tr>" + "".join(cells) + "</tr>")
    style = ("body{font-family:sans-serif} td{text-align:center;padding:4px} td.q{text-align:left;max-width:18em}"
             f"img{{width:96px;image-rendering:pixelated;border:2px solid {GREY}}}"
             f"img.hit{{border:5px solid {GREEN}}}")  # fmt: skip
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title or 'retrieval')}</title>"
            f"<style>{style}</style></head><body><h3>{html.escape(title or 'text → image retrieval')}</h3>"
            f"<table>{''.join(rows)}</table></body></html>\n")  # fmt: skip
    path.write_text(page, encoding="utf-8")
    return path


def retrieval_gallery(
    images,
    captions: Sequence[str],
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    image_of_text: torch.Tensor,
    out_path: str | Path,
    queries: int | Sequence[int] = 8,
    k: int = 5,
    html_page: bool = True,
    title: str = "",
) -> list[Path]:
    """Draw text → image retrieval: one row per text query (its caption, the rank of its own
    image), then the ``k`` most similar images with their cosine similarity, the caption's
    own image framed green.

    Args:
        images: uint8 ``(N, C, H, W)`` tensor, or any sequence whose item ``i`` is image ``i``
            as uint8 ``(C, H, W)`` (only the retrieved ones are read).
        captions: the ``M`` texts, in the order of ``text_emb``.
        image_emb, text_emb, image_of_text: ``(N, D)``, ``(M, D)``, ``(M,)``, as returned by
            :func:`convergent.evaluation.retrieval.embed_pairs`.
        out_path: the PNG to write; the HTML page goes beside it (``.html``).
        queries: how many texts to show (evenly spaced), or their indices.
        k: images per query (at most ``N``).
        html_page: also write the HTML page.
        title: heading of both.

    Returns:
        the files written: ``[png]`` or ``[png, html]``.
    """
    n, m = len(image_emb), len(text_emb)
    if len(images) != n or len(captions) != m or len(image_of_text) != m or n == 0 or m == 0:
        raise ValueError(
            f"{len(images)} images for {n} image embeddings and {len(captions)} captions / "
            f"{len(image_of_text)} image indices for {m} text embeddings (need equal, non-zero)"
        )
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    picked = pick_queries(m, queries)
    top, sims, ranks = rank_images(image_emb, text_emb, image_of_text, picked, min(k, n))
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    args = (images, list(captions), picked, top, sims, ranks, image_of_text.cpu())
    written = [_save_png(*args, out_path, title)]
    if html_page:
        written.append(_save_html(*args, out_path.with_suffix(".html"), title))
    return written
