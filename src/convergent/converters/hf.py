"""Conversions on disk: read a Hugging Face directory, an official Swin checkpoint or a
convergent directory, let the pure state-dict converter map it, write the other layout.

The converters themselves (``hf_bert``, ``hf_vit``, ``hf_swin``, ``official_swin``) only map
configs and state dicts; this module owns the files and picks the converter:

* by ``config.json``'s ``model_type`` for HF directories (:func:`hf_converters`: each family's
  converter module, named by its config's ``converter``, lists the ``HF_MODEL_TYPES`` it reads),
* by the backbone family for convergent directories (the family config's ``converter``).

CLIP is a whole model (a task), not a backbone: a HF ``clip`` directory becomes a run
directory, and a clip run directory a HF ``CLIPModel`` directory, in
:mod:`convergent.workflows.convert_clip` (runs belong to the workflows; the pure mapping is
:mod:`convergent.converters.hf_clip`). ``convergent convert`` picks that path itself.

Each HF converter module provides one interface: ``config_from_checkpoint(hf_dict, sd)``,
``state_dict_from_hf(sd, cfg)``, ``config_to_hf(cfg)`` (with ``model_type``),
``state_dict_to_hf(sd, cfg, legacy=False)``, ``HEAD_PREFIXES``, the task-head keys it
skips (reported in the summary), and ``HF_MODEL_TYPES``, the ``model_type`` values it reads. Torch is imported only inside functions.
"""

import importlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convergent.backbones.configs import config_to_dict
from convergent.backbones.families import family_config_class, family_names
from convergent.converters import hf_clip

HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
"""Weight files looked for in a HF directory, in this order (each may be sharded with an
``<name>.index.json`` beside it)."""

PREPROCESSOR = "preprocessor_config.json"
"""A HF directory's image processor config: the image size and normalisation the model expects."""
WHOLE_MODELS = {"clip": "convergent.workflows.convert_clip.hf_to_run"}
"""HF model types that are whole models (written as run directories), and what converts them."""
OFFICIAL_SWIN = "convergent.converters.official_swin"


class ConversionError(ValueError):
    """Input that cannot be converted; the message names the file or key and what was expected."""


@dataclass
class ConversionResult:
    """What a conversion did, for the one-line summary the CLI prints."""

    source: str
    """What was read, e.g. ``"HF bert"``."""
    target: str
    """What was written, e.g. ``"convergent text (depth 12, width 768)"``."""
    dst: Path
    num_tensors: int
    ignored: list[str] = field(default_factory=list)
    """Source keys deliberately left out (task heads such as ``classifier.*``)."""
    ignored_kind: str = "head keys"
    """What the ignored keys are, for the summary."""
    notes: list[str] = field(default_factory=list)
    """Anything else the user must know (e.g. a tokenizer carried over or missing)."""

    def summary(self) -> str:
        line = f"converted {self.source} -> {self.target}: {self.num_tensors} tensors"
        if self.ignored:
            shown = ", ".join(self.ignored[:4]) + (", ..." if len(self.ignored) > 4 else "")
            line += f"; ignored {len(self.ignored)} {self.ignored_kind} ({shown})"
        return "; ".join([f"{line}; written to {self.dst}", *self.notes])


# --- conversions ------------------------------------------------------------------------------


def hf_to_convergent(src: str | Path, dst: str | Path) -> ConversionResult:
    """Convert the HF model directory ``src`` into a convergent directory ``dst``."""
    src = Path(src)
    config, state_dict = load_hf_dir(src)
    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in WHOLE_MODELS:
        raise ConversionError(f"{src / HF_CONFIG}: model_type {model_type!r} is a whole model, not a backbone; "
                              f"{WHOLE_MODELS[model_type]} converts it (as `convergent convert` does)")  # fmt: skip
    also = "; ".join(f"{k} (a whole model, written as a run directory)" for k in sorted(WHOLE_MODELS))
    module = _converter(hf_converters(), model_type, f"{src / HF_CONFIG}: model_type", also=also)
    try:
        cfg = module.config_from_checkpoint(config, state_dict)
        converted = module.state_dict_from_hf(state_dict, cfg)
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{src}: {error_text(e)}") from e
    _build_and_save(cfg, converted, dst, source=str(src))
    ignored = sorted(k for k in state_dict if k.startswith(module.HEAD_PREFIXES))
    return ConversionResult(f"HF {model_type}", _describe(cfg), Path(dst), len(converted), ignored)


