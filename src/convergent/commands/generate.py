"""``convergent generate RUN_DIR --prompt TEXT``: sample continuations from the causal
language model of a ``causal-lm`` pre-training run (greedy, temperature, top-k), or images for
the caption from a ``text-to-image`` run (a PNG grid; ``--rerank CLIP_RUN`` keeps the samples a
CLIP run finds closest to the caption).

The parser is torch-free; :func:`run` loads the model.
"""

from convergent.commands.parser import CommandError, Parser, error_message
from convergent.exits import OK


def parser() -> Parser:
    p = Parser(description="Continue a prompt with the causal language model of a causal-lm run.")
    p.add_argument("run_dir", help="Run directory of `convergent pretrain --task.name causal-lm`.")
    p.add_argument("--prompt", default="", help="Text to continue (default: empty, start of a text).")
    p.add_argument("--max_new_tokens", type=int, default=30, help="Tokens to add at the most (default: 30).")
    p.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (default: 1.0).")
    p.add_argument("--top_k", type=int, default=None, help="Sample among the k most likely tokens (default: all).")
    p.add_argument("--greedy", action="store_true", help="Take the most likely token each step (no sampling).")
    p.add_argument("--num", type=int, default=1, help="Continuations to sample (default: 1).")
    p.add_argument("--seed", type=int, default=0, help="Random seed of the sampling (default: 0).")
    p.add_argument("--out", default=None, help="text-to-image: the PNG grid to write (default: RUN_DIR/generated.png).")
    p.add_argument("--rerank", default=None, help="text-to-image: a CLIP run whose image-text similarity ranks the samples.")
    p.add_argument("--candidates", type=int, default=None,
                   help="text-to-image with --rerank: samples drawn before keeping --num (default: 4 x --num).")  # fmt: skip
    return p


def run(args) -> int:
    from convergent.workflows.assemble import load_task_from_run
    from convergent.workflows.generate import generate_text

    if args.num < 1 or args.max_new_tokens < 1:
        raise CommandError("--num and --max_new_tokens must be at least 1")
    try:
        task, tokenizer, cfg = load_task_from_run(args.run_dir)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    if task.name == "text-to-image":
        return run_images(args, task, tokenizer, cfg)
    if task.name != "causal-lm":
        raise CommandError(f"{args.run_dir} trained task {task.name!r}; generation needs a causal-lm or "
                           "text-to-image run")  # fmt: skip
    try:
        texts = generate_text(task, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                              args.greedy, args.seed, args.num)  # fmt: skip
    except ValueError as e:
        raise CommandError(error_message(e)) from e
    for text in texts:
        print(text)
    return OK


def run_images(args, task, tokenizer, cfg) -> int:
    """``convergent generate`` of a text-to-image run: the PNG grid, its path and the scores."""
    from pathlib import Path

    from convergent.evaluation.image_grid import save_image_grid
    from convergent.workflows.assemble import load_task_from_run
    from convergent.workflows.generate import generate_images

    if args.greedy:
        args.top_k = 1
    clip = None
    if args.rerank:
        try:
            clip = load_task_from_run(args.rerank)
        except (FileNotFoundError, ValueError, KeyError) as e:
            raise CommandError(error_message(e)) from e
        if clip[0].name != "clip":
            raise CommandError(f"--rerank {args.rerank} trained task {clip[0].name!r}; re-ranking needs a clip run")
    try:
        images, scores = generate_images(task, tokenizer, cfg, args.prompt, args.num, args.temperature, args.top_k,
                                         args.seed, clip, args.candidates)  # fmt: skip
    except ValueError as e:
        raise CommandError(error_message(e)) from e
    out = save_image_grid(images, args.out or Path(args.run_dir) / "generated.png")
    print(f"{len(images)} images for {args.prompt!r}: {out}")
    if scores is not None:
        print("CLIP cosine, best first: " + " ".join(f"{s:.3f}" for s in scores))
    return OK
