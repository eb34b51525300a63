"""``convergent tokenizer train --corpus PATH_OR_DATASET --kind {wordpiece,bpe} --vocab_size N --out DIR``:
train a tokenizer locally (HF ``tokenizers``) and save ``DIR/tokenizer.json``.

    convergent tokenizer train --corpus wordnet-glosses --kind wordpiece --vocab_size 8000 --out runs/tok
    convergent tokenizer train --corpus notes.txt --kind bpe --vocab-size 4000 --out runs/bpe

``--corpus`` is a text/JSONL file or a directory (read as the ``text-lines`` dataset, so
``--split`` picks ``train.txt`` etc.), or the name of a registered text dataset. The parser is
torch-free; :func:`run` imports the data modules only when training.
"""

from pathlib import Path

from convergent.choices import TOKENIZER_KINDS as KINDS
from convergent.commands.parser import CommandError, Parser, _hint, error_message
from convergent.exits import OK

SHOWN = 24
"""Tokens of the sample encoding printed."""


def parser() -> Parser:
    p = Parser(description="Train a WordPiece (BERT) or byte-level BPE (GPT-2) tokenizer on a corpus.")
    p.add_argument("action", choices=("train",), help="What to do: train (the only action).")
    p.add_argument(
        "--corpus",
        required=True,
        help="A text (one document per line) or JSONL ('text' field) file, a directory of such files, "
        "or a registered text dataset (see `convergent list datasets`).",
    )
    p.add_argument("--kind", default="wordpiece", choices=KINDS, help="Tokenizer kind (default: wordpiece).")
    p.add_argument(
        "--vocab_size", "--vocab-size", type=int, default=8000, help="Ids in all, specials included (default: 8000)."
    )
    p.add_argument("--out", required=True, help="Output directory: tokenizer.json and convergent_tokenizer.json.")
    p.add_argument("--split", default="train", help="Split of the corpus to read (default: train).")
    p.add_argument(
        "--min_frequency", "--min-frequency", type=int, default=2, help="Least count of a piece or merge (default: 2)."
    )
    p.add_argument(
        "--lowercase",
        type=bool | None,
        default=None,
        help="Lower-case text (default: true for wordpiece, false for bpe).",
    )
    p.add_argument("--limit", type=int | None, default=None, help="Read at most this many texts (default: all).")
    return p


def run(args) -> int:
    from convergent.data.tokenizer import train_tokenizer

    dataset = open_corpus(args.corpus, args.split, args.limit)
    try:
        tok = train_tokenizer(dataset.texts(), args.kind, args.vocab_size, args.min_frequency, args.lowercase)
        path = tok.save(args.out)
    except ValueError as e:
        raise CommandError(str(e)) from e
    except OSError as e:
        raise CommandError(f"cannot write {args.out}: {e.strerror or e}") from e
    print(f"trained {args.kind} tokenizer on {len(dataset)} texts ({dataset.source})")
    print(f"vocab size {tok.vocab_size} -> {path}")
    sample = next(dataset.texts(), "")
    tokens, ids = tok.tokens(sample), tok.encode(sample)
    more = f" ... ({len(ids)} in all)" if len(ids) > SHOWN else ""
    print(f"sample: {sample[:200]!r}")
    print(f"tokens: {' '.join(tokens[:SHOWN])}{more}")
    print(f"ids:    {' '.join(map(str, ids[:SHOWN]))}{more}")
    return OK


def open_corpus(corpus: str, split: str, limit: int | None):
    """The text dataset named by ``corpus``: an existing path (text-lines) or a registered name."""
    from convergent.data import registry

    if limit is not None and limit < 1:
        raise CommandError(f"--limit must be >= 1, got {limit}")
    text_names = [n for n in registry.names() if registry.entry(n).kind == "text"]
    if Path(corpus).expanduser().exists():
        name, root = "text-lines", corpus
    elif corpus in registry.names():
        if corpus not in text_names:
            kind = registry.entry(corpus).kind
            raise CommandError(f"--corpus {corpus!r} holds {kind}, not text; text datasets: {', '.join(text_names)}")
        name, root = corpus, None
    else:
        raise CommandError(
            f"--corpus {corpus!r}: no such file or directory, and not a text dataset ({', '.join(text_names)})"
            + _hint(corpus, text_names)
        )
    try:
        return registry.build_dataset(name, split, root=root, limit=limit)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
