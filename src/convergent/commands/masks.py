"""``convergent masks --strategy {simmim,random,block} ...``: draw masks, print their AvgDist
(SimMIM paper: mean distance of masked pixels to the nearest visible pixel) and save a PNG
of examples.

``convergent masks --sweep [--patches 4 8 16 32] [--ratios 0.1 0.3 0.5 0.7 0.9]`` prints the
AvgDist of every (mask patch size, masking ratio) pair of the strategy at one image size — the
grid of SimMIM's Figure 3 — saves it as JSON (``--json``) and plots AvgDist against the ratio,
one line per patch size (``--out``).

The parser is torch-free; :func:`run` imports torch and matplotlib (Agg, no display).
"""

import math

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
SWEEP_PATCHES = (4, 8, 16, 32, 64)
"""Mask patch sizes of ``--sweep`` (those dividing the image size; SimMIM Fig. 3: 4 to 64 px at 192)."""
SWEEP_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
"""Masking ratios of ``--sweep`` (SimMIM Fig. 3)."""


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
    p.add_argument("--sweep", action="store_true",
                   help="AvgDist of every pair of --patches x --ratios instead of one strategy setting.")  # fmt: skip
    p.add_argument("--patches", type=int, nargs="+", default=None,
                   help="--sweep: mask patch sizes (default: those of 4 8 16 32 64 that divide --img_size).")  # fmt: skip
    p.add_argument("--ratios", type=float, nargs="+", default=None,
                   help="--sweep: masking ratios (default: 0.1 to 0.9 by 0.1).")  # fmt: skip
    p.add_argument("--json", default=None, help="--sweep: also write the table to this JSON file.")
    return p


def run(args) -> int:
    if args.sweep:
        return run_sweep(args)
    if args.patches is not None or args.ratios is not None or args.json is not None:
        raise CommandError("--patches, --ratios and --json apply only with --sweep")
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


def run_sweep(args) -> int:
    """``--sweep``: the AvgDist table of ``--patches`` x ``--ratios`` (printed, ``--json``, ``--out``)."""
    import torch

    from convergent.masking import avg_dist

    if args.patch is not None or args.ratio is not None:
        raise CommandError("--sweep takes --patches and --ratios (lists), not --patch / --ratio")
    rows = []
    for patch, ratio in sweep_grid(args):
        generator = torch.Generator().manual_seed(args.seed)
        try:
            pixels = draw_pixel_masks(args.strategy, args.samples, args.img_size, patch, ratio, args.model_patch,
                                      generator)  # fmt: skip
        except ValueError as e:
            raise CommandError(f"--patches {patch} --ratios {ratio}: {e}") from e
        mean = avg_dist(pixels).mean().item()  # inf when some mask hides the whole image
        rows.append({"strategy": args.strategy, "img_size": args.img_size, "patch": patch, "ratio": ratio,
                     "avg_dist": round(mean, 3) if math.isfinite(mean) else None,
                     "masked": round(pixels.float().mean().item(), 4)})  # fmt: skip
    print_sweep(rows)
    if args.json:
        write_json(rows, args.json)
        print(f"wrote {args.json}")
    if args.out:
        save_sweep_png(rows, args.out)
        print(f"wrote {args.out}")
    return OK


def sweep_grid(args) -> list[tuple[int, float]]:
    """The (patch, ratio) pairs of ``--sweep``, checked; fills ``args.img_size`` with the default."""
    args.img_size = DEFAULTS[args.strategy][2] if args.img_size is None else args.img_size
    size = args.img_size
    if args.samples < 1 or size < 1:
        raise CommandError(f"--samples and --img_size must be positive, got {args.samples} and {size}")
    patches = args.patches or [p for p in SWEEP_PATCHES if size % p == 0 and p <= size // 2]
    ratios = args.ratios or list(SWEEP_RATIOS)
    bad = [p for p in patches if p < 1 or size % p]
    if bad:
        raise CommandError(f"--patches {bad}: each must be a positive divisor of --img_size {size}")
    bad = [r for r in ratios if not 0.0 < r < 1.0]
    if bad:
        raise CommandError(f"--ratios {bad}: each must be in (0, 1)")
    if not patches:
        raise CommandError(f"no mask patch size of {list(SWEEP_PATCHES)} divides --img_size {size}: pass --patches")
    return [(p, r) for p in patches for r in ratios]


def print_sweep(rows: list[dict]) -> None:
    """AvgDist (px) as a table: one row per patch size, one column per ratio."""
    ratios = sorted({r["ratio"] for r in rows})
    first = rows[0]
    print(f"AvgDist (px) of {first['strategy']} masks at {first['img_size']} px; rows: mask patch, columns: ratio")
    print("patch " + "".join(f"{r:>8g}" for r in ratios))
    for patch in sorted({r["patch"] for r in rows}):
        by_ratio = {r["ratio"]: r["avg_dist"] for r in rows if r["patch"] == patch}
        print(f"{patch:>5} " + "".join("     all" if by_ratio[r] is None else f"{by_ratio[r]:>8.2f}" for r in ratios))
    if any(r["avg_dist"] is None for r in rows):
        print("all: some masks hide the whole image (no visible pixel: AvgDist undefined)")


def write_json(rows: list[dict], path: str) -> None:
    import json

    try:
        with open(path, "w") as f:
            json.dump(rows, f, indent=1)
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from e


def save_sweep_png(rows: list[dict], path: str) -> None:
    """AvgDist against the masking ratio, one line per mask patch size."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for patch in sorted({r["patch"] for r in rows}):
        pts = sorted((r["ratio"], r["avg_dist"]) for r in rows if r["patch"] == patch and r["avg_dist"] is not None)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{patch}-px patches")
    ax.set_xlabel("masking ratio")
    ax.set_ylabel("AvgDist (px)")
    ax.set_title(f"AvgDist of {rows[0]['strategy']} masks at {rows[0]['img_size']} px", fontsize=10)
    ax.legend(fontsize=8)
    try:
        fig.savefig(path, dpi=100)
    except OSError as e:
        raise CommandError(f"cannot write {path}: {e.strerror or e}") from e


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
