"""``convergent eval ENCODER``: kNN and linear-probe accuracy of a saved encoder on frozen
features. ENCODER is an encoder directory or a ``convergent pretrain`` run directory (whose
data settings are then the defaults).

``convergent eval zero-shot RUN [--classes A B ...] [--templates "a picture of {}." ...]`` and
``convergent eval retrieval RUN [--ks 1 5 10] [--gallery out.png]`` evaluate the image–text
model (CLIP) of a pre-training run on the held-out split of its data (or of other data:
``--data.name`` / ``--data.root`` / other ``--data.*`` options replace the run's)."""

from convergent.commands.parser import CommandError, Parser, error_message


MODES = ("zero-shot", "retrieval")


def parser() -> Parser:
    from convergent.config import EvalRunConfig

    p = Parser(description="kNN / linear-probe evaluation of a saved encoder on frozen features.")
    p.add_argument("encoder", help="Encoder directory (config.json + model.safetensors) or a pretrain run directory; "
                   "or 'zero-shot' / 'retrieval' followed by an image-text (CLIP) run directory.")
    p.add_argument("run", nargs="?", default=None, help="With zero-shot / retrieval: the run directory.")
    p.add_argument("--out", default=None, help="Also write the results as JSON here.")
    p.add_argument("--classes", nargs="+", default=None, help="zero-shot: class names (default: the data's classes).")
    p.add_argument("--templates", nargs="+", default=None,
                   help="zero-shot: prompt templates with {} for the class name (default: 4 built-in ones).")
    p.add_argument("--ks", nargs="+", type=int, default=[1, 5, 10], help="retrieval: the k of Recall@k.")
    p.add_argument("--gallery", default=None, help="retrieval: write a picture (PNG + HTML) of top-5 results here.")
    p.add_argument("--split", default="test", help="zero-shot / retrieval: the split evaluated (default: test).")
    p.add_class_arguments(EvalRunConfig, None, as_group=False)
    return p


def _changed_data(data: dict) -> dict:
    """The ``--data.*`` options set to something other than their default."""
    import dataclasses

    from convergent.config import EvalRunConfig

    defaults = dataclasses.asdict(EvalRunConfig().data)
    return {k: v for k, v in data.items() if v != defaults[k]}


def run(args) -> int:
    from convergent.config import EvalRunConfig, from_namespace
    from convergent.workflows.evaluate import resolve_encoder, run_eval

    if args.encoder in MODES:
        return _run_mode(args)
    data = args.as_dict()
    try:
        _, run_cfg = resolve_encoder(args.encoder)
        if run_cfg and "data" in run_cfg:
            # the run's data settings, except options set to something other than their default
            data["data"] = {**run_cfg["data"], **_changed_data(data["data"])}
        cfg = from_namespace(EvalRunConfig, data, "eval config")
        run_eval(cfg, args.encoder, args.out)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    return 0


def _run_mode(args) -> int:
    from convergent.workflows.multimodal_eval import run_retrieval, run_zero_shot

    if not args.run:
        raise CommandError(f"convergent eval {args.encoder} needs a run directory: convergent eval {args.encoder} RUN")
    data = _changed_data(args.as_dict()["data"])  # e.g. --data.name / --data.root: evaluate on other data
    try:
        if args.encoder == "zero-shot":
            run_zero_shot(args.run, args.classes, args.templates, args.split, args.out, data=data)
        else:
            run_retrieval(args.run, tuple(args.ks), args.split, args.gallery, args.out, data=data)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    return 0
