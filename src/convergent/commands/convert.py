"""``convergent convert SRC DST --from {hf,official-swin,convergent} --to {convergent,hf}``.

Backbones (every family whose config names a HF converter: BERT, ViT, Swin, Swin V2,
ConvNeXt, ...) convert to / from a convergent backbone directory; a
HF CLIP (``CLIPModel``) converts to / from a clip run directory, the layout ``convergent
eval zero-shot`` / ``retrieval`` load (see :mod:`convergent.workflows.convert_clip`).

The parser is torch-free; :func:`run` imports :mod:`convergent.converters.hf` (and torch)
only when a conversion actually runs.
"""

from convergent.commands.parser import CommandError, Parser, error_message
from convergent.exits import OK
from convergent.rundir import RunDir

SOURCES = ("hf", "official-swin", "convergent")
TARGETS = ("convergent", "hf")
PAIRS = {("hf", "convergent"), ("official-swin", "convergent"), ("convergent", "hf")}


def parser() -> Parser:
    p = Parser(
        description="Convert weights between convergent, Hugging Face transformers (backbones: each family "
        "with a HF converter, e.g. BERT, ViT, Swin, Swin V2, ConvNeXt; whole models: CLIP) and Microsoft's official "
        "Swin checkpoints. A HF CLIP becomes a "
        "clip run directory (config.yaml, checkpoints/, encoder/, tokenizer/) for `convergent eval zero-shot` "
        "/ `retrieval`; a clip run directory converts back to a HF CLIPModel directory."
    )
    p.add_argument(
        "src",
        help="Source: a HF model directory (config.json + model.safetensors or pytorch_model.bin; for CLIP "
        "also tokenizer.json and preprocessor_config.json when present), an official Swin "
        ".pth/.pt/.safetensors file, or a convergent directory: a backbone directory (config.json + "
        "model.safetensors) or a clip run directory (config.yaml + checkpoints/).",
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
    from convergent.workflows import convert_clip as clip

    try:
        if source == "hf" and clip.is_hf_clip(args.src):
            result = clip.hf_to_run(args.src, args.dst)
        elif source == "hf":
            result = hf.hf_to_convergent(args.src, args.dst)
        elif source == "official-swin":
            result = hf.official_swin_to_convergent(args.src, args.dst, img_size=args.img_size)
        elif RunDir(args.src).is_run():
            result = clip.run_to_hf(args.src, args.dst, legacy=args.legacy)
        else:
            result = hf.convergent_to_hf(args.src, args.dst, legacy=args.legacy)
    except (OSError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    print(result.summary())
    return OK


def _check_options(source: str, target: str, args) -> None:
    if (source, target) not in PAIRS:
        pairs = ", ".join(f"--from {a} --to {b}" for a, b in sorted(PAIRS))
        raise CommandError(f"cannot convert --from {source} --to {target}; supported: {pairs}")
    if args.legacy and target != "hf":
        raise CommandError("--legacy applies only to --to hf")
    if args.img_size is not None and source != "official-swin":
        raise CommandError("--img_size applies only to --from official-swin (other sources store their config)")
