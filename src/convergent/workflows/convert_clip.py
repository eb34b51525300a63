"""HF ``CLIPModel`` directories ⇄ convergent CLIP runs, on disk (``convergent convert``
calls :func:`hf_to_run` for a HF directory whose ``model_type`` is ``clip`` and
:func:`run_to_hf` for a run directory).

A CLIP is a task (two towers, two projections, a logit scale), not a backbone, and the
library loads a trained one from the directory ``convergent pretrain`` writes
(:func:`convergent.workflows.assemble.load_task_from_run`, used by ``convergent eval zero-shot``
/ ``retrieval``). So a HF CLIP becomes such a run directory::

    OUT/config.yaml                          the run config: task clip, towers, data settings
    OUT/checkpoints/step-000000/model.safetensors   every weight of the task
    OUT/checkpoints/step-000000/state.pt     {"step": 0, "converted_from": SRC}
    OUT/checkpoints/latest
    OUT/encoder/                             the image tower alone (save_pretrained), + tokenizer
    OUT/tokenizer/                           tokenizer.json (+ roles), when SRC has one

``config.yaml``'s data section takes the image size, channels, context length and the
normalisation of ``preprocessor_config.json`` (OpenAI's CLIP mean/std without one); the
evaluation data is the bundled ``emoji`` pairs: change ``data.name`` / ``data.root`` there.
The other way, a CLIP run directory (whatever ``load_task_from_run`` reads, so one written
above too) becomes ``config.json`` + ``model.safetensors`` (+ the tokenizer files and a
``preprocessor_config.json``) that ``transformers.CLIPModel.from_pretrained`` loads. The
mapping itself is :mod:`convergent.converters.hf_clip`; tokenizers, :mod:`.hf_tokenizer`;
the files of a HF directory, :mod:`convergent.converters.hf`.
"""

import json
import math
from dataclasses import replace
from pathlib import Path

from convergent.backbones.configs import config_to_dict
from convergent.config import PretrainConfig
from convergent.converters import hf_clip
from convergent.converters.hf import (
    HF_CONFIG,
    PREPROCESSOR,
    ConversionError,
    ConversionResult,
    error_text,
    hf_image_stats,
    load_hf_dir,
    read_json,
    write_hf_dir,
)
from convergent.converters.hf_clip import OPENAI_MEAN, OPENAI_STD
from convergent.data.tokenizer import META_FILE, TOKENIZER_FILE
from convergent.rundir import RunDir
from convergent.tasks.clip import init_log_scale
from convergent.tasks.configs import CLIPConfig
from convergent.training.checkpoint import complete_checkpoints, save_checkpoint, weights_for_saving
from convergent.workflows.assemble import build_run_task, load_task_from_run
from convergent.workflows.hf_tokenizer import read_hf_tokenizer, write_hf_tokenizer
from convergent.workflows.runs import read_config, write_config

EVAL_DATA = "emoji"
"""Evaluation data written into a converted run's config (bundled image-text pairs with classes)."""
_TOWERS = ("text_config", "vision_config")
_NO_HF_COUNTERPART = ("backbone.mask_token", "text_backbone.mask_token")


def is_hf_clip(path: str | Path) -> bool:
    """Whether ``path`` is a HF directory whose ``config.json`` says ``model_type: clip``
    (unreadable or missing files: False, and the backbone path reports them)."""
    try:
        return read_json(Path(path) / HF_CONFIG).get("model_type") == "clip"
    except ConversionError:
        return False


# --- HF -> run ----------------------------------------------------------------------------------


