"""Backbones: text Transformer, ViT, Swin V1/V2 and ConvNeXt behind one contract (see ``protocol``).

This package's ``__init__`` is torch-free; model classes are imported when built. Each family
is a spec module (config + variants, ``<family>_spec.py``) beside its model module.
"""

from convergent.backbones.registry import backbone_config, backbone_names, build_backbone, register_backbone
from convergent.backbones.swin_spec import SwinConfig
from convergent.backbones.text_spec import TextConfig
from convergent.backbones.vit_spec import ViTConfig

__all__ = [
    "SwinConfig",
    "TextConfig",
    "ViTConfig",
    "backbone_config",
    "backbone_names",
    "build_backbone",
    "register_backbone",
]
