"""A run's config checked before any data or model loads (torch-free: answers in well under a
second, before ``convergent pretrain`` imports torch).

    check_pretrain(cfg)                  # PretrainConfig from the command line
    check_pretrain(cfg, resume_dir=run)  # a resumed run: its config.yaml, and the directory itself
    check_finetune(cfg); check_eval(cfg)

Each raises :class:`ConfigError` (a ``ValueError``) with one line that names the option as the
user typed it — ``--data.batch_size must be >= 1, got -4`` — with the closest spelling where
one exists, or, for a resumed run, the key and its file (``runs/x/config.yaml:
trainer.max_steps must be >= 1, got 0``). The checks, in order:

1. **types**: every field against its annotation (``int``, ``float``, ``str | None``,
   ``tuple[float, float]``, ...), so a field added to a config later is type-checked too;
2. **values**: :data:`RULES`, per config class and field: ranges, choices, registered names
   (the registries' ``KeyError`` with close matches), paths that must exist. Only the task
   section the run selects is checked (the others are not used);
3. **relations** between fields: ``low <= high`` of the crop ranges, normalisation values
   per channel, a batch split evenly over processes x accumulation steps, ``data.limit`` at
   least one batch, backbone overrides that its config accepts, ...;
4. **the output**: the nearest existing directory of ``trainer.out_dir/run_name`` is
   writable (a probe file is created and removed: permissions alone miss read-only mounts
   and root), and a new run does not write into an existing run's checkpoints.

What needs torch — the number of parameters, hence the disk space a run's checkpoints take,
and what a backbone or task constructor refuses — is checked next, still before the data
loads, by :mod:`convergent.workflows.preflight` (which calls :func:`check_free_space`).

A few vocabularies are defined beside torch code (pooling names, data2vec's mask kinds and
normalisations, tokenizer kinds, the encoder's ``config.json``); they are repeated here so this
module stays torch-free, and ``tests/test_validate.py`` pins each copy to its source.
"""

import dataclasses
import difflib
import json
import os
import re
import shutil
import tempfile
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convergent.backbones.configs import config_from_dict, replace_config
from convergent.backbones.registry import backbone_config
from convergent.choices import (
    CLIP_LOSSES,
    CONTRASTIVE_HEADS,
    CONTRASTIVE_LOSSES,
    DATA2VEC_LOSS_REDUCTIONS,
    DATA2VEC_MASK_KINDS,
    DATA2VEC_TARGET_LAYERS,
    ENCODER_CONFIG,
    ITM_NEGATIVES,
    POOLINGS,
    TARGET_NORMS,
    TOKENIZER_KINDS,
    compile_setting_ok,
)
from convergent.config import (
    SWEEP_DATA_AXES,
    SWEEP_DOWNSTREAM,
    DataConfig,
    EvalConfig,
    EvalRunConfig,
    FinetuneConfig,
    ModelConfig,
    OptimConfig,
    PretrainConfig,
    RunConfig,
    SweepConfig,
    SweepDownstreamConfig,
    SweepGridConfig,
    TrainerConfig,
)
from convergent.data import registry as datasets
from convergent.rundir import RunDir
from convergent.tasks import registry as tasks
from convergent.tasks.configs import (
    BEiTConfig,
    CaptionConfig,
    CausalLMConfig,
    ClassifyConfig,
    CLIPConfig,
    ContrastiveConfig,
    Data2VecConfig,
    FDConfig,
    MAEConfig,
    MoCoV3Config,
    SimMIMConfig,
    TeacherConfig,
    TextToImageConfig,
    TokenMaskingConfig,
    ViLTConfig,
    VisualTokensConfig,
    VQVAEConfig,
)
from convergent.tasks.registry import TaskConfig, task_field

ACCELERATORS = ("auto", "cpu", "cuda", "gpu", "mps")
STRATEGIES = ("auto", "ddp", "fsdp")
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "32", "16", "bf16", "64")
"""Lightning Fabric's precision names."""
MAX_SEED = 2**32 - 1
"""The largest seed NumPy (and so ``Fabric.seed_everything``) accepts."""


class ConfigError(ValueError):
    """A config value a run cannot start with; the message is one line naming the option."""