def hf_backbone_weights(src: str | Path) -> tuple[Any, dict, str]:
    """``(backbone config, state dict, model_type)`` of the HF model directory ``src``, converted
    in memory (nothing is written): a backbone by its ``model_type``, as :func:`hf_to_convergent`,
    or the image tower (a ViT) of a CLIP (``clip``) or a CLIP vision model (``clip_vision_model``).
    Task heads and, of a CLIP, the text tower and projections are left out."""
    src = Path(src)
    config, state_dict = load_hf_dir(src)
    model_type = config.get("model_type")
    also = ", ".join(f"{t} (its image tower)" for t in hf_clip.IMAGE_TOWER_TYPES)
    try:
        if model_type in hf_clip.IMAGE_TOWER_TYPES:
            cfg = hf_clip.vision_config_from_hf(config)
            return cfg, hf_clip.vision_state_dict_from_hf(state_dict, cfg, prefix=None), model_type
        module = _converter(hf_converters(), model_type, f"{src / HF_CONFIG}: model_type", also=also)
        cfg = module.config_from_checkpoint(config, state_dict)
        return cfg, module.state_dict_from_hf(state_dict, cfg), model_type
    except ConversionError:
        raise
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{src}: {error_text(e)}") from e


def convergent_to_hf(src: str | Path, dst: str | Path, legacy: bool = False) -> ConversionResult:
    """Convert the convergent directory ``src`` into a HF directory ``dst`` (``config.json`` +
    ``model.safetensors``); ``legacy`` asks for transformers 4.x key names. ``src`` is a backbone
    directory (``save_pretrained``); clip run directories: :mod:`convergent.workflows.convert_clip`."""
    from convergent.backbones.pretrained import from_pretrained

    model = from_pretrained(src)  # validates config, keys and shapes, naming the file
    cfg = model.config
    module = _converter(family_converters(), cfg.family, f"{Path(src) / HF_CONFIG}: family")
    state_dict = {k: v.detach() for k, v in model.state_dict().items()}
    hf_config = module.config_to_hf(cfg)
    hf_state = module.state_dict_to_hf(state_dict, cfg, legacy=legacy)
    write_hf_dir(dst, hf_config, hf_state)
    kind = f"HF {hf_config.get('model_type', '?')}" + (" (4.x key names)" if legacy else "")
    return ConversionResult(_describe(cfg), kind, Path(dst), len(hf_state))


def official_swin_to_convergent(src: str | Path, dst: str | Path, img_size: int | None = None) -> ConversionResult:
    """Convert an official Swin / Swin V2 checkpoint file into a convergent directory.
    The file stores no config: it is inferred from tensor shapes; ``img_size`` gives the
    resolution it was trained at where shapes cannot tell."""
    src = Path(src)
    state_dict = load_checkpoint(src)
    module = _import_converter(OFFICIAL_SWIN, "official Swin checkpoints")
    try:
        cfg = module.config_from_official(state_dict, img_size=img_size)
        converted = module.state_dict_from_official(state_dict, cfg)
    except (KeyError, ValueError) as e:
        raise ConversionError(f"{src}: {error_text(e)}") from e
    _build_and_save(cfg, converted, dst, source=str(src))
    ignored = sorted(module.ignored_keys(state_dict))
    return ConversionResult(f"official Swin V{cfg.version}", _describe(cfg), Path(dst), len(converted), ignored)


# --- reading ------------------------------------------------------------------------------------


def load_hf_dir(path: str | Path) -> tuple[dict, dict]:
    """``(config dict, state dict)`` of a HF model directory: ``config.json`` plus
    ``model.safetensors`` or ``pytorch_model.bin`` (sharded ``*.index.json`` also read)."""
    path = Path(path)
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        hint = ""
        if not path.exists() and str(path).count("/") == 1 and not str(path).startswith("."):
            hint = f" (a Hub id? download it first: hf download {path} --local-dir DIR)"
        raise ConversionError(f"{path} {what}; expected a HF model directory with {HF_CONFIG} and weights{hint}")
    config = read_json(path / HF_CONFIG, what="HF model config")
    for name in HF_WEIGHTS:
        if (path / name).is_file():
            return config, load_weights_file(path / name)
        if (path / f"{name}.index.json").is_file():
            return config, _load_sharded(path / f"{name}.index.json")
    raise ConversionError(f"{path}: no weights; expected {' or '.join(HF_WEIGHTS)} beside {HF_CONFIG}")


def read_json(file: Path, what: str = "JSON") -> dict:
    """The JSON object in ``file``; errors name the file and what was expected."""
    if not file.is_file():
        raise ConversionError(f"{file}: missing; expected the {what}")
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{file}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConversionError(f"{file}: expected a JSON object, got {type(data).__name__}")
    return data


def hf_image_stats(src: str | Path, channels: int,
                   default: tuple = (hf_clip.OPENAI_MEAN, hf_clip.OPENAI_STD)) -> tuple[list, list] | None:  # fmt: skip
    """``(mean, std)`` of the HF directory ``src``'s :data:`PREPROCESSOR` (a key it lacks:
    ``default``'s, OpenAI CLIP's), one value per channel; None without that file."""
    file = Path(src) / PREPROCESSOR
    if not file.is_file():
        return None
    data = read_json(file, what="HF image processor config")
    stats = []
    for key, fallback in zip(("image_mean", "image_std"), default):
        value = data.get(key, list(fallback))
        if not isinstance(value, list) or len(value) != channels:
            raise ConversionError(f"{file}: {key} must be a list of {channels} numbers, got {value!r}")
        stats.append([float(x) for x in value])
    return stats[0], stats[1]


