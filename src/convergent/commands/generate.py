"""``convergent generate RUN_DIR --prompt TEXT``: sample continuations from the causal
language model of a ``causal-lm`` pre-training run (greedy, temperature, top-k).

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
    return p


def run(args) -> int:
    from convergent.workflows.assemble import load_task_from_run
    from convergent.workflows.generate import generate_text

    if args.num < 1 or args.max_new_tokens < 1:
        raise CommandError("--num and --max_new_tokens must be at least 1")
    try:
        task, tokenizer, _ = load_task_from_run(args.run_dir)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    if task.name != "causal-lm":
        raise CommandError(f"{args.run_dir} trained task {task.name!r}; generation needs a causal-lm run")
    try:
        texts = generate_text(task, tokenizer, args.prompt, args.max_new_tokens, args.temperature, args.top_k,
                              args.greedy, args.seed, args.num)  # fmt: skip
    except ValueError as e:
        raise CommandError(error_message(e)) from e
    for text in texts:
        print(text)
    return OK