@dataclass(frozen=True)
class Where:
    """Where a config came from, to name its options in messages: the command line
    (``--data.batch_size``), or a config file (``runs/x/config.yaml: data.batch_size``)."""

    file: str | None = None

    def option(self, key: str) -> str:
        """How the user names ``key`` (a dotted field path such as ``data.batch_size``)."""
        return f"--{key}" if self.file is None else key

    def error(self, key: str, problem: str) -> ConfigError:
        """The error for ``key``; ``problem`` goes right after the option's name."""
        return ConfigError(f"{'' if self.file is None else self.file + ': '}{self.option(key)}{problem}")


CLI = Where()


# --- rules: one value of one field ------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """A number in ``[lo, hi]`` (either end open or absent)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def problem(self, value: float) -> str | None:
        low_ok = self.lo is None or (value > self.lo if self.lo_open else value >= self.lo)
        high_ok = self.hi is None or (value < self.hi if self.hi_open else value <= self.hi)
        if low_ok and high_ok:
            return None
        lo, hi = _number(self.lo), _number(self.hi)
        if self.hi is None:
            return f" must be {'>' if self.lo_open else '>='} {lo}, got {value!r}"
        if self.lo is None:
            return f" must be {'<' if self.hi_open else '<='} {hi}, got {value!r}"
        left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
        return f" must be in {left}{lo}, {hi}{right}, got {value!r}"


def _number(x: float | None) -> str:
    """``1``, ``0.5``, ``4294967295`` (no exponent for whole numbers); ``""`` for None."""
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


AT_LEAST_1 = Range(1)
NON_NEGATIVE = Range(0)
POSITIVE = Range(0, lo_open=True)
PROBABILITY = Range(0, 1)


@dataclass(frozen=True)
class OddAtLeast:
    """An odd whole number of at least ``lo`` (the side of a window centred on a pixel)."""

    lo: int

    def problem(self, value: int) -> str | None:
        if value >= self.lo and value % 2 == 1:
            return None
        return f" must be an odd number >= {self.lo}, got {value!r}"


@dataclass(frozen=True)
class OneOf:
    """One of ``choices``; a near miss gets a suggestion."""

    choices: tuple[str, ...]

    def problem(self, value: str) -> str | None:
        if value in self.choices:
            return None
        return f" must be one of {', '.join(self.choices)}, got {value!r}{did_you_mean(str(value), self.choices)}"


@dataclass(frozen=True)
class Registered:
    """A name a registry knows: ``lookup(name)`` raises the registry's ``KeyError`` (with its
    close matches and where to list the names) when it does not."""

    lookup: Callable[[str], Any]

    def problem(self, value: str) -> str | None:
        try:
            self.lookup(value)
        except KeyError as e:
            return f": {e.args[0]}"
        return None


@dataclass(frozen=True)
class Exists:
    """A path that exists (``dir``: and is a directory)."""

    kind: str = "any"

    def problem(self, value: str) -> str | None:
        path = Path(value).expanduser()
        if not path.exists():
            return f" {value}: no such {'directory' if self.kind == 'dir' else 'file or directory'}"
        if self.kind == "dir" and not path.is_dir():
            return f" {value}: not a directory"
        return None


@dataclass(frozen=True)
class Each:
    """Every element of a tuple follows ``rule``."""

    rule: Any

    def problem(self, value: tuple) -> str | None:
        for v in value:
            if found := self.rule.problem(v):
                return f"{found} (in {list(value)})"
        return None


@dataclass(frozen=True)
class PerView:
    """A per-view tuple (element v for view v, the last repeating): at least one value, each
    following ``rule``."""

    rule: Any

    def problem(self, value: tuple) -> str | None:
        if not value:
            return " needs at least one value (one per view; the last repeats for further views)"
        return Each(self.rule).problem(value)


@dataclass(frozen=True)
class Items:
    """A fixed-length tuple whose element i, named ``names[i]``, follows ``rules[i]``."""

    names: tuple[str, ...]
    rules: tuple[Any, ...]

    def problem(self, value: tuple) -> str | None:
        for name, rule, v in zip(self.names, self.rules, value):
            if found := rule.problem(v):
                return f"{found} ({name}, in {list(value)})"
        return None


