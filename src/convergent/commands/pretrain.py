"""``convergent pretrain``: pre-train an encoder with a task, evaluate it, save it.

    convergent pretrain                                  # the default preset (SimMIM, Swin V2, Fashion-MNIST)
    convergent pretrain --preset mae-vit-fmnist --trainer.max_steps 200
    convergent pretrain --config my.yaml --optim.lr 1e-3     # --config and --preset are one option
    convergent pretrain --print_config                   # the resolved config as YAML
    convergent pretrain --resume runs/simmim-swinv2_micro-20261122-130501

The parser is generated from the typed config (``convergent.config``); unknown keys are
rejected with a suggestion. The default preset's values are the starting point; a
``--preset``/``--config`` and then each option override them in order. Every value, the
output directory and (``--resume``) the run directory are checked (:mod:`convergent.validate`)
before torch is imported: a config error is one line within a second, and leaves no run
directory behind.
"""

from convergent.commands.parser import CommandError, Parser, error_message
from convergent.commands.presets import DEFAULT_PRESET, ActionPreset, flat_preset, preset_names


def parser() -> Parser:
    from convergent.config import PretrainConfig

    p = Parser(description="Pre-train an encoder with a task, then evaluate and save it.")
    underlay = flat_preset(DEFAULT_PRESET)  # without --preset, the default preset's values
    p.add_argument(
        "--preset",
        "--config",
        action=ActionPreset.over(underlay, typed_defaults(PretrainConfig(), underlay)),
        help=f"A bundled preset ({', '.join(preset_names())}) or a YAML file with any subset of the options; "
        f"without it, {DEFAULT_PRESET}.",
    )
    p.add_argument("--resume", default=None, help="Continue the run in this run directory from its last checkpoint.")
    p.add_class_arguments(PretrainConfig, None, as_group=False)
    p.set_defaults(underlay)
    return p


def typed_defaults(cfg, keys) -> dict:
    """The values of the dotted ``keys`` in the config dataclass instance ``cfg``."""
    flat = {}
    for key in keys:
        node = cfg
        for part in key.split("."):
            node = getattr(node, part)  # a declared field of the dataclass (preset keys are validated)
        flat[key] = list(node) if isinstance(node, tuple) else node
    return flat


def run(args) -> int:
    from convergent.config import PretrainConfig, from_namespace
    from convergent.validate import check_pretrain, check_resume_dir

    try:
        if args.resume:
            check_resume_dir(args.resume)
            from convergent.workflows.runs import read_config

            cfg = read_config(args.resume)
        else:
            cfg = from_namespace(PretrainConfig, args, "pretrain config")
        check_pretrain(cfg, args.resume)
        from convergent.workflows.pretrain import run_pretrain  # torch: only once the config is good
        from convergent.workflows.summary import exit_status

        summary = run_pretrain(cfg, resume_dir=args.resume)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    return exit_status(summary)  # OK, FAILED (diverged) or PREEMPTED (convergent.exits)