def hf_to_run(src: str | Path, dst: str | Path) -> ConversionResult:
    """Write the HF CLIP directory ``src`` as a run directory ``dst``."""
    src, dst = Path(src), Path(dst)
    config, state_dict = load_hf_dir(src)
    missing = [k for k in _TOWERS if not isinstance(config.get(k), dict)]
    if missing:
        names = " or ".join(map(repr, missing))
        raise ConversionError(f"{src / HF_CONFIG}: no {names} object; a HF CLIPConfig has both")
    try:
        towers = hf_clip.config_from_hf(config)
        weights = hf_clip.state_dict_from_hf(state_dict, towers)
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{src}: {error_text(e)}") from e
    tokenizer = read_hf_tokenizer(src, towers.text.vocab_size)
    (mean, std), stats_note = _image_stats(src, towers.vision.in_chans)
    cfg = _run_config(towers, float(weights["logit_scale"]), mean, std)
    task = _task_with(cfg, tokenizer, weights, src)
    run = RunDir(dst)
    _write_run(run, cfg, task, tokenizer, src)
    if tokenizer is not None:
        notes = [f"tokenizer carried over ({run.tokenizer})"]
    else:
        notes = [f"no {TOKENIZER_FILE} in {src}: zero-shot / retrieval need one (set data.tokenizer in {run.config})"]
    notes += [*stats_note, f"eval data: {EVAL_DATA} (data.name / data.root in {run.config})"]
    v, t = towers.vision, towers.text
    target = (f"convergent clip run (image vit depth {v.depth} width {v.embed_dim}, text depth {t.depth} "
              f"width {t.embed_dim}, embed {towers.embed_dim})")  # fmt: skip
    ignored = sorted(k for k in state_dict if k.endswith("embeddings.position_ids"))
    return ConversionResult("HF clip", target, dst, len(weights), ignored, "buffers", notes)


def _image_stats(src: Path, channels: int) -> tuple[tuple[list, list], list[str]]:
    """``((mean, std), notes)``: ``preprocessor_config.json``'s, else OpenAI CLIP's."""
    stats = hf_image_stats(src, channels)
    if stats is None:
        return (list(OPENAI_MEAN), list(OPENAI_STD)), [f"no {PREPROCESSOR}: OpenAI CLIP mean/std assumed"]
    return stats, []


def _run_config(towers, logit_scale: float, mean: list, std: list):
    """The ``PretrainConfig`` of a run that rebuilds ``towers`` (its image tower spelled out
    in ``model.overrides``, the text tower in the task's ``text_overrides``)."""
    v, t = towers.vision, towers.text
    cfg = PretrainConfig()
    cfg.data = replace(cfg.data, name=EVAL_DATA, img_size=v.img_size, in_chans=v.in_chans, mean=tuple(mean),
                       std=tuple(std), max_length=t.max_position, tokenizer_kind="bpe", vocab_size=t.vocab_size,
                       hflip=0.0)  # fmt: skip
    vision = {k: x for k, x in config_to_dict(v).items() if k != "family"}
    cfg.model = replace(cfg.model, backbone="vit_base_patch32_clip", overrides=vision, init=None)
    cfg.task.name = "clip"
    cfg.task.clip = CLIPConfig(
        **hf_clip.task_config_fields(towers), init_temperature=math.exp(-towers.logit_scale_init),
        max_logit_scale=max(100.0, math.exp(logit_scale)),  # HF does not clamp: keep the stored scale
    )  # fmt: skip
    cfg.eval = replace(cfg.eval, knn=False, linear_probe=False)
    return cfg


def _task_with(cfg, tokenizer, weights: dict, src: Path):
    """The run's task (built as ``load_task_from_run`` builds it) holding ``weights``."""
    task = build_run_task(cfg, tokenizer)
    own = task.state_dict()
    wrong = [f"{k} {tuple(weights[k].shape)} (config: {tuple(v.shape)})"
             for k, v in own.items() if k in weights and weights[k].shape != v.shape]  # fmt: skip
    if wrong:
        raise ConversionError(f"{src / HF_CONFIG} does not match the weights: {', '.join(wrong[:4])}")
    try:
        task.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise ConversionError(f"{src}: the converted weights do not fit the clip task ({e})") from e
    return task.eval()


def _write_run(run: RunDir, cfg, task, tokenizer, src: Path) -> None:
    others = [p.name for p in complete_checkpoints(run.root) if p.name != "step-000000"]
    if others:
        found = ", ".join(others)
        raise ConversionError(f"{run} already holds the checkpoints of a run ({found}); choose another output")
    header = (f"# converted by `convergent convert` from the HF CLIP directory {src}; evaluation data:\n"
              "# data.name / data.root (the image size, normalisation and context are the model's)\n")  # fmt: skip
    write_config(run, cfg, header)
    task.backbone.save_pretrained(run.encoder)
    for folder in (run.tokenizer, run.encoder):
        if tokenizer is not None:
            tokenizer.save(folder)
        else:  # a tokenizer of an earlier conversion into dst would be taken for this model's
            for name in (TOKENIZER_FILE, META_FILE):
                (folder / name).unlink(missing_ok=True)
    save_checkpoint(run.root, 0, weights_for_saving(task), {"step": 0, "converted_from": str(src)}, keep=1)