@dataclass(frozen=True)
class Devices:
    """Lightning's ``devices``: a count >= 1, -1 (all), 'auto', or device ids such as '0,1'."""

    def problem(self, value: int | str) -> str | None:
        if isinstance(value, int) and (value >= 1 or value == -1):
            return None
        if isinstance(value, str) and re.fullmatch(r"auto|-1|[1-9]\d*|\d+(,\d+)*,?", value.strip()):
            return None
        return f" must be a number of devices (>= 1), -1 (all), 'auto' or device ids like '0,1', got {value!r}"


@dataclass(frozen=True)
class CompileSetting:
    """``trainer.compile``: true, false or 'auto'."""

    def problem(self, value: bool | str) -> str | None:
        if compile_setting_ok(value):
            return None
        return f" must be true, false or 'auto', got {value!r}{did_you_mean(str(value), ('auto', 'true', 'false'))}"


RULES: dict[type, dict[str, Any]] = {
    DataConfig: {
        "name": Registered(datasets.entry), "root": Exists(), "img_size": AT_LEAST_1, "in_chans": AT_LEAST_1,
        "batch_size": AT_LEAST_1, "num_workers": NON_NEGATIVE, "scale": Each(Range(0, 1, lo_open=True)),
        "ratio": Each(POSITIVE), "hflip": PROBABILITY, "std": Each(POSITIVE), "limit": AT_LEAST_1,
        "tokenizer": Exists(), "tokenizer_kind": OneOf(TOKENIZER_KINDS), "vocab_size": AT_LEAST_1,
        "max_length": Range(2),
        "color_jitter": Items(("brightness", "contrast", "saturation", "hue"), (NON_NEGATIVE,) * 3 + (Range(0, 0.5),)),
        "color_jitter_prob": PerView(PROBABILITY), "grayscale_prob": PerView(PROBABILITY),
        "blur_prob": PerView(PROBABILITY), "blur_sigma": Each(POSITIVE), "solarize_prob": PerView(PROBABILITY),
    },
    ModelConfig: {"backbone": Registered(backbone_config), "init": Exists("dir")},
    OptimConfig: {
        "lr": POSITIVE, "min_lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "betas": Each(Range(0, 1, hi_open=True)),
        "warmup_steps": NON_NEGATIVE, "layer_decay": Range(0, 1, lo_open=True), "clip_grad": POSITIVE,
        "accumulate": AT_LEAST_1,
    },
    TrainerConfig: {
        "max_steps": AT_LEAST_1, "accelerator": OneOf(ACCELERATORS), "devices": Devices(), "num_nodes": AT_LEAST_1,
        "strategy": OneOf(STRATEGIES), "precision": OneOf(PRECISIONS), "seed": Range(0, MAX_SEED),
        "log_every": AT_LEAST_1, "checkpoint_every": AT_LEAST_1, "visualize_every": NON_NEGATIVE,
        "nonfinite": OneOf(("skip", "stop")), "compile": CompileSetting(),
    },
    EvalConfig: {
        "knn_k": AT_LEAST_1, "knn_temperature": POSITIVE, "probe_epochs": AT_LEAST_1, "probe_lr": POSITIVE,
        "pooling": OneOf(POOLINGS), "limit_train": AT_LEAST_1,
    },
    TaskConfig: {"name": Registered(tasks.entry)},
    SimMIMConfig: {"mask_patch_size": AT_LEAST_1, "mask_ratio": PROBABILITY, "encoder_stride": AT_LEAST_1,
                   "norm_target_window": OddAtLeast(3)},
    VQVAEConfig: {
        "num_codes": Range(2), "code_dim": AT_LEAST_1, "decay": Range(0, 1, hi_open=True), "commitment": NON_NEGATIVE,
        "eps": POSITIVE, "restart_threshold": NON_NEGATIVE, "decoder_width": Range(4), "decoder_res_blocks": NON_NEGATIVE,
    },
    MAEConfig: {
        "mask_ratio": Range(0, 1, hi_open=True), "decoder_dim": AT_LEAST_1, "decoder_depth": AT_LEAST_1,
        "decoder_heads": AT_LEAST_1,
    },
    ClassifyConfig: {
        "num_classes": AT_LEAST_1, "label_smoothing": Range(0, 1, hi_open=True), "pooling": OneOf(POOLINGS),
        "head_dropout": Range(0, 1, hi_open=True), "head_init_std": NON_NEGATIVE,
    },
    TokenMaskingConfig: {
        "mask_ratio": Range(0, 1, lo_open=True), "replace_prob": PROBABILITY, "random_prob": PROBABILITY,
        "special_ids": Each(NON_NEGATIVE),
    },
    CausalLMConfig: {"label_smoothing": Range(0, 1, hi_open=True)},
    Data2VecConfig: {
        "mask_kind": OneOf(("auto", *DATA2VEC_MASK_KINDS)), "mask_ratio": Range(0, 1, lo_open=True), "top_k_layers": AT_LEAST_1,
        "target_layer": OneOf(("auto", *DATA2VEC_TARGET_LAYERS)), "target_norm": OneOf(TARGET_NORMS),
        "final_norm": OneOf(("auto", *TARGET_NORMS)), "loss_beta": NON_NEGATIVE,
        "loss_reduction": OneOf(("auto", *DATA2VEC_LOSS_REDUCTIONS)), "head_layers": AT_LEAST_1,
        "ema_decay": PROBABILITY, "ema_end_decay": PROBABILITY, "ema_anneal_end_step": NON_NEGATIVE,
    },
    MoCoV3Config: {
        "hidden_dim": AT_LEAST_1, "out_dim": AT_LEAST_1, "proj_layers": AT_LEAST_1, "pred_layers": AT_LEAST_1,
        "temperature": POSITIVE, "momentum": PROBABILITY, "momentum_end": PROBABILITY,
    },
    CLIPConfig: {
        "text_backbone": Registered(backbone_config), "embed_dim": AT_LEAST_1, "image_pooling": OneOf(POOLINGS),
        "text_pooling": OneOf(POOLINGS), "init_temperature": POSITIVE, "max_logit_scale": POSITIVE,
        "loss": OneOf(CLIP_LOSSES),
    },
    ContrastiveConfig: {
        "temperature": POSITIVE, "pooling": OneOf(POOLINGS), "head": OneOf(CONTRASTIVE_HEADS),
        "head_layers": AT_LEAST_1, "hidden_dim": AT_LEAST_1, "out_dim": AT_LEAST_1, "loss": OneOf(CONTRASTIVE_LOSSES),
    },
    VisualTokensConfig: {"tokenizer": Exists("dir")},
    CaptionConfig: {"text_backbone": Registered(backbone_config), "label_smoothing": Range(0, 1, hi_open=True),
                    "beam_size": AT_LEAST_1, "max_new_tokens": AT_LEAST_1},
    TextToImageConfig: {"text_loss_weight": PROBABILITY, "caption_dropout": PROBABILITY, "text_length": AT_LEAST_1},
    BEiTConfig: {"mask_ratio": Range(0, 1, lo_open=True, hi_open=True),
                 "min_block_patches": AT_LEAST_1, "min_aspect": Range(0, 1, lo_open=True), "head_init_std": POSITIVE},
    TeacherConfig: {"teacher": Exists("dir"), "teacher_img_size": AT_LEAST_1, "teacher_std": Each(POSITIVE)},
    FDConfig: {"whiten_eps": POSITIVE, "loss_beta": NON_NEGATIVE},
    ViLTConfig: {
        "vocab_size": AT_LEAST_1, "pad_token_id": NON_NEGATIVE, "mask_token_id": NON_NEGATIVE,
        "max_text_len": AT_LEAST_1, "itm_weight": NON_NEGATIVE, "mlm_weight": NON_NEGATIVE,
        "itm_neg_ratio": PROBABILITY, "itm_negatives": OneOf(ITM_NEGATIVES),
    },
    SweepConfig: {
        "seed": Range(0, MAX_SEED), "val_samples": AT_LEAST_1, "val_batch_size": AT_LEAST_1,
        "fit_data": OneOf(SWEEP_DATA_AXES),
    },
    SweepGridConfig: {
        "variants": Each(Registered(backbone_config)), "fractions": Each(Range(0, 1, lo_open=True)),
        "steps": Each(AT_LEAST_1),
    },
    SweepDownstreamConfig: {
        "kind": OneOf(SWEEP_DOWNSTREAM), "finetune_steps": AT_LEAST_1, "finetune_labels": AT_LEAST_1,
        "finetune_batch_size": AT_LEAST_1, "finetune_lr": POSITIVE, "finetune_layer_decay": Range(0, 1, lo_open=True),
    },
}  # fmt: skip
"""Config class -> field -> rule (a value of None skips the rule: the type check decides
whether None is allowed). A class also follows the rules of its bases (``ViLTConfig``:
``TokenMaskingConfig``'s)."""


