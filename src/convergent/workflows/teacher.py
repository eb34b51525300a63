"""The frozen teacher of a distillation task (``task.fd``; :class:`~convergent.tasks.configs.TeacherConfig`),
loaded for a run. ``teacher`` names one of:

* a ``convergent pretrain`` run directory (``config.yaml``): its ``encoder/``; the images it was
  trained on were normalised with the run's ``data.mean`` / ``data.std`` (a CLIP converted by
  ``convergent convert`` is such a run, recording the CLIP processor's);
* an encoder directory written by ``save_pretrained`` (``config.json`` with a ``family``): its
  normalisation is the run's when it is a run's ``encoder/``, else unrecorded;
* a Hugging Face model directory (``config.json`` with a ``model_type``, and weights): converted
  in memory by :func:`convergent.converters.hf.hf_backbone_weights` (a CLIP or CLIP vision model
  gives its image tower); its normalisation is its ``preprocessor_config.json``'s (a CLIP without
  one: OpenAI's), else unrecorded.

The teacher is built with the student's channels at the size it will read
(``teacher_img_size``, else the student's ``image_size``), its position table / windows adapted
as ``from_pretrained`` does. ``teacher_mean`` / ``teacher_std`` override the recorded
normalisation; when none is recorded the student's data normalisation is assumed, with a
warning. Each bad input is refused here, before any data loads, with one error naming the
option: a path that does not exist, a directory that holds none of these, a text encoder,
other channels, a size the teacher cannot read.
"""

import warnings
from pathlib import Path
from typing import Any

from convergent.backbones.configs import config_to_dict
from convergent.backbones.pretrained import build_pretrained, read_pretrained
from convergent.backbones.protocol import Backbone
from convergent.config import DataConfig
from convergent.converters import hf_clip
from convergent.converters.hf import HF_CONFIG, hf_backbone_weights, hf_image_stats, read_json
from convergent.data.transforms import channel_stats
from convergent.rundir import RunDir
from convergent.tasks.configs import TeacherConfig
from convergent.tasks.fd import Renormalize
from convergent.workflows.runs import read_config, saved_encoder

EXPECTED = ("expected a `convergent pretrain` run directory, an encoder directory written by save_pretrained, or "
            "a Hugging Face model directory (config.json + weights)")  # fmt: skip
HF_TEXT_TOWERS = ("clip_text_model",)
"""HF model types of text towers (no backbone converter reads them): refused as text encoders."""

Stats = tuple[list[float], list[float]]


def teacher_inputs(config: TeacherConfig, student: Backbone, data: DataConfig, option: str) -> dict[str, Any]:
    """What a distillation task's constructor takes besides the student: ``teacher`` (the
    frozen encoder, built at the size it reads) and ``renormalize`` (the student's view → the
    teacher's input). ``option``: the config key of the task's section (``task.fd``), for errors."""
    path = teacher_path(config, option)
    source_cfg, weights, where, recorded = read_teacher(path, f"--{option}.teacher")
    teacher = build_teacher(source_cfg, weights, where, config, student, f"--{option}.teacher {path}")
    channels = student.in_chans
    view = (channel_stats(data.mean, channels, "mean"), channel_stats(data.std, channels, "std"))
    stats = teacher_stats(config, recorded, view, option, path, channels)
    return {"teacher": teacher, "renormalize": Renormalize.between(*view, *stats)}


def teacher_path(config: TeacherConfig, option: str) -> Path:
    """The teacher's directory, which must exist."""
    if not config.teacher:
        raise ValueError(f"--{option}.teacher is required: {EXPECTED}")
    path = Path(config.teacher).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"--{option}.teacher {config.teacher}: no such directory; {EXPECTED}")
    if not path.is_dir():
        raise ValueError(f"--{option}.teacher {config.teacher}: not a directory; {EXPECTED}")
    return path


