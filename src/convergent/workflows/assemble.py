"""A run assembled from its config: the datasets, the encoder (backbone) and the task around it.

Every verb builds its pieces here — ``convergent pretrain``, ``finetune`` and ``eval``, a
converted CLIP (:mod:`.convert_clip`) and a run loaded back (:func:`load_task_from_run`: its
task with the newest checkpoint's weights and its tokenizer, for ``convergent generate``,
``convergent eval zero-shot`` / ``retrieval`` / ``language-model``, ``convergent convert`` of a
CLIP run) — so a config means the same model everywhere.
"""

from pathlib import Path
from typing import Any

from convergent.backbones.configs import vocabulary_overrides
from convergent.backbones.pretrained import from_pretrained, load_config
from convergent.backbones.protocol import Backbone
from convergent.backbones.registry import backbone_config, build_backbone
from convergent.config import FinetuneConfig, PretrainConfig, RunConfig
from convergent.data.protocol import Dataset
from convergent.data.registry import build_dataset
from convergent.data.tokenizer import Tokenizer
from convergent.rundir import RunDir
from convergent.tasks.base import Task, check_backbone
from convergent.tasks.configs import TeacherConfig, VisualTokensConfig
from convergent.tasks.registry import build_task, task_class, task_field
from convergent.tasks.vqvae import VQVAE
from convergent.training.checkpoint import load_latest
from convergent.workflows.runs import read_config, saved_encoder
from convergent.workflows.teacher import teacher_inputs
from convergent.workflows.text import find_tokenizer, tokenizer_vocab


def build_datasets(cfg: RunConfig) -> tuple[Dataset, Dataset | None]:
    """Training set and, when the dataset has one, the labelled test split for evaluation."""
    kw = dict(root=cfg.data.root, img_size=cfg.data.img_size, in_chans=cfg.data.in_chans,
              max_image_pixels=cfg.data.max_image_pixels, verify=cfg.data.verify)  # fmt: skip
    train = build_dataset(cfg.data.name, "train", limit=cfg.data.limit, **kw)
    try:
        test = build_dataset(cfg.data.name, "test", **kw)
    except (ValueError, KeyError, FileNotFoundError):
        test = None
    if test is not None and not test.heldout:
        print(f"note: {cfg.data.name} at {cfg.data.root} has no held-out split folder (test/ or val/): no evaluation")
        test = None
    return train, test


def build_encoder(cfg: PretrainConfig | FinetuneConfig, tokenizer: Tokenizer | None = None, causal: bool = False) -> Backbone:
    """The backbone of the run: registered variant (+ overrides) or ``model.init`` weights.
    Image backbones take the data's image size and channels, text backbones the tokenizer's
    vocabulary and special ids (and ``causal``), unless overrides say otherwise."""
    overrides = dict(cfg.model.overrides or {})
    base = load_config(cfg.model.init) if cfg.model.init else backbone_config(cfg.model.backbone)
    if base.modality == "image":
        overrides.setdefault("img_size", cfg.data.img_size)
        overrides.setdefault("in_chans", cfg.data.in_chans)
    if tokenizer is not None and base.modality == "text":
        found = vocabulary_overrides(base, tokenizer_vocab(tokenizer, cfg.data.max_length))
        for k, v in {**found, **({"causal": True} if causal else {})}.items():
            overrides.setdefault(k, v)
    if cfg.model.init:
        return from_pretrained(cfg.model.init, **overrides)
    return build_backbone(cfg.model.backbone, **overrides)


def task_encoder(cfg: PretrainConfig, tokenizer: Tokenizer | None = None) -> Backbone:
    """:func:`build_encoder` as the run's task needs it (causal attention for a task that
    requires ``supports_causal``): a run's encoder, or the same backbone with random weights."""
    return build_encoder(cfg, tokenizer, causal="supports_causal" in task_class(cfg.task.name).requires)


