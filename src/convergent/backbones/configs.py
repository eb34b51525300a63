"""Backbone configurations as data (torch-free): to and from JSON-ready dicts, copies with
overrides, the fields a tokenizer decides. Each family's config dataclass lives in its spec
module (``<family>_spec.py``, see :mod:`convergent.backbones.families`) and names the class
that builds it (``builder``, ``"module:Class"``), imported only when a model is built.
"""

from dataclasses import asdict, fields
from typing import Any

from convergent.backbones.families import family_config_class, family_names


def vocabulary_overrides(base: Any, vocab: dict) -> dict:
    """Fields of a text config that a tokenizer decides. ``vocab`` holds ``vocab_size``,
    ``pad_token_id``, ``mask_token_id`` and ``max_length`` (tokens per sample); the position
    table grows to ``max_length`` when ``base`` has fewer positions."""
    out = {k: vocab[k] for k in ("vocab_size", "pad_token_id", "mask_token_id")}
    if base.max_position < vocab["max_length"]:
        out["max_position"] = vocab["max_length"]
    return out


def config_to_dict(cfg: Any) -> dict:
    """JSON-ready dict with the family name, for ``config.json``."""
    return {"family": cfg.family, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}}


def config_from_dict(data: dict, source: str = "config") -> Any:
    """Inverse of :func:`config_to_dict`; unknown keys are an error naming ``source``."""
    data = dict(data)
    family = data.pop("family", None)
    if family not in family_names():
        raise ValueError(f"{source}: 'family' must be one of {family_names()}, got {family!r}")
    cls = family_config_class(family)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown {family} config keys {unknown}; known keys: {sorted(known)}")
    return cls(**data)


def replace_config(cfg: Any, **overrides) -> Any:
    """Copy of ``cfg`` with ``overrides``; unknown keys are an error."""
    data = config_to_dict(cfg)
    data.update(overrides)
    return config_from_dict(data, source=f"overrides for {cfg.family}")