# --- the public checks ---------------------------------------------------------------------------------


def check_pretrain(cfg: PretrainConfig, resume_dir: "str | os.PathLike[str] | None" = None) -> None:
    """Check a ``convergent pretrain`` run: its config, and where it writes (the resumed run's
    directory, or ``trainer.out_dir/run_name``)."""
    if resume_dir is not None:
        check_resume_dir(resume_dir)
        check_config(cfg, Where(str(RunDir(resume_dir).config)), training=True)
        check_writable(Path(resume_dir), "--resume")
    else:
        check_config(cfg, CLI, training=True)
        check_output(cfg.trainer, CLI)


def check_finetune(cfg: FinetuneConfig) -> None:
    """Check a ``convergent finetune`` run (``model.init``: an encoder or a pretrain run directory)."""
    check_config(cfg, CLI, training=True)
    check_output(cfg.trainer, CLI)


def check_eval(cfg: EvalRunConfig) -> None:
    """Check the config of ``convergent eval`` (it writes no run directory)."""
    check_config(cfg, CLI, training=False)


def check_sweep(cfg: SweepConfig, where: Where) -> None:
    """Check a sweep's own settings (``convergent sweep``; ``where``: its YAML file): types and
    values of every field, a grid with at least one value per axis and no repeats, variants of
    one modality. The preset and the points' run configs are checked where they are built."""
    check_section(cfg, "", where)
    for axis in ("variants", "fractions", "steps"):
        values = getattr(cfg.grid, axis)  # a declared field
        if not values:
            raise where.error(f"grid.{axis}", " is empty; give at least one value")
        if len(set(values)) < len(values):
            raise where.error(f"grid.{axis}", f" repeats a value: {list(values)}")
    modalities = {backbone_config(v).modality for v in cfg.grid.variants}
    if modalities != {"image"}:
        raise where.error("grid.variants", f" must all be image backbones (a sweep runs on image data), got "
                          f"{list(cfg.grid.variants)}")  # fmt: skip


