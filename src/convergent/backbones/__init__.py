"""Backbones: text Transformer, ViT, Swin V1/V2 behind one contract (see ``protocol``).

This package's ``__init__`` is torch-free; model classes are imported when built.
"""

from convergent.backbones.configs import SwinConfig, TextConfig, ViTConfig
from convergent.backbones.registry import backbone_config, backbone_names, build_backbone, register_backbone

__all__ = [
    "SwinConfig",
    "TextConfig",
    "ViTConfig",
    "backbone_config",
    "backbone_names",
    "build_backbone",
    "register_backbone",
]
