"""``convergent pretrain``: pre-train an encoder with a task, evaluate it, save it.

    convergent pretrain                                  # the default preset (SimMIM, Swin V2, Fashion-MNIST)
    convergent pretrain --preset mae-vit-fmnist --trainer.max_steps 200
    convergent pretrain --config my.yaml --optim.lr 1e-3     # --config and --preset are one option
    convergent pretrain --print_config                   # the resolved config as YAML
    convergent pretrain --resume runs/simmim-swinv2_micro-20261122-130501

The parser is generated from the typed config (``convergent.config``); unknown keys are
rejected with a suggestion. The default preset's values are the starting point; a
``--preset``/``--config`` and then each option override them in order.
"""

from convergent.commands.parser import CommandError, Parser, error_message
from convergent.commands.presets import DEFAULT_PRESET, ActionPreset, preset_names, preset_path


def parser() -> Parser:
    from convergent.config import pretrain_config_class

    p = Parser(description="Pre-train an encoder with a task, then evaluate and save it.")
    p.add_argument(
        "--preset",
        "--config",
        action=ActionPreset,
        help=f"A bundled preset ({', '.join(preset_names())}) or a YAML file with any subset of the options.",
    )
    p.add_argument("--resume", default=None, help="Continue the run in this run directory from its last checkpoint.")
    p.add_class_arguments(pretrain_config_class(), None, as_group=False)
    p.set_defaults(_preset_defaults(p))
    return p


def _preset_defaults(p: Parser) -> dict:
    """The default preset as parser defaults (dotted keys)."""
    import yaml

    data = yaml.safe_load(preset_path(DEFAULT_PRESET).read_text()) or {}
    flat: dict = {}

    def walk(prefix: str, node) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and key != "model.overrides":
                walk(key + ".", v)
            else:
                flat[key] = v

    walk("", data)
    return flat


def run(args) -> int:
    from convergent.workflows.pretrain import config_from_namespace, run_pretrain
    from convergent.workflows.runs import read_config

    try:
        cfg = read_config(args.resume) if args.resume else config_from_namespace(args)
        summary = run_pretrain(cfg, resume_dir=args.resume)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    return 0 if summary else 1