# --- run -> HF ----------------------------------------------------------------------------------


def run_to_hf(src: str | Path, dst: str | Path, legacy: bool = False) -> ConversionResult:
    """Write the CLIP of the run directory ``src`` as a HF ``CLIPModel`` directory ``dst``."""
    src, dst = Path(src), Path(dst)
    run = RunDir(src)
    file = run.config
    try:
        name = read_config(run).task.name
        if name != "clip":
            raise ConversionError(f"{file}: task {name!r}; --from convergent --to hf converts a clip run or a "
                                  f"backbone directory such as {run.encoder}")  # fmt: skip
        task, tokenizer, cfg = load_task_from_run(src)
    except ConversionError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise ConversionError(f"{src}: {error_text(e)}") from e
    towers = _towers(task, tokenizer, file)
    sd = {k: v.detach() for k, v in task.state_dict().items()}
    try:
        hf_config = hf_clip.config_to_hf(towers)
        hf_state = hf_clip.state_dict_to_hf(sd, towers)
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{file}: {error_text(e)}") from e
    write_hf_dir(dst, hf_config, hf_state)
    _write_preprocessor(dst, cfg.data)
    notes = []
    if tokenizer is not None:
        write_hf_tokenizer(tokenizer, dst, towers.text.max_position)
        notes.append("tokenizer written (tokenizer.json, tokenizer_config.json)")
    else:
        notes.append(f"{src} has no tokenizer: none written")
    if task.logit_scale.item() > task.max_log_scale:
        notes.append(f"logit_scale {task.logit_scale.item():.4f} is above the run's clamp; HF does not clamp it")
    kind = "HF clip" + (" (key names are the same in 4.x)" if legacy else "")
    ignored = sorted(k for k in _NO_HF_COUNTERPART if k in sd)
    what = "keys without a HF counterpart"
    return ConversionResult("convergent clip run", kind, dst, len(hf_state), ignored, what, notes)


def _towers(task, tokenizer, file: Path):
    """The run's :class:`~convergent.converters.hf_clip.CLIPTowers`; errors name ``file`` when
    HF ``CLIPModel`` cannot compute what the task computes."""
    c, image = task.config, task.backbone.config
    problems = []
    if c.loss != "softmax":
        problems.append(f"task.clip.loss {c.loss!r} (HF CLIPModel's loss is 'softmax'; SigLIP is SiglipModel)")
    if image.family != "vit":
        problems.append(f"the image tower is {image.family} (HF CLIPModel's is a ViT)")
    elif not (c.image_pooling == "cls" or (c.image_pooling == "default" and image.global_pool == "cls")):
        problems.append(f"task.clip.image_pooling {c.image_pooling!r} with global_pool {image.global_pool!r} "
                        "(HF pools the class token)")  # fmt: skip
    if c.text_pooling != "eos":
        problems.append(f"task.clip.text_pooling {c.text_pooling!r} (HF pools the end-of-text token: 'eos')")
    eos = tokenizer.sep_id if tokenizer is not None else None
    if eos == 2:
        problems.append("the tokenizer's end-of-text id is 2, which HF reads as a pre-2023 config (it pools the "
                        "highest id)")  # fmt: skip
    if problems:
        raise ConversionError(f"{file}: no HF CLIPModel equivalent: {'; '.join(problems)}")
    bos = tokenizer.cls_id if tokenizer is not None else None
    return hf_clip.CLIPTowers(image, task.text_backbone.config, c.embed_dim, init_log_scale(c), bos, eos)


def _write_preprocessor(dst: Path, data) -> None:
    """A ``CLIPImageProcessor`` config with the run's image size and normalisation."""
    size = int(data.img_size)
    processor = {
        "image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
        "do_center_crop": True, "crop_size": {"height": size, "width": size}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(data.mean), "image_std": list(data.std),
        "do_convert_rgb": True, "resample": 3,
    }  # fmt: skip
    (dst / PREPROCESSOR).write_text(json.dumps(processor, indent=2, sort_keys=True) + "\n")