def read_teacher(path: Path, option: str) -> tuple[Any, dict, str, Stats | None]:
    """``(backbone config, state dict, where the weights are, recorded (mean, std) or None)`` of
    the teacher directory ``path`` (see the module docstring)."""
    run = RunDir(path)
    if run.is_run():
        encoder = saved_encoder(run)
        if encoder is None:
            raise FileNotFoundError(f"{option} {path}: a run without {RunDir.ENCODER}/ (not finished yet, or it "
                                    "failed); the teacher is a finished run's encoder")  # fmt: skip
        return (*read_pretrained(encoder), _run_stats(run))
    if not (path / HF_CONFIG).is_file():
        raise ValueError(f"{option} {path}: neither {RunDir.CONFIG} nor {HF_CONFIG} there; {EXPECTED}")
    found = read_json(path / HF_CONFIG, what="model config")
    if "family" in found:  # an encoder directory of this library
        owner = RunDir(path.parent)
        stats = _run_stats(owner) if path.name == RunDir.ENCODER and owner.is_run() else None
        return (*read_pretrained(path), stats)
    model_type = found.get("model_type")
    if model_type in HF_TEXT_TOWERS:
        raise ValueError(f"{option} {path}: holds a text encoder (HF model_type {model_type!r}); {_IMAGE_ONLY}")
    if model_type is None:
        raise ValueError(f"{option} {path / HF_CONFIG}: neither a 'family' (save_pretrained) nor a HF "
                         f"'model_type'; {EXPECTED}")  # fmt: skip
    cfg, weights, model_type = hf_backbone_weights(path)
    stats = None
    if cfg.modality == "image":
        default = hf_image_stats(path, cfg.in_chans)
        clip = (list(hf_clip.OPENAI_MEAN), list(hf_clip.OPENAI_STD)) if model_type in hf_clip.IMAGE_TOWER_TYPES else None
        stats = default if default is not None else clip
    return cfg, weights, f"{path} (HF {model_type}, converted)", stats


def _run_stats(run: RunDir) -> Stats:
    """The normalisation a run's images had (its ``data.mean`` / ``data.std``)."""
    data = read_config(run).data
    return list(data.mean), list(data.std)


_IMAGE_ONLY = "the teacher of feature distillation is an image encoder that sees the student's view"


def build_teacher(source_cfg: Any, weights: dict, where: str, config: TeacherConfig, student: Backbone,
                  named: str) -> Backbone:  # fmt: skip
    """The teacher built from ``source_cfg`` and ``weights`` at the size it will read, after
    checking that it reads images with the student's channels. ``named``: the option and path."""
    if source_cfg.modality != "image":
        raise ValueError(f"{named}: holds a {source_cfg.modality} encoder ({source_cfg.family}); {_IMAGE_ONLY}")
    if source_cfg.in_chans != student.in_chans:
        raise ValueError(f"{named}: the teacher reads {source_cfg.in_chans}-channel images, the student "
                         f"{student.in_chans}-channel ones (data.in_chans); they must see the same view")  # fmt: skip
    size = config.teacher_img_size or student.image_size
    try:
        return build_pretrained(source_cfg, weights, where, img_size=size)
    except (ValueError, KeyError) as e:
        shape = ", ".join(f"{k} {v}" for k, v in config_to_dict(source_cfg).items() if k in _GEOMETRY)
        raise ValueError(
            f"{named}: the teacher ({source_cfg.family}: {shape}) cannot read {size}-px images ({e}); set "
            "teacher_img_size to a size it reads (the view is resized to it)"
        ) from e


_GEOMETRY = ("img_size", "patch_size", "window_size")


def teacher_stats(config: TeacherConfig, recorded: Stats | None, view: Stats, option: str, path: Path,
                  channels: int) -> Stats:  # fmt: skip
    """The teacher's normalisation: the config's, else the recorded one, else the view's (warned)."""
    if (config.teacher_mean is None) != (config.teacher_std is None):
        raise ValueError(f"--{option}.teacher_mean and --{option}.teacher_std go together: give both or neither")
    if config.teacher_mean is not None:
        recorded = (list(config.teacher_mean), list(config.teacher_std))
    if recorded is None:
        warnings.warn(
            f"--{option}.teacher {path}: the teacher's image normalisation is not recorded there; assuming the "
            f"student's (data.mean {view[0]}, data.std {view[1]}); set --{option}.teacher_mean / teacher_std "
            "if it was trained with another"
        )
        return view
    try:
        return channel_stats(recorded[0], channels, "mean"), channel_stats(recorded[1], channels, "std")
    except ValueError as e:
        raise ValueError(f"--{option}.teacher {path}: the teacher's normalisation does not fit {channels} "
                         f"channels ({e})") from e  # fmt: skip