def load_weights_file(file: Path) -> dict:
    """Tensors of a ``.safetensors`` file, or of a torch file loaded with ``weights_only=True``
    (never unpickles code)."""
    if not file.is_file():
        raise ConversionError(f"{file}: missing; expected a weights file")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(file))
        import torch

        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt/truncated files raise many types; report them all the same way
        kind = "safetensors" if file.suffix == ".safetensors" else "torch (weights_only)"
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConversionError(f"{file}: cannot be read as {kind} weights ({detail})") from e


def load_checkpoint(file: Path) -> dict:
    """State dict of a checkpoint file (``.pth``/``.pt``/``.bin``/``.safetensors``); a training
    checkpoint's weights under ``"model"`` (or ``"state_dict"``) are unwrapped."""
    if not file.is_file():
        raise ConversionError(f"{file}: missing; expected a .pth/.pt or .safetensors checkpoint file")
    data = load_weights_file(file)
    for key in ("model", "state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    import torch

    if not isinstance(data, dict) or not data:
        raise ConversionError(f"{file}: expected a state dict (name -> tensor), got {type(data).__name__}")
    bad = sorted(k for k, v in data.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ConversionError(f"{file}: entries that are not tensors: {bad[:5]}; expected a state dict")
    return data


def _load_sharded(index_file: Path) -> dict:
    index = read_json(index_file, what="sharded weights index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise ConversionError(f"{index_file}: no 'weight_map' object")
    state_dict = {}
    for shard in sorted(set(weight_map.values())):
        state_dict.update(load_weights_file(index_file.parent / shard))
    return state_dict


# --- writing ------------------------------------------------------------------------------------


def write_hf_dir(dst: str | Path, config: dict, state_dict: dict) -> Path:
    """Write ``config.json`` and ``model.safetensors`` as transformers' ``from_pretrained`` reads them."""
    from safetensors.torch import save_file

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    tensors, seen = {}, set()
    for k, v in state_dict.items():
        v = v.detach().contiguous().cpu()
        if v.data_ptr() in seen and v.numel():  # tied weights: safetensors refuses shared storage
            v = v.clone()
        seen.add(v.data_ptr())
        tensors[k] = v
    tmp = dst / (HF_WEIGHTS[0] + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(dst / HF_WEIGHTS[0])
    (dst / HF_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return dst


def _build_and_save(cfg: Any, state_dict: dict, dst: str | Path, source: str):
    """Build the backbone for ``cfg``, load ``state_dict`` strictly and save it to ``dst``."""
    from convergent.backbones.registry import build_backbone

    model = build_backbone(cfg)
    try:
        model.load_weights(state_dict, source=f"converted {source}")
    except (KeyError, ValueError) as e:
        raise ConversionError(error_text(e)) from e
    model.save_pretrained(dst)
    return model


# --- helpers ------------------------------------------------------------------------------------


def family_converters() -> dict[str, str]:
    """Backbone family → its HF converter module, as each family's config declares."""
    classes = {f: family_config_class(f) for f in family_names()}
    return {f: cls.converter for f, cls in classes.items() if cls.converter}


def hf_converters() -> dict[str, str]:
    """HF ``model_type`` → the converter module that reads it (``HF_MODEL_TYPES`` of each
    family's converter)."""
    table = {}
    for family, module in family_converters().items():
        for model_type in _import_converter(module, repr(family)).HF_MODEL_TYPES:
            table[model_type] = module
    return table


def _converter(table: dict[str, str], key: Any, where: str, also: str = ""):
    if key not in table:
        supported = ", ".join(sorted(table)) + (f"; {also}" if also else "")
        raise ConversionError(f"{where} {key!r} is not supported; supported: {supported}")
    return _import_converter(table[key], repr(key))


def _import_converter(module: str, what: str):
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name == module:
            raise ConversionError(f"no converter for {what} yet ({module} is missing)") from e
        raise


def _describe(cfg: Any) -> str:
    """``convergent swin (version 2, depths [2, 2, 6, 2], embed_dim 96)``: the family and its
    size fields."""
    data = config_to_dict(cfg)
    shown = [f"{k} {data[k]}" for k in _SIZE_FIELDS if k in data]
    return f"convergent {cfg.family} ({', '.join(shown)})"


_SIZE_FIELDS = ("version", "depth", "depths", "embed_dim", "dims")


def error_text(e: BaseException) -> str:
    """The message of ``e`` (a KeyError's without its repr quotes), for a :class:`ConversionError`."""
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
