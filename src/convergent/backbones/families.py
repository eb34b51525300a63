"""The backbone families and their variants (torch-free).

A family is one spec module beside its model: ``<family>_spec.py`` holds the config dataclass
(decorated with :func:`register_family`, naming its model class in ``builder`` and its HF
converter module in ``converter``) and the variants (thin functions decorated with
:func:`register_backbone`). Adding a family is its two files and one line in :data:`SPECS`.

    @register_family
    @dataclass
    class ConvNeXtConfig:
        family: ClassVar[str] = "convnext"
        ...

    @register_backbone("convnext_tiny")
    def convnext_tiny() -> ConvNeXtConfig:
        return ConvNeXtConfig(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768))
"""

import importlib
from collections.abc import Callable
from typing import Any

from convergent.registry import Registry

SPECS = (
    "convergent.backbones.text_spec",
    "convergent.backbones.vit_spec",
    "convergent.backbones.swin_spec",
    "convergent.backbones.convnext_spec",
)
"""The spec module of every family: one line per family."""

_FAMILIES: Registry[type] = Registry("backbone family")
_VARIANTS: Registry[Callable[[], Any]] = Registry("backbone")


FAMILY_CONTRACT = ("family", "modality", "builder", "converter", "num_blocks")
"""What every family's config class declares: its name, ``'image'`` or ``'text'``, its model
class, its HF converter module (or None) and the number of blocks of a config (a property: the
indices ``forward_intermediates`` and ``eval.layer`` accept)."""


def register_family(cls: type) -> type:
    """Class decorator registering a family's config dataclass under its ``family`` name."""
    missing = [name for name in FAMILY_CONTRACT if not hasattr(cls, name)]
    if missing:
        raise TypeError(f"backbone family config {cls.__name__} does not declare {missing} (see FAMILY_CONTRACT)")
    return _FAMILIES.add(cls.family, cls)


def register_backbone(name: str) -> Callable:
    """Decorator registering a variant function (returning a config) under ``name``."""

    def wrap(fn: Callable[[], Any]) -> Callable[[], Any]:
        return _VARIANTS.add(name, fn)

    return wrap


def _load() -> None:
    for module in SPECS:
        importlib.import_module(module)


def family_names() -> list[str]:
    """Registered family names, sorted."""
    _load()
    return _FAMILIES.names()


def family_config_class(family: str) -> type:
    """The config dataclass of ``family``; KeyError with close matches if unknown."""
    _load()
    return _FAMILIES.get(family)


def variant_names() -> list[str]:
    """Registered variant names, sorted."""
    _load()
    return _VARIANTS.names()


def variant(name: str) -> Callable[[], Any]:
    """The variant function ``name``; KeyError with close matches if unknown."""
    _load()
    return _VARIANTS.get(name)
