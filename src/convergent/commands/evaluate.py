"""``convergent eval ENCODER`` and ``convergent eval NAME RUN``.

``convergent eval ENCODER``: the default evaluation — kNN and linear-probe accuracy on frozen
features — of a saved encoder. ENCODER is an encoder directory or a ``convergent pretrain``
run directory (whose data settings are then the defaults).

``convergent eval NAME RUN``: one evaluation of :mod:`convergent.evaluation.registry`
(``convergent list evaluations``): ``knn`` / ``linear-probe`` of the run's encoder;
``zero-shot RUN [--classes A B ...] [--templates "a picture of {}." ...]``, ``retrieval RUN
[--ks 1 5 10] [--gallery out.png]`` (an image–text model: CLIP) and ``language-model RUN``
(mlm, causal-lm) of the run's whole task, on the held-out split of its data (or of other data:
``--data.name`` / ``--data.root`` / other ``--data.*`` options replace the run's).

The parser is torch-free (the registry is); :func:`run` imports the workflows when it runs.
"""

import dataclasses
from pathlib import Path

from convergent.commands.parser import CommandError, Parser, _hint, error_message
from convergent.config import DataConfig, EvalRunConfig, from_namespace
from convergent.evaluation import registry
from convergent.evaluation.context import EvalOptions
from convergent.exits import OK

_OPTIONS = EvalOptions()
"""The defaults of the options of one evaluation."""


def parser() -> Parser:
    p = Parser(description="Evaluate a saved encoder (kNN / linear probe on frozen features), or run one named "
               "evaluation of a pre-training run (see `convergent list evaluations`).")  # fmt: skip
    p.add_argument("encoder", help="Encoder directory (config.json + model.safetensors) or a pretrain run directory; "
                   f"or an evaluation ({', '.join(registry.names())}) followed by a run directory.")
    p.add_argument("run", nargs="?", default=None, help="After an evaluation's name: the run directory (knn / "
                   "linear-probe: or an encoder directory).")  # fmt: skip
    p.add_argument("--out", default=None, help="Also write the results as JSON here.")
    p.add_argument("--classes", nargs="+", default=_OPTIONS.classes,
                   help="zero-shot: class names (default: the data's classes).")
    p.add_argument("--templates", nargs="+", default=_OPTIONS.templates,
                   help="zero-shot: prompt templates with {} for the class name (default: 4 built-in ones).")
    p.add_argument("--ks", nargs="+", type=int, default=list(_OPTIONS.ks), help="retrieval: the k of Recall@k.")
    p.add_argument("--gallery", default=_OPTIONS.gallery,
                   help="retrieval: write a picture (PNG + HTML) of top-5 results here.")
    p.add_argument("--clip", default=_OPTIONS.clip, help="r-precision: the CLIP run that judges the generated images.")
    p.add_argument("--candidates", type=int, default=_OPTIONS.candidates,
                   help=f"r-precision: captions each image is ranked among (default: {_OPTIONS.candidates}).")
    p.add_argument("--max_images", type=int, default=_OPTIONS.max_images,
                   help=f"r-precision: held-out captions drawn (default: {_OPTIONS.max_images}).")
    p.add_argument("--top_k", type=int, default=_OPTIONS.top_k, help="r-precision: top-k of the sampling (default: all).")
    p.add_argument("--split", default=_OPTIONS.split,
                   help=f"zero-shot / retrieval: the split evaluated (default: {_OPTIONS.split}).")
    p.add_class_arguments(EvalRunConfig, None, as_group=False)
    return p


def run(args) -> int:
    from convergent.validate import CLI, check_eval, check_section, check_writable
    from convergent.workflows.evaluate import run_eval, run_on_run

    name, path = _target(args)
    try:
        if args.out is not None:
            check_writable(Path(args.out).parent, "--out")
        if name is not None and registry.RUN in registry.entry(name).needs:
            data = _changed_data(args.as_dict()["data"])  # e.g. --data.name / --data.root: evaluate on other data
            check_section(DataConfig(**{**_default_data(), **data}), "data.", CLI)
            run_on_run(name, path, _options(args), args.out, data=data)
        else:
            cfg = _eval_config(args, path)
            check_eval(cfg)
            run_eval(cfg, path, args.out, names=None if name is None else [name])
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    return OK


def _target(args) -> tuple[str | None, str]:
    """``(evaluation name or None for the default evaluation, the directory to evaluate)``."""
    first, second = args.encoder, args.run
    names = registry.names()
    if first in names and not (second is None and Path(first).exists()):
        if second is None:
            raise CommandError(f"convergent eval {first} needs a run directory: convergent eval {first} RUN")
        if registry.entry(first).target is None:
            raise CommandError(f"{first}: {registry.describe(first)}")
        return first, second
    if second is not None:
        raise CommandError(f"unknown evaluation {first!r}{_hint(first, names)} (evaluations: {', '.join(names)})")
    return None, first


def _options(args) -> EvalOptions:
    if args.candidates < 2 or (args.max_images is not None and args.max_images < 2):
        raise CommandError("--candidates and --max_images must be at least 2")
    return EvalOptions(split=args.split, classes=args.classes, templates=args.templates, ks=tuple(args.ks),
                       gallery=args.gallery, clip=args.clip, candidates=args.candidates, max_images=args.max_images,
                       top_k=args.top_k)  # fmt: skip


def _eval_config(args, path: str):
    """The eval config: the run's data settings (when ``path`` is a run), except options set
    to something other than their default."""
    from convergent.workflows.runs import read_config_dict, resolve_encoder

    data = args.as_dict()
    _, found = resolve_encoder(path)
    run_cfg = read_config_dict(found) if found is not None else None
    if run_cfg and "data" in run_cfg:
        data["data"] = {**run_cfg["data"], **_changed_data(data["data"])}
    return from_namespace(EvalRunConfig, data, "eval config")


def _default_data() -> dict:
    return dataclasses.asdict(EvalRunConfig().data)


def _changed_data(data: dict) -> dict:
    """The ``--data.*`` options set to something other than their default."""
    defaults = _default_data()
    return {k: v for k, v in data.items() if v != defaults[k]}
