"""``convergent finetune``: classification fine-tuning of a pre-trained encoder (``--model.init``:
an encoder or a pretrain run directory) or, without it, of a randomly initialised backbone
(the from-scratch baseline). The config and the output directory are checked
(:mod:`convergent.validate`) before torch is imported."""

from convergent.commands.parser import CommandError, Parser, error_message
from convergent.commands.presets import ActionPreset


def parser() -> Parser:
    from convergent.config import FinetuneConfig

    p = Parser(description="Fine-tune a (pre-trained) backbone for classification and report test accuracy.")
    p.add_argument("--config", action=ActionPreset, help="A YAML file with any subset of the options.")
    p.add_class_arguments(FinetuneConfig, None, as_group=False)
    return p


def run(args) -> int:
    from convergent.config import FinetuneConfig, from_namespace
    from convergent.validate import check_finetune

    try:
        cfg = from_namespace(FinetuneConfig, args, "finetune config")
        check_finetune(cfg)
        from convergent.workflows.finetune import run_finetune  # torch: only once the config is good
        from convergent.workflows.summary import exit_status

        summary = run_finetune(cfg)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    return exit_status(summary)  # OK, FAILED (diverged) or PREEMPTED (convergent.exits)
