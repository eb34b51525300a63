"""``convergent eval ENCODER``: kNN and linear-probe accuracy of a saved encoder on frozen
features. ENCODER is an encoder directory or a ``convergent pretrain`` run directory (whose
data settings are then the defaults)."""

from convergent.commands.parser import CommandError, Parser


def parser() -> Parser:
    from convergent.config import eval_config_class

    p = Parser(description="kNN / linear-probe evaluation of a saved encoder on frozen features.")
    p.add_argument("encoder", help="Encoder directory (config.json + model.safetensors) or a pretrain run directory.")
    p.add_argument("--out", default=None, help="Also write the results as JSON here.")
    p.add_class_arguments(eval_config_class(), None, as_group=False)
    return p


def run(args) -> int:
    import dataclasses

    from convergent.config import eval_config_class, from_namespace
    from convergent.workflows.evaluate import resolve_encoder, run_eval

    data = args.as_dict()
    try:
        _, run_cfg = resolve_encoder(args.encoder)
        if run_cfg and "data" in run_cfg:
            # the run's data settings, except options set to something other than their default
            defaults = dataclasses.asdict(eval_config_class()().data)
            data["data"] = {**run_cfg["data"], **{k: v for k, v in data["data"].items() if v != defaults[k]}}
        cfg = from_namespace(eval_config_class(), data, "eval config")
        run_eval(cfg, args.encoder, args.out)
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)) from e
    return 0
