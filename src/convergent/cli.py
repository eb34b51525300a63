"""``convergent <verb>``: the command-line interface (jsonargparse sub-commands).

Imports are lazy: building the parser and ``convergent list`` never import torch, so they
answer in well under a second. Each verb lives in :mod:`convergent.commands`; adding one is
a module there plus one line in :data:`COMMANDS`.

Exit statuses are :mod:`convergent.exits`: bad input — a usage or config error, a missing or
damaged file, a read-only or full disk (``OSError``, safetensors' ``SafetensorError``) — is one
line on stderr and status 2; any other exception is a bug in convergent and shows its
traceback. Set ``CONVERGENT_DEBUG=1`` to see the traceback behind a one-line error too.
"""

import importlib
import os
import sys
import threading

from safetensors import SafetensorError

from convergent import __version__
from convergent.commands.parser import CommandError, Parser, error_message
from convergent.exits import OK, USAGE

COMMANDS: dict[str, tuple[str, str]] = {
    "list": ("convergent.commands.listing", "List registered backbones, tasks, datasets and evaluations."),
    "masks": ("convergent.commands.masks", "Draw masks of a masking strategy, print their AvgDist, save example pictures."),
    "pretrain": ("convergent.commands.pretrain", "Pre-train an encoder with a task, evaluate and save it."),
    "eval": ("convergent.commands.evaluate", "Evaluate a saved encoder (kNN / linear probe) or a run (zero-shot, ...)."),
    "finetune": ("convergent.commands.finetune", "Fine-tune a (pre-trained) backbone for classification."),
    "convert": (
        "convergent.commands.convert",
        "Convert weights between convergent, HF transformers and official Swin layouts.",
    ),
    "tokenizer": ("convergent.commands.tokenizer", "Train a WordPiece or BPE tokenizer on a text corpus."),
    "data": ("convergent.commands.data", "Prepare data: write image-text pairs as webdataset-style tar shards."),
    "generate": (
        "convergent.commands.generate",
        "Continue a prompt with a causal-lm run, or draw images for a caption with a text-to-image run.",
    ),
    "caption": ("convergent.commands.caption", "Caption images with the encoder-decoder of a caption run."),
    "index": ("convergent.commands.index", "Index a folder of images for search with a CLIP / image encoder (incremental)."),
    "search": ("convergent.commands.search", "Search an image index by text or by image."),
    "serve": ("convergent.commands.serve", "Serve an image index: search page and JSON API (FastAPI on uvicorn)."),
    "export": ("convergent.commands.export", "Export a model's image / text towers to ONNX, checked with onnxruntime."),
    "sweep": (
        "convergent.commands.sweep",
        "Scaling sweep: model sizes x data fractions x step budgets of a preset; fit L(N, D), compute frontier.",
    ),
}
"""Verb -> (module providing ``parser()`` and ``run(args)``, one-line help)."""


def build_parser() -> Parser:
    """The ``convergent`` parser with one sub-command per entry of :data:`COMMANDS`."""
    parser = Parser(
        prog="convergent",
        description="Converged vision and language pre-training: one Transformer family (text, ViT, "
        "Swin V1/V2), one family of predict-the-unknown objectives, one evaluation suite.",
    )
    parser.add_argument("--version", action="version", version=f"convergent {__version__}")
    commands = parser.add_subcommands(dest="command", required=True)
    for name, (module, help_text) in COMMANDS.items():
        commands.add_subcommand(name, importlib.import_module(module).parser(), help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``convergent`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status
    (:mod:`convergent.exits`). Usage errors exit 2 via the parser; bad input or an I/O fault
    found while running returns 2 with one line on stderr."""
    args = build_parser().parse_args(argv)
    command = args.command
    run = importlib.import_module(COMMANDS[command][0]).run
    try:
        return run(args[command]) or OK
    except BrokenPipeError:  # e.g. `convergent list | head`: stop quietly
        sys.stdout = open(os.devnull, "w")
        return OK
    except (CommandError, OSError, SafetensorError) as e:
        if os.environ.get("CONVERGENT_DEBUG"):
            raise
        print(f"convergent {command}: error: {error_message(e)}", file=sys.stderr)
        if isinstance(e, OSError):
            _quiet_io_aftermath()
        return USAGE


def _quiet_io_aftermath() -> None:
    """After a one-line I/O error the process exits; writers that flush in a thread or at exit
    (TensorBoard's event writer) fail again on the same full or read-only disk. Those repeats
    of an ``OSError`` are not reported; any other exception still is."""
    thread_hook, unraisable_hook = threading.excepthook, sys.unraisablehook

    def thread_exception(args) -> None:
        if not issubclass(args.exc_type, OSError):
            thread_hook(args)

    def unraisable(args) -> None:
        if not isinstance(args.exc_value, OSError):
            unraisable_hook(args)

    threading.excepthook, sys.unraisablehook = thread_exception, unraisable


if __name__ == "__main__":
    sys.exit(main())
