"""``convergent index MODEL --images DIR --out INDEX``: embed every image under ``DIR`` with
the image tower of ``MODEL`` (a CLIP / SigLIP run, a converted HF CLIP, any saved image encoder,
or their ONNX export) into an image index; run again to add new, re-embed changed and drop
deleted files. Needs ``pip install convergent[app]``.

The parser imports neither torch nor the app extra; :func:`run` does."""

from convergent.commands.parser import CommandError, Parser
from convergent.exits import OK

KINDS = ("auto", "flat", "ivf", "ivfpq")  # convergent.app.vectors.KINDS, without importing faiss


def parser() -> Parser:
    p = Parser(description="Index the images under a folder for search (FAISS vectors, SQLite metadata); incremental.")
    p.add_argument("model", help="A CLIP / SigLIP run, an encoder directory, or an ONNX export (`convergent export`).")
    p.add_argument("--out", required=True, help="Index directory (created; an existing index is brought up to date).")
    p.add_argument("--images", default=None, help="Folder of images, searched recursively (default: the index's).")
    p.add_argument("--batch_size", type=int, default=64, help="Images embedded per batch.")
    p.add_argument("--kind", choices=KINDS, default="auto",
                   help="FAISS index: exact inner product (flat), IVF or IVF-PQ; auto: flat below 100k images.")
    p.add_argument("--max_pixels", type=int, default=None, help="Skip images declaring more pixels (default: 64 Mi).")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the model (default: one per core; 1 is faster on a busy machine).")
    p.add_argument("--json", action="store_true", help="Print the report as JSON.")
    p.add_argument("--quiet", action="store_true", help="No progress bar.")
    return p


def run(args) -> int:
    import json
    import sys

    from convergent.app.errors import AppError
    from convergent.app.indexer import update_index
    from convergent.app.load import load_embedder
    from convergent.data.limits import MAX_IMAGE_PIXELS

    try:
        embedder = load_embedder(args.model, args.threads)
        report = update_index(args.out, embedder, args.images, args.batch_size, args.kind,
                              args.max_pixels or MAX_IMAGE_PIXELS, progress=not args.quiet and sys.stderr.isatty())  # fmt: skip
    except AppError as e:
        raise CommandError(str(e)) from e
    if args.json:
        print(json.dumps({**vars(report), "images_per_s": report.images_per_s}, indent=2))
        return OK
    skipped = sum(report.skipped.values())
    print(f"{report.index}: {report.count} images ({report.kind}) from {report.root}")
    print(f"  added {report.added}, changed {report.changed}, removed {report.removed}, unchanged {report.unchanged}"
          f", touched {report.touched}, skipped {skipped}")  # fmt: skip
    if report.embedded:
        print(f"  embedded {report.embedded} images at {report.images_per_s:.1f} images/s")
    for path, why in report.skipped_files[:20]:
        print(f"  skipped {path}: {why}")
    if len(report.skipped_files) > 20:
        print(f"  ... and {skipped - 20} more skipped (--json lists up to 1000)")
    return OK
