"""``convergent export MODEL --format onnx [--out DIR]``: the image and text towers of a CLIP /
SigLIP run (or a saved image encoder) as ONNX with a dynamic batch, each checked against
PyTorch with onnxruntime (at most 1e-4 apart). ``search`` and ``serve`` run on the export with
``--model DIR`` (or index with it) without torch. Needs the ``app`` extra.

The parser imports neither torch nor the app extra; :func:`run` does."""

from convergent.commands.parser import CommandError, Parser
from convergent.exits import OK


def parser() -> Parser:
    p = Parser(description="Export a model's towers to ONNX, checked against PyTorch with onnxruntime.")
    p.add_argument("model", help="A CLIP / SigLIP run, another run with a saved encoder, or an encoder directory.")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="Export format.")
    p.add_argument("--out", default=None, help="Output directory (default: MODEL/onnx).")
    p.add_argument("--tolerance", type=float, default=1e-4, help="Largest |ONNX - PyTorch| accepted.")
    return p


def run(args) -> int:
    import os

    from convergent.app.errors import AppError
    from convergent.app.export import export_onnx

    out = args.out or os.path.join(args.model, "onnx")
    try:
        manifest = export_onnx(args.model, out, args.tolerance)
    except AppError as e:
        raise CommandError(str(e)) from e
    towers = ", ".join(f"{name} (max |ONNX - PyTorch| {diff:.1e})" for name, diff in manifest["checked"].items())
    print(f"{out}: {towers}")
    return OK