def build_run_task(cfg: PretrainConfig, tokenizer: Tokenizer | None = None) -> Task:
    """The task of a run around its encoder (:func:`build_encoder`); a task that embeds text
    beside its backbone (CLIP's text tower, ViLT's word embeddings) takes what the run's
    tokenizer decides through ``Task.configure_text``; a task that distils a frozen teacher
    (its config a :class:`~convergent.tasks.configs.TeacherConfig`) takes the teacher, loaded
    from its source (:mod:`convergent.workflows.teacher`); BEiT and text-to-image take their image
    tokenizer (``VQVAE.from_pretrained`` of the section's ``tokenizer``)."""
    cls = task_class(cfg.task.name)
    backbone = task_encoder(cfg, tokenizer)
    task_cfg = cfg.task.selected()
    if tokenizer is not None:
        cls.configure_text(task_cfg, tokenizer_vocab(tokenizer, cfg.data.max_length))
    inputs = {}
    if isinstance(task_cfg, TeacherConfig):
        check_backbone(cls, backbone)  # a text student is refused before its teacher is read
        inputs = teacher_inputs(task_cfg, backbone, cfg.data, f"task.{task_field(cfg.task.name)}")
    if isinstance(task_cfg, VisualTokensConfig):
        check_backbone(cls, backbone)
        inputs = {"tokenizer": image_tokenizer(task_cfg.tokenizer, cfg.data, f"task.{task_field(cfg.task.name)}")}
    return build_task(cfg.task.name, backbone, task_cfg, **inputs)


def image_tokenizer(path: str, data: Any, section: str) -> VQVAE:
    """The image tokenizer at ``path`` (``--{section}.tokenizer``), for the images of data
    settings ``data``; a directory of another kind, image size or channel count, or one trained
    on images normalised otherwise (when its run's ``config.yaml`` is there to say), is one
    error naming the option."""
    try:
        tokenizer = VQVAE.from_pretrained(path)
    except (FileNotFoundError, ValueError) as e:
        raise ValueError(f"--{section}.tokenizer {e}") from None
    if tokenizer.backbone.image_size != data.img_size:
        raise ValueError(f"--{section}.tokenizer {path} encodes {tokenizer.backbone.image_size}-px images, this "
                         f"run's data.img_size is {data.img_size}: use the same size")  # fmt: skip
    if tokenizer.backbone.in_chans != data.in_chans:
        raise ValueError(f"--{section}.tokenizer {path} encodes {tokenizer.backbone.in_chans}-channel images, this "
                         f"run's data.in_chans is {data.in_chans}: use the same")  # fmt: skip
    run = next((RunDir(p) for p in (Path(path), Path(path).parent) if RunDir(p).is_run()), None)
    if run is not None:  # the tokenizer's codes are those of images normalised as its run did
        trained = read_config(run).data
        if (tuple(trained.mean), tuple(trained.std)) != (tuple(data.mean), tuple(data.std)):
            raise ValueError(f"--{section}.tokenizer {path} was trained on images normalised with mean "
                             f"{list(trained.mean)} / std {list(trained.std)}, this run's data.mean / data.std are "
                             f"{list(data.mean)} / {list(data.std)}: use the same")  # fmt: skip
    return tokenizer


def load_task_from_run(run_dir: str | Path) -> tuple[Any, Any, Any]:
    """``(task, tokenizer, cfg)`` of a pre-training run: its task with the weights of its newest
    checkpoint (eval mode, CPU), its tokenizer (None for runs without text) and its config."""
    run = RunDir(run_dir)
    cfg = read_config(run)
    tokenizer = find_tokenizer(cfg, run.root)
    ck = load_latest(run.root, clean=False)
    if ck is None:
        raise FileNotFoundError(f"{run.checkpoints}: no complete checkpoint to load")
    # the architecture is the run's (its saved encoder when finished); the checkpoint holds every weight
    encoder = saved_encoder(run)
    cfg.model.init = str(encoder) if encoder is not None else None
    task = build_run_task(cfg, tokenizer)
    task.load_state_dict(ck.weights, strict=True)
    return task.eval(), tokenizer, cfg
