"""Backbone registry. Torch-free: a variant is a thin function returning a config.

    @register_backbone("swinv2_tiny")
    def swinv2_tiny() -> SwinConfig:
        return SwinConfig(version=2, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))

``build_backbone(name, **overrides)`` imports the model class only then.
"""

import importlib
from collections.abc import Callable
from typing import Any

from convergent.backbones.configs import replace_config
from convergent.registry import Registry, load_target

_VARIANTS: Registry[Callable[[], Any]] = Registry("backbone")


def register_backbone(name: str) -> Callable:
    """Decorator registering a variant function under ``name``."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        return _VARIANTS.add(name, fn)

    return wrap


def _load_variants() -> None:
    importlib.import_module("convergent.backbones.variants")


def backbone_names() -> list[str]:
    """Registered backbone names, sorted."""
    _load_variants()
    return _VARIANTS.names()


def backbone_config(name: str, **overrides) -> Any:
    """The config of variant ``name`` with ``overrides`` applied."""
    _load_variants()
    cfg = _VARIANTS.get(name)()
    return replace_config(cfg, **overrides) if overrides else cfg


def model_class(cfg: Any) -> type:
    """The ``nn.Module`` class that builds ``cfg`` (imports torch)."""
    return load_target(cfg.builder)


def build_backbone(name_or_config: Any, **overrides):
    """Build a backbone from a registered name or a config object."""
    if isinstance(name_or_config, str):
        cfg = backbone_config(name_or_config, **overrides)
    else:
        cfg = replace_config(name_or_config, **overrides) if overrides else name_or_config
    return model_class(cfg)(cfg)
