"""Backbone registry. Torch-free: a variant is a thin function returning a config.

    @register_backbone("swinv2_tiny")
    def swinv2_tiny() -> SwinConfig:
        return SwinConfig(version=2, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))

``build_backbone(name, **overrides)`` imports the model class only then.
"""

import difflib
import importlib
from collections.abc import Callable
from typing import Any

from convergent.backbones.configs import replace_config

_VARIANTS: dict[str, Callable[[], Any]] = {}


def register_backbone(name: str) -> Callable:
    """Decorator registering a variant function under ``name``."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        if name in _VARIANTS:
            raise ValueError(f"backbone {name!r} is registered twice")
        _VARIANTS[name] = fn
        return fn

    return wrap


def _load_variants() -> None:
    importlib.import_module("convergent.backbones.variants")


def backbone_names() -> list[str]:
    """Registered backbone names, sorted."""
    _load_variants()
    return sorted(_VARIANTS)


def backbone_config(name: str, **overrides) -> Any:
    """The config of variant ``name`` with ``overrides`` applied."""
    _load_variants()
    if name not in _VARIANTS:
        close = difflib.get_close_matches(name, _VARIANTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise KeyError(f"unknown backbone {name!r}{hint} (see `convergent list backbones`)")
    cfg = _VARIANTS[name]()
    return replace_config(cfg, **overrides) if overrides else cfg


def model_class(cfg: Any) -> type:
    """The ``nn.Module`` class that builds ``cfg`` (imports torch)."""
    module, cls = cfg.builder.split(":")
    return getattr(importlib.import_module(module), cls)


def build_backbone(name_or_config: Any, **overrides):
    """Build a backbone from a registered name or a config object."""
    if isinstance(name_or_config, str):
        cfg = backbone_config(name_or_config, **overrides)
    else:
        cfg = replace_config(name_or_config, **overrides) if overrides else name_or_config
    return model_class(cfg)(cfg)
