"""``convergent caption RUN_DIR IMAGE...``: write a caption for each image with the
encoder-decoder of a ``caption`` pre-training run (beam search; ``--beam 1``: greedy).

The parser is torch-free; :func:`run` loads the model.
"""

from convergent.commands.parser import CommandError, Parser, error_message
from convergent.exits import OK


def parser() -> Parser:
    p = Parser(description="Caption images with the encoder-decoder of a caption run.")
    p.add_argument("run_dir", help="Run directory of `convergent pretrain --task.name caption`.")
    p.add_argument("images", nargs="+", help="Image files (any format Pillow reads).")
    p.add_argument("--beam", type=int, default=None, help="Beams (1: greedy; default: the run's task.caption.beam_size).")
    p.add_argument("--max_new_tokens", type=int, default=None, help="Longest caption in tokens (default: the run's).")
    p.add_argument("--json", action="store_true", help="Print one JSON object {image: caption} instead of lines.")
    return p


def run(args) -> int:
    import json

    import torch

    from convergent.data.image_folder import decode
    from convergent.data.transforms import build_transform
    from convergent.workflows.assemble import load_task_from_run

    if (args.beam is not None and args.beam < 1) or (args.max_new_tokens is not None and args.max_new_tokens < 1):
        raise CommandError("--beam and --max_new_tokens must be at least 1")
    try:
        task, tokenizer, cfg = load_task_from_run(args.run_dir)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    if task.name != "caption":
        raise CommandError(f"{args.run_dir} trained task {task.name!r}; captions need a caption run")
    try:
        pixels = torch.stack([decode(path, cfg.data.img_size, cfg.data.in_chans, cfg.data.max_image_pixels)
                              for path in args.images])  # fmt: skip
    except (OSError, ValueError) as e:
        raise CommandError(f"cannot read an image: {error_message(e)}") from e
    images = build_transform(cfg.data, train=False)(pixels, None)
    ids = task.generate(images, tokenizer.bos_id, tokenizer.eos_id, args.beam, args.max_new_tokens)
    captions = {path: tokenizer.decode(row) for path, row in zip(args.images, ids)}
    if args.json:
        print(json.dumps(captions, indent=2))
    else:
        for path, text in captions.items():
            print(f"{path}: {text}")
    return OK
