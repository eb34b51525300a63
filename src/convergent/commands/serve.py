"""``convergent serve INDEX [--host 127.0.0.1] [--port 8000]``: a web page and a JSON API to
search an index by text or by a dropped image (FastAPI on uvicorn). Binds to this machine only
unless ``--host`` says otherwise. Needs the ``app`` extra.

The parser imports neither torch nor the app extra; :func:`run` does."""

from convergent.commands.parser import CommandError, Parser
from convergent.exits import OK


def parser() -> Parser:
    p = Parser(description="Serve an image index: search page and JSON API (FastAPI on uvicorn).")
    p.add_argument("index", help="Index directory written by `convergent index`.")
    p.add_argument("--host", default="127.0.0.1", help="Address to bind (127.0.0.1: this machine only).")
    p.add_argument("--port", type=int, default=8000, help="TCP port.")
    p.add_argument("--model", default=None, help="Model to query with (default: the index's); e.g. its ONNX export.")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of the model (default: one per core; 1 is faster on a busy machine).")
    p.add_argument("--max_upload_mb", type=float, default=10.0, help="Largest image upload, in MiB.")
    p.add_argument("--max_pixels", type=int, default=None, help="Refuse uploads declaring more pixels (default: 64 Mi).")
    return p


def run(args) -> int:
    from convergent.app.errors import AppError
    from convergent.app.searcher import open_searcher
    from convergent.app.server import serve
    from convergent.data.limits import MAX_IMAGE_PIXELS

    if args.max_upload_mb <= 0 or not 0 < args.port < 65536:
        raise CommandError("--max_upload_mb must be positive and --port in 1..65535")
    try:
        searcher = open_searcher(args.index, args.model, args.threads)
    except AppError as e:
        raise CommandError(str(e)) from e
    print(f"serving {len(searcher.index)} images of {searcher.index.directory} on http://{args.host}:{args.port}",
          flush=True)  # fmt: skip
    serve(searcher, args.host, args.port, max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
          max_pixels=args.max_pixels or MAX_IMAGE_PIXELS)  # fmt: skip
    return OK