def check_config(cfg: RunConfig, where: Where = CLI, training: bool = True) -> None:
    """Types, values and relations of every field of ``cfg`` (``training``: a run that trains,
    whose batch must fit the data and split over its processes)."""
    check_section(cfg, "", where)
    check_relations(cfg, where, training)


def check_section(section: Any, prefix: str, where: Where) -> None:
    """Type and rule of each field of the dataclass ``section`` (dotted keys start with
    ``prefix``), then of its sub-sections (of a task section, only the selected task's)."""
    hints = typing.get_type_hints(type(section))
    rules = rules_for(type(section))
    for f in dataclasses.fields(section):
        key, value = prefix + f.name, getattr(section, f.name)  # a declared field
        if not matches(value, hints[f.name]):
            raise where.error(key, f" must be {describe(hints[f.name])}, got {value!r}")
        rule = rules.get(f.name)
        if rule is not None and value is not None and (problem := rule.problem(value)):
            raise where.error(key, problem)
    for name in subsections(section):
        check_section(getattr(section, name), f"{prefix}{name}.", where)


def rules_for(cls: type) -> dict[str, Any]:
    """:data:`RULES` of ``cls`` and its bases (the class's own win)."""
    merged: dict[str, Any] = {}
    for base in reversed(cls.__mro__):
        merged.update(RULES.get(base, {}))
    return merged


def subsections(section: Any) -> list[str]:
    """Fields of ``section`` that hold config sections to check: of a :class:`TaskConfig`, the
    selected task's only."""
    if isinstance(section, TaskConfig):
        return [task_field(section.name)]
    return [f.name for f in dataclasses.fields(section) if dataclasses.is_dataclass(getattr(section, f.name))]


