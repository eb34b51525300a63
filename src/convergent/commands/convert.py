"""``convergent convert SRC DST --from {hf,official-swin,convergent} --to {convergent,hf}``.

The parser is torch-free; :func:`run` imports :mod:`convergent.converters.hf` (and torch)
only when a conversion actually runs.
"""

from convergent.commands.parser import CommandError, Parser

SOURCES = ("hf", "official-swin", "convergent")
TARGETS = ("convergent", "hf")
PAIRS = {("hf", "convergent"), ("official-swin", "convergent"), ("convergent", "hf")}


def parser() -> Parser:
    p = Parser(
        description="Convert backbone weights between convergent, Hugging Face transformers (BERT, ViT, "
        "Swin, Swin V2) and Microsoft's official Swin checkpoints."
    )
    p.add_argument(
        "src",
        help="Source: a HF model directory (config.json + model.safetensors or pytorch_model.bin), an "
        "official Swin .pth/.pt/.safetensors file, or a convergent directory.",
    )
    p.add_argument("dst", help="Output directory (created if missing; existing weights there are replaced).")
    p.add_argument("--from", dest="source_format", required=True, choices=SOURCES, help="Layout of SRC.")
    p.add_argument(
        "--to",
        dest="target_format",
        default=None,
        choices=TARGETS,
        help="Layout to write (default: hf when --from convergent, otherwise convergent).",
    )
    p.add_argument("--legacy", action="store_true", help="With --to hf: use transformers 4.x key names.")
    p.add_argument(
        "--img_size",
        type=int,
        default=None,
        help="With --from official-swin: input resolution of the checkpoint (the file stores no config).",
    )
    return p


def run(args) -> int:
    source = args.source_format
    target = args.target_format or ("hf" if source == "convergent" else "convergent")
    _check_options(source, target, args)
    from convergent.converters import hf

    try:
        if source == "hf":
            result = hf.hf_to_convergent(args.src, args.dst)
        elif source == "official-swin":
            result = hf.official_swin_to_convergent(args.src, args.dst, img_size=args.img_size)
        else:
            result = hf.convergent_to_hf(args.src, args.dst, legacy=args.legacy)
    except (OSError, ValueError, KeyError) as e:
        raise CommandError(_message(e)) from e
    print(result.summary())
    return 0


def _check_options(source: str, target: str, args) -> None:
    if (source, target) not in PAIRS:
        pairs = ", ".join(f"--from {a} --to {b}" for a, b in sorted(PAIRS))
        raise CommandError(f"cannot convert --from {source} --to {target}; supported: {pairs}")
    if args.legacy and target != "hf":
        raise CommandError("--legacy applies only to --to hf")
    if args.img_size is not None and source != "official-swin":
        raise CommandError("--img_size applies only to --from official-swin (other sources store their config)")


def _message(e: BaseException) -> str:
    """One line for ``e``: KeyError's repr quotes are dropped, OSError keeps its file name."""
    if isinstance(e, KeyError) and e.args:
        return str(e.args[0])
    if isinstance(e, OSError) and e.filename and str(e.filename) not in str(e):
        return f"{e.filename}: {e.strerror or e}"
    return str(e) or type(e).__name__
