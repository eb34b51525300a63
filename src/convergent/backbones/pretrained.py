"""Weights on disk: ``config.json`` + ``model.safetensors``. Never pickle for weights."""

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from convergent.backbones.configs import config_from_dict, config_to_dict, replace_config
from convergent.backbones.registry import model_class
from convergent.choices import ENCODER_CONFIG

CONFIG_NAME = ENCODER_CONFIG
WEIGHTS_NAME = "model.safetensors"


def save_pretrained(model, path: str | Path) -> Path:
    """Write ``model``'s config and weights to directory ``path``; returns ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    tmp = path / (WEIGHTS_NAME + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "library": "convergent"})
    tmp.replace(path / WEIGHTS_NAME)
    (path / CONFIG_NAME).write_text(json.dumps(config_to_dict(model.config), indent=2) + "\n")
    return path


def load_config(path: str | Path):
    """The backbone config stored in directory ``path``."""
    file = Path(path) / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(f"{file}: no {CONFIG_NAME}; expected a directory written by save_pretrained")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: not valid JSON ({e})") from e
    return config_from_dict(data, source=str(file))


def from_pretrained(path: str | Path, **overrides):
    """Build the backbone saved in ``path``; ``overrides`` change its config (e.g. a new
    ``img_size`` / ``window_size``) and the weights are adapted to it."""
    return build_pretrained(*read_pretrained(path), **overrides)


def read_pretrained(path: str | Path) -> tuple:
    """``(config, state dict, weights file)`` saved in directory ``path``, not built."""
    path = Path(path)
    source_cfg = load_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: missing; expected safetensors weights beside {CONFIG_NAME}")
    return source_cfg, load_file(str(weights)), str(weights)


def build_pretrained(source_cfg, state_dict: dict, source: str = "state dict", **overrides):
    """The backbone of config ``source_cfg`` holding ``state_dict`` (named ``source`` in errors),
    with ``overrides`` applied to its config and the weights adapted to them, as
    :func:`from_pretrained` does for a directory (a converted checkpoint held in memory)."""
    cfg = replace_config(source_cfg, **overrides) if overrides else source_cfg
    cls = model_class(cfg)
    model = cls(cls.transfer_config(source_cfg, cfg, overrides))
    state = model.adapt_state_dict(state_dict, source_cfg)
    model.load_weights(state, source=source)
    return model
