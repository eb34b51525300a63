"""``convergent sweep``: a scaling-law sweep (Xie et al. 2023, "On Data Scaling in Masked Image
Modeling"; Kaplan et al. 2020; Hoffmann et al. 2022) over model sizes x data fractions x step
budgets of a preset, with held-out loss, downstream score, the fit L(N, D) and its pictures.

    convergent sweep scaling-simmim-fmnist --dry-run    # the points, their N and FLOPs, a time estimate
    convergent sweep scaling-simmim-fmnist              # run it; the same command again continues it
    convergent sweep my-sweep.yaml --out sweeps/a --devices 4   # 4 runs at once, one per CUDA device

CONFIG is a bundled sweep (``convergent/configs/sweeps/*.yaml``) or a YAML file with the keys
of :class:`~convergent.config.SweepConfig` (``preset``, ``overrides``, ``grid``,
``downstream``, ``out``, ``seed``, ...). The sweep, its preset and every run's config are
checked before torch is imported and anything trains: a bad key or value is one line naming
the file and the key. What it writes: :mod:`convergent.workflows.sweep_plan`.
"""

from pathlib import Path

import yaml

from convergent.commands.parser import CommandError, Parser, error_message
from convergent.commands.presets import PRESET_DIR, bundled_or_file, close_names, preset_config
from convergent.exits import FAILED, OK, PREEMPTED

SWEEP_DIR = PRESET_DIR / "sweeps"


def sweep_names() -> list[str]:
    """The bundled sweeps."""
    return sorted(p.stem for p in SWEEP_DIR.glob("*.yaml"))


def sweep_path(name: str) -> Path:
    """Path of sweep ``name``: a bundled sweep, or a YAML file."""
    path = bundled_or_file(SWEEP_DIR, name)
    if path is not None:
        return path
    close = close_names(name, sweep_names())
    hint = f"; did you mean {' or '.join(close)}?" if close else f" (bundled: {', '.join(sweep_names())})"
    raise FileNotFoundError(f"{name}: no such sweep file, nor a bundled sweep{hint}")


def parser() -> Parser:
    p = Parser(description="Run a scaling sweep: pre-training runs of a preset over model sizes x data fractions x "
               "step budgets; held-out loss and downstream score per point; the fit L(N, D) = E + A/N^alpha + "
               "B/D^beta, the compute frontier and scaling.png. Rerun the same command to continue a stopped sweep.")  # fmt: skip
    p.add_argument("config", help=f"A sweep YAML file, or a bundled sweep ({', '.join(sweep_names())}).")
    p.add_argument("--out", default=None, help="Output directory (default: the sweep file's `out`).")
    p.add_argument("--devices", type=int, default=None, help="Run this many runs at once, one process per CUDA device "
                   "(CUDA_VISIBLE_DEVICES=i); default: one after another in this process.")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="Print the points, their N and FLOPs and an estimated time "
                   "(from a few steps timed here); train nothing.")  # fmt: skip
    p.add_argument("--only", default=None, help="Run only this run of the sweep (VARIANT-fFRACTION, e.g. "
                   "swinv2_micro-f0.5), as the processes of --devices do; no fit.")  # fmt: skip
    return p


def load_sweep(config: str, out: str | None = None):
    """``(sweep, base, where)``: the sweep config of ``config`` (``out``: replaces its ``out``),
    checked; its base run config (the preset with the sweep's overrides), checked; and
    ``where`` (the file, for messages). Torch-free."""
    from convergent.config import SweepConfig, from_dict, with_overrides
    from convergent.validate import Where, check_config, check_sweep

    path = sweep_path(config)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of sweep settings, got {type(data).__name__}")
    sweep = from_dict(SweepConfig, data, str(path))
    if out is not None:
        sweep.out = out
    where = Where(str(path))
    check_sweep(sweep, where)
    try:
        base = preset_config(sweep.preset)
    except ValueError as e:
        raise where.error("preset", f": {error_message(e)}") from e
    base = with_overrides(base, sweep.overrides, f"{path}: overrides")
    check_config(base, Where(f"{path} (preset {sweep.preset} with its overrides)"))
    return sweep, base, where


def run(args) -> int:
    try:
        sweep, base, where = load_sweep(args.config, args.out)
        if args.devices is not None and args.devices < 1:
            raise CommandError(f"--devices must be at least 1, got {args.devices}")
        if args.devices is not None and args.only is not None:
            raise CommandError("--only runs one run in this process; it does not go with --devices")
        import torch  # only once the sweep is good

        from convergent.workflows.sweep import SweepStopped, prepare_sweep, run_sweep, run_sweep_parallel
        from convergent.workflows.sweep_estimate import dry_run

        if args.devices is not None and torch.cuda.device_count() < args.devices:
            raise CommandError(f"--devices {args.devices}: this machine has {torch.cuda.device_count()} CUDA "
                               "device(s); without --devices the runs go one after another in this process")  # fmt: skip
        plan, train_set, test_set = prepare_sweep(sweep, base, where)
        if args.only is not None:
            plan.run(args.only)  # a ValueError naming the runs when there is no such run
        if args.dry_run:
            dry_run(plan, train_set, test_set)
            return OK
        try:
            if args.devices is not None:
                report = run_sweep_parallel(plan, train_set, args.devices)
            else:
                report = run_sweep(plan, train_set, test_set, only=args.only)
        except SweepStopped as e:
            print(f"PREEMPTED: {e}", flush=True)
            return PREEMPTED
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise CommandError(error_message(e)) from e
    return FAILED if report.get("failed_runs") or report.get("failed_points") else OK
