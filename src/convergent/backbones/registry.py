"""Backbone registry: names → configs → models. Torch-free until a model is built.

Families and variants register themselves in their spec modules (see
:mod:`convergent.backbones.families`); ``build_backbone(name, **overrides)`` imports the model
class only then.
"""

from typing import Any

from convergent.backbones.configs import replace_config
from convergent.backbones.families import register_backbone, variant, variant_names
from convergent.registry import load_target

__all__ = ["backbone_config", "backbone_names", "build_backbone", "model_class", "register_backbone"]


def backbone_names() -> list[str]:
    """Registered backbone names, sorted."""
    return variant_names()


def backbone_config(name: str, **overrides) -> Any:
    """The config of variant ``name`` with ``overrides`` applied."""
    cfg = variant(name)()
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
