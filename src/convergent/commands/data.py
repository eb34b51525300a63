"""``convergent data shard --pairs FILE --out DIR [--image_root DIR] [--max_per_shard N]``: write
the image–text pairs of a CSV/TSV/JSONL/JSON file as webdataset-style tar shards.

    convergent data shard --pairs captions.csv --image_root images/ --out shards/ --max_per_shard 1000

Each shard holds ``<key>.<ext>`` (the image file's bytes, unchanged) and ``<key>.json`` (captions
and label) per image; ``manifest.json`` lists shards and counts. Read them back, streamed, with
:class:`convergent.data.shards.ShardDataset` (see :mod:`convergent.data.shards`). The parser is
torch-free; :func:`run` imports the data modules only when writing.
"""

from pathlib import Path

from convergent.commands.parser import CommandError, Parser
from convergent.exits import OK


def parser() -> Parser:
    p = Parser(description="Prepare data: write image-text pairs as webdataset-style tar shards.")
    p.add_argument("action", choices=("shard",), help="What to do: shard (the only action).")
    p.add_argument(
        "--pairs",
        required=True,
        help="A pairs file: .csv/.tsv (header with 'image' and 'text' or 'caption', optional 'label'), "
        ".jsonl/.ndjson or .json ('image', 'text'/'caption'/'captions', optional 'label').",
    )
    p.add_argument(
        "--image_root",
        "--image-root",
        default=None,
        help="Folder the image paths are relative to (default: the pairs file's folder).",
    )
    p.add_argument("--out", required=True, help="Output directory: shard-NNNNNN.tar and manifest.json.")
    p.add_argument(
        "--max_per_shard", "--max-per-shard", type=int, default=1000, help="Images per shard at most (default: 1000)."
    )
    p.add_argument("--prefix", default="shard", help="Shard file name prefix (default: shard).")
    p.add_argument(
        "--verify", type=bool, default=True, help="Decode every image and leave out those that fail (default: true)."
    )
    return p


def run(args) -> int:
    from convergent.data.pairs import read_pairs
    from convergent.data.shards import MANIFEST, write_shards

    if args.max_per_shard < 1:
        raise CommandError(f"--max_per_shard must be >= 1, got {args.max_per_shard}")
    try:
        pairs = read_pairs(args.pairs, image_root=args.image_root, caption="first")
        manifest = write_shards(pairs, args.out, args.max_per_shard, args.prefix, args.verify)
    except (FileNotFoundError, ValueError) as e:
        raise CommandError(str(e)) from e
    except OSError as e:
        raise CommandError(f"cannot write {args.out}: {e.strerror or e}") from e
    print(f"read {pairs.summary()} ({args.pairs})")
    for where, reason in pairs.skipped[:5]:
        print(f"  skipped {where}: {reason}")
    shards = manifest["shards"]
    print(f"wrote {manifest['count']} images in {len(shards)} shards ({shards[0]['name']} .. {shards[-1]['name']}) "
          f"-> {Path(args.out) / MANIFEST}")  # fmt: skip
    if manifest["skipped"]:
        print(f"  {manifest['skipped']} left out while writing, e.g. {manifest['skipped_examples'][0]}")
    return OK