# --- relations between fields ------------------------------------------------------------------------


def check_relations(cfg: RunConfig, where: Where, training: bool) -> None:
    """What no single field shows (see the module docstring)."""
    d = cfg.data
    for key, (low, high) in (("data.scale", d.scale), ("data.ratio", d.ratio), ("data.blur_sigma", d.blur_sigma)):
        if low > high:
            raise where.error(key, f" must be [low, high] with low <= high, got {[low, high]}")
    for key, values in (("data.mean", d.mean), ("data.std", d.std)):
        if len(values) not in (1, d.in_chans) and len(set(values)) > 1:
            channels = f"{d.in_chans} channels ({where.option('data.in_chans')})"
            raise where.error(key, f" has {len(values)} values for {channels}; give one per channel, or one for all")
    if isinstance(cfg, (PretrainConfig, FinetuneConfig)):
        check_model(cfg.model, d, where, run_init=isinstance(cfg, FinetuneConfig))
        if training:
            check_batch(cfg, where)
    if isinstance(cfg, PretrainConfig):
        check_task_relations(cfg.task.selected(), f"task.{task_field(cfg.task.name)}", where)
        check_eval_layer(cfg, where)


def check_eval_layer(cfg: PretrainConfig, where: Where) -> None:
    """``eval.layer`` is -1 or a block of the backbone the run trains (checked now, not after
    training, when the probes read it)."""
    e = cfg.eval
    if e.layer == -1 or not (e.knn or e.linear_probe):
        return
    if cfg.model.init is not None:
        encoder = Path(cfg.model.init).expanduser() / ENCODER_CONFIG
        try:
            backbone = config_from_dict(json.loads(encoder.read_text()), str(encoder))
        except (OSError, ValueError):
            return  # check_model already named a missing or malformed encoder
        name = str(cfg.model.init)
    else:
        backbone = backbone_config(cfg.model.backbone, **cfg.model.overrides)
        name = cfg.model.backbone
    n = backbone.num_blocks
    if not -n <= e.layer < n:
        raise where.error("eval.layer", f" {e.layer} is not a block of {name} ({n} blocks: 0..{n - 1}, negatives "
                          "from the end), nor -1 (the final normalised tokens); a preset's probe block is chosen for "
                          "its own backbone: with another, set it")  # fmt: skip


def check_batch(cfg: PretrainConfig | FinetuneConfig, where: Where) -> None:
    """The global batch fits the data, splits evenly over processes x accumulation steps, and
    the schedule ends no higher than it starts."""
    d, o = cfg.data, cfg.optim
    if d.limit is not None and d.limit < d.batch_size:
        raise where.error("data.limit", f" {d.limit} is less than one batch ({where.option('data.batch_size')} "
                          f"{d.batch_size}); raise it or lower the batch size")  # fmt: skip
    processes = process_count(cfg.trainer)
    parts = (processes or 1) * o.accumulate
    if d.batch_size % parts:
        over = f"{processes} process(es) x " if processes else ""
        steps = f"{o.accumulate} accumulation step(s) ({where.option('optim.accumulate')})"
        raise where.error("data.batch_size", f" {d.batch_size} cannot be split evenly over {over}{steps}; "
                          f"use a multiple of {parts}")  # fmt: skip
    if o.min_lr > o.lr:
        raise where.error("optim.min_lr", f" {o.min_lr:g} is above the peak {where.option('optim.lr')} {o.lr:g}")


def process_count(trainer: TrainerConfig) -> int | None:
    """Processes of the run (devices x nodes) when the config alone says (None for 'auto', -1)."""
    devices = trainer.devices
    if isinstance(devices, str):
        devices = devices.strip()
        if "," in devices:
            devices = len([d for d in devices.split(",") if d])
        elif devices.isdigit():
            devices = int(devices)
        else:
            return None
    return devices * trainer.num_nodes if devices >= 1 else None


