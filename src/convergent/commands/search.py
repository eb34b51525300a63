"""``convergent search INDEX "a red heart" [--image query.png] [-k 10] [--json]``: the images of
an index nearest to a text or an image, with the model that made the index (``--model``: its
ONNX export, or another copy of it; a different model is refused). Needs the ``app`` extra.

The parser imports neither torch nor the app extra; :func:`run` does."""

from convergent.commands.parser import CommandError, Parser
from convergent.exits import OK


def parser() -> Parser:
    p = Parser(description="Search an image index by text or by image.")
    p.add_argument("index", help="Index directory written by `convergent index`.")
    p.add_argument("query", nargs="?", default=None, help="Text to search for (image-text models).")
    p.add_argument("--image", default=None, help="Search with this image instead (image-to-image).")
    p.add_argument("-k", "--k", type=int, default=10, help="Number of results.")
    p.add_argument("--model", default=None, help="Model to query with (default: the one the index records); an ONNX "
                   "export of it runs on onnxruntime without torch.")  # fmt: skip
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the model (default: one per core; 1 is faster on a busy machine).")
    p.add_argument("--json", action="store_true", help="Print the results as JSON.")
    return p


def run(args) -> int:
    import json

    from convergent.app.errors import AppError
    from convergent.app.searcher import as_rows, open_searcher

    if (args.query is None) == (args.image is None):
        raise CommandError("give a text query or --image (one of them)")
    try:
        searcher = open_searcher(args.index, args.model, args.threads)
        hits = searcher.text(args.query, args.k) if args.image is None else searcher.image(args.image, args.k)
    except AppError as e:
        raise CommandError(str(e)) from e
    rows = as_rows(hits, searcher.index.root)
    if args.json:
        print(json.dumps({"query": args.query or args.image, "results": rows}, indent=2))
    else:
        for rank, r in enumerate(rows, 1):
            print(f"{rank:3d}  {r['score']:.4f}  {r['path']}")
    return OK
