"""``convergent masks --strategy {simmim,random,block} ...``: draw masks, print their AvgDist
(SimMIM paper: mean distance of masked pixels to the nearest visible pixel) and save a PNG
of examples.

The parser is torch-free; :func:`run` imports torch and matplotlib (Agg, no display).
"""

from convergent.commands.parser import CommandError, Parser
from convergent.exits import OK

STRATEGIES = ("simmim", "random", "block")
DEFAULTS = {
    # strategy: (ratio, mask patch px, image px) of the paper that introduced it
    "simmim": (0.6, 32, 192),  # SimMIM: 32-px squares at 192 px, 60 %
    "random": (0.75, 16, 224),  # MAE: 16-px patches at 224 px, 75 %
    "block": (0.4, 16, 224),  # BEiT: 75 of 196 16-px patches (~40 %) in blocks of >= 16
}
SHOWN = 8
"""Example masks drawn in the picture."""


def parser() -> Parser:
    p = Parser(description="Draw masks of a masking strategy, print their AvgDist and save example pictures.")
    p.add_argument("--strategy", default="simmim", choices=STRATEGIES, help="Masking strategy (default: simmim).")
    p.add_argument("--ratio", type=float, default=None, help="Fraction masked (default: simmim 0.6, random 0.75, block 0.4).")
    p.add_argument("--patch", type=int, default=None, help="Side of a mask patch in pixels (default: simmim 32, else 16).")
    p.add_argument("--img_size", type=int, default=None, help="Image side in pixels (default: simmim 192, else 224).")
    p.add_argument(
        "--model_patch", type=int, default=None, help="simmim only: the backbone's patch size (default: --patch)."
    )
    p.add_argument("--out", default="masks.png", help="PNG file for example masks (default: masks.png).")
    p.add_argument("--samples", type=int, default=64, help="Masks drawn for the AvgDist mean (default: 64).")
    p.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    return p


def run(args) -> int:
    ratio, patch, size = _settings(args)
    import torch

    from convergent.masking import avg_dist

    generator = torch.Generator().manual_seed(args.seed)
    try:
        pixels = draw_pixel_masks(args.strategy, args.samples, size, patch, ratio, args.model_patch, generator)
    except ValueError as e:
        raise CommandError(str(e)) from e
    dist = avg_dist(pixels)  # (N,)
    masked = pixels.float().mean().item()
    print(
        f"strategy={args.strategy} img_size={size} patch={patch} ratio={ratio} samples={args.samples}: "
        f"AvgDist {dist.mean().item():.2f} px (std {dist.std().item() if args.samples > 1 else 0.0:.2f}), "
        f"masked {masked:.3f}"
    )
    if args.out:
        title = f"{args.strategy}, {patch}-px patches, ratio {ratio}, {size} px: AvgDist {dist.mean().item():.2f}"
        save_masks_png(pixels[:SHOWN], dist[:SHOWN].tolist(), args.out, title)
        print(f"wrote {args.out}")
    return OK


def _settings(args) -> tuple[float, int, int]:
    ratio, patch, size = DEFAULTS[args.strategy]
    ratio = ratio if args.ratio is None else args.ratio
    patch = patch if args.patch is None else args.patch
    size = size if args.img_size is None else args.img_size
    if args.model_patch is not None and args.strategy != "simmim":
        raise CommandError("--model_patch applies only to --strategy simmim")
    if args.samples < 1:
        raise CommandError(f"--samples must be at least 1, got {args.samples}")
    if patch < 1 or size < 1:
        raise CommandError(f"--patch and --img_size must be positive, got {patch} and {size}")
    if size % patch:
        raise CommandError(f"--img_size {size} is not a multiple of --patch {patch}")
    if not 0.0 <= ratio < 1.0:
        raise CommandError(f"--ratio must be in [0, 1), got {ratio}")
    return ratio, patch, size


def draw_pixel_masks(strategy: str, n: int, size: int, patch: int, ratio: float, model_patch, generator):
    """``(n, size, size)`` bool pixel masks (True = hidden) of ``strategy``."""
    from convergent.masking import SimMIMMaskGenerator, block_masking, mask_to_pixels, random_masking

    grid = size // patch
    if strategy == "simmim":
        mp = model_patch or patch
        masks = SimMIMMaskGenerator(size, patch, mp, ratio)(n, generator=generator)
        return mask_to_pixels(masks, size // mp, mp)
    if strategy == "random":
        masks = random_masking(n, grid * grid, ratio, generator=generator)[1]
    else:
        masks = block_masking(n, grid, ratio, generator=generator)
    return mask_to_pixels(masks, grid, patch)


def save_masks_png(pixels, dists: list[float], path: str, title: str) -> None:
    """One panel per mask (hidden pixels dark), its AvgDist above it."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cols = min(4, len(dists))
    rows = -(-len(dists) // cols)
    fig = Figure(figsize=(2.4 * cols, 2.6 * rows + 0.4))
    FigureCanvasAgg(fig)
    for i, d in enumerate(dists):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(pixels[i].numpy(), cmap="gray_r", vmin=0, vmax=1.6, interpolation="nearest")
        ax.set_title(f"AvgDist {d:.1f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from e