def check_model(model: ModelConfig, data: DataConfig, where: Where, run_init: bool) -> None:
    """``model.init`` is an encoder directory (``run_init``: or a pretrain run holding one);
    without it, ``model.overrides`` are fields the backbone's config accepts, with values it
    accepts (images at the data's size and channels, as the run builds it)."""
    if model.init is not None:
        init = Path(model.init).expanduser()
        if (init / ENCODER_CONFIG).is_file() or (run_init and (init / RunDir.ENCODER / ENCODER_CONFIG).is_file()):
            return
        also = f", nor a run directory with {RunDir.ENCODER}/" if run_init else ""
        raise where.error("model.init", f" {model.init}: not an encoder directory (no {ENCODER_CONFIG} written by "
                          f"save_pretrained){also}")  # fmt: skip
    base = backbone_config(model.backbone)
    overrides = dict(model.overrides)
    if base.modality == "image":
        overrides.setdefault("img_size", data.img_size)
        overrides.setdefault("in_chans", data.in_chans)
    check_overrides(base, model.backbone, overrides, "model.overrides", where)


def check_overrides(base: Any, name: str, overrides: dict, key: str, where: Where) -> None:
    """``overrides`` name fields of the backbone config ``base`` (of variant ``name``) and give
    values its config accepts."""
    known = [f.name for f in dataclasses.fields(base)]
    for field in overrides:
        if field not in known:
            raise where.error(key, f": {field!r} is not a field of {name}'s config{did_you_mean(str(field), known)}")
    try:
        replace_config(base, **overrides)
    except (ValueError, TypeError) as e:
        raise where.error(key, f" {overrides}: {e}") from e


def check_task_relations(section: Any, prefix: str, where: Where) -> None:
    """Relations inside the selected task's section."""
    if isinstance(section, TokenMaskingConfig) and section.replace_prob + section.random_prob > 1:
        other = f"{where.option(prefix + '.replace_prob')} {section.replace_prob:g}"
        raise where.error(f"{prefix}.random_prob", f" {section.random_prob:g} + {other} must be <= 1")
    if isinstance(section, Data2VecConfig) and None not in (section.ema_decay, section.ema_end_decay) \
            and section.ema_decay > section.ema_end_decay:
        raise where.error(f"{prefix}.ema_decay", f" {section.ema_decay:g} must be <= "
                          f"{where.option(prefix + '.ema_end_decay')} {section.ema_end_decay:g}")  # fmt: skip
    if isinstance(section, MoCoV3Config) and section.momentum > section.momentum_end:
        raise where.error(f"{prefix}.momentum", f" {section.momentum:g} must be <= "
                          f"{where.option(prefix + '.momentum_end')} {section.momentum_end:g}")  # fmt: skip
    if isinstance(section, CLIPConfig) and section.loss == "sigmoid" and section.local_loss:
        raise where.error(f"{prefix}.local_loss", f" is an option of {where.option(prefix + '.loss')} softmax; "
                          "the sigmoid loss is always computed per process (texts exchanged around a ring)")  # fmt: skip
    if isinstance(section, TeacherConfig):
        check_teacher_relations(section, prefix, where)
    if isinstance(section, VisualTokensConfig) and section.tokenizer is None:
        raise where.error(f"{prefix}.tokenizer", " is required: the directory of a `convergent pretrain --task.name "
                          "vqvae` run (or its image_tokenizer/)")  # fmt: skip
    if isinstance(section, CLIPConfig) and section.text_overrides:
        check_overrides(backbone_config(section.text_backbone), section.text_backbone, section.text_overrides,
                        f"{prefix}.text_overrides", where)  # fmt: skip


def check_teacher_relations(section: TeacherConfig, prefix: str, where: Where) -> None:
    """A distillation teacher is named, and its normalisation is given whole or not at all."""
    if section.teacher is None:
        raise where.error(f"{prefix}.teacher", " is required: the run directory of another `convergent pretrain` "
                          "run, an encoder directory written by save_pretrained, or a Hugging Face model directory")  # fmt: skip
    if (section.teacher_mean is None) != (section.teacher_std is None):
        given, other = ("teacher_mean", "teacher_std") if section.teacher_std is None else ("teacher_std", "teacher_mean")
        raise where.error(f"{prefix}.{given}", f" needs {where.option(f'{prefix}.{other}')} too (one per channel, "
                          "or one for all)")  # fmt: skip
    if section.teacher_mean is not None and len(section.teacher_mean) != len(section.teacher_std):
        raise where.error(f"{prefix}.teacher_mean", f" has {len(section.teacher_mean)} values, "
                          f"{where.option(f'{prefix}.teacher_std')} {len(section.teacher_std)}")  # fmt: skip


# --- paths: the resumed run, the output, free space ---------------------------------------------------


def check_resume_dir(path: "str | os.PathLike[str]") -> None:
    """``--resume PATH`` names a run directory (with its ``config.yaml``)."""
    expected = f"expected the run directory of `convergent pretrain` (with its {RunDir.CONFIG})"
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--resume {path}: no such directory; {expected}")
    if not p.is_dir() or not RunDir(p).is_run():
        raise ConfigError(f"--resume {path}: not a run directory; {expected}")


def check_output(trainer: TrainerConfig, where: Where = CLI) -> None:
    """A new run can write ``trainer.out_dir/run_name``: its nearest existing directory is
    writable, and it is not an existing run's directory with checkpoints."""
    target = Path(trainer.out_dir).expanduser() / (trainer.run_name or "")
    check_writable(target, where.option("trainer.out_dir"))
    saved = [p for p in RunDir(target).checkpoints.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")]
    if trainer.run_name and saved:
        raise where.error("trainer.run_name", f" {trainer.run_name}: {target} already holds a run's checkpoints; "
                          f"continue it with --resume {target}, or choose another run name")  # fmt: skip


def check_writable(path: Path, option: str) -> None:
    """Files can be created under ``path`` (created later if missing): a probe file is created
    and removed in its nearest existing directory."""
    existing = nearest_existing(path)
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, not a directory")
    try:
        probe_writable(existing)
    except OSError as e:
        raise ConfigError(f"{option} {path}: cannot write in {existing}: {e.strerror or e}") from e


def probe_writable(directory: Path) -> None:
    """Create and remove a file in ``directory``; the ``OSError`` of a read-only or full file
    system, or of missing permissions, is raised."""
    fd, name = tempfile.mkstemp(prefix=".convergent-write-probe-", dir=directory)
    os.close(fd)
    os.unlink(name)


def nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_free_space(path: Path, needed: int, option: str, what: str) -> None:
    """At least ``needed`` bytes are free on the file system that will hold ``path`` (``what``
    they are for goes in the message)."""
    free = shutil.disk_usage(nearest_existing(path)).free
    if free < needed:
        raise ConfigError(f"{option} {path}: {size(free)} free there, but {what} need about {size(needed)}; "
                          "free some space or write elsewhere")  # fmt: skip


def size(n: float) -> str:
    """``n`` bytes as text (``1.2 GB``)."""
    units = ("B", "kB", "MB", "GB", "TB")
    i = 0
    while n >= 1000 and i < len(units) - 1:
        n, i = n / 1000, i + 1
    return f"{n:.0f} B" if i == 0 else f"{n:.1f} {units[i]}"


# --- types -------------------------------------------------------------------------------------------------


def matches(value: Any, tp: Any) -> bool:
    """Whether ``value`` is of the annotation ``tp`` (int, float, bool, str, None, unions,
    tuples, dicts, lists, dataclasses; anything else is not checked here)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, a) for a in args)
    if tp is type(None):
        return value is None
    if tp in (int, float, bool, str):
        if tp is not bool and isinstance(value, bool):
            return False
        return isinstance(value, (int, float) if tp is float else tp)
    if tp is tuple or origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return not args or (len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args)))
    if tp is dict or origin is dict:
        return isinstance(value, dict)
    if tp is list or origin is list:
        return isinstance(value, (list, tuple))
    if dataclasses.is_dataclass(tp):
        return isinstance(value, tp)
    return True


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}


def describe(tp: Any) -> str:
    """The annotation ``tp`` in words (``an integer or null``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if tp in _NAMES:
        return _NAMES[tp]
    if tp is tuple or origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0]).split(' ', 1)[-1]}s"
        return f"a list of {len(args)} {describe(args[0]).split(' ', 1)[-1]}s" if args else "a list"
    if tp is dict or origin is dict:
        return "a mapping ({key: value, ...})"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} options"
    return str(tp)


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``choices``, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
