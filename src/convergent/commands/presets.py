"""Bundled presets (``convergent/configs/*.yaml``): names, paths, and the ``--preset`` option."""

from pathlib import Path

import yaml
from jsonargparse import ActionConfigFile

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_PRESET = "simmim-swinv2-fmnist"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def bundled_or_file(directory: Path, name: str) -> Path | None:
    """``directory/name.yaml`` when it is bundled there, else ``name`` when it is a file, else None."""
    for path in (directory / f"{name}.yaml", Path(name)):
        if path.is_file():
            return path
    return None


def close_names(name: str, names: list[str]) -> list[str]:
    """At most two of ``names`` close to ``name`` (for a 'did you mean' hint)."""
    import difflib

    return difflib.get_close_matches(name, names, n=2)


def preset_path(name: str) -> Path:
    """Path of preset ``name`` (a bundled name, or a path to a YAML file)."""
    path = bundled_or_file(PRESET_DIR, name)
    if path is not None:
        return path
    close = close_names(name, preset_names())
    if close:
        raise ValueError(f"unknown preset {name!r}; did you mean {' or '.join(close)}?")
    raise ValueError(f"unknown preset {name!r}: no such YAML file, nor a bundled preset ({', '.join(preset_names())})")


def preset_config(name: str, overrides: dict | None = None):
    """The run config (``PretrainConfig``) of preset ``name``, with ``overrides`` (nested dicts,
    section -> fields) applied: what ``convergent pretrain --preset NAME`` plus options builds."""
    from convergent.config import PretrainConfig, from_dict

    data = yaml.safe_load(preset_path(name).read_text()) or {}
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return from_dict(PretrainConfig, data, f"preset {name}")


def flat_preset(name: str) -> dict:
    """Preset ``name`` as dotted keys (``trainer.max_steps``; ``model.overrides`` stays one dict)."""
    flat: dict = {}

    def walk(prefix: str, node: dict) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and key != "model.overrides":
                walk(key + ".", v)
            else:
                flat[key] = v

    walk("", yaml.safe_load(preset_path(name).read_text()) or {})
    return flat


class ActionPreset(ActionConfigFile):
    """``--preset NAME``: load a bundled preset (or a YAML path) like ``--config``; options
    given after it override it.

    A parser whose defaults are a preset (``pretrain``: the default preset) uses
    :meth:`over` that preset: another preset then starts from the shared typed defaults, not
    from the default preset, so a preset means the same from the CLI as from
    :func:`preset_config`."""

    underlay: dict = {}
    """Dotted keys the parser's defaults take from a preset, with those values."""
    base: dict = {}
    """The typed defaults of the ``underlay`` keys."""

    @classmethod
    def over(cls, underlay: dict, base: dict) -> type:
        """This action for a parser whose defaults are ``underlay`` over the typed ``base``."""
        return type("ActionPresetOver", (cls,), {"underlay": underlay, "base": base})

    def __call__(self, parser, cfg, values, option_string=None):
        try:
            path = preset_path(values)
        except ValueError as e:
            parser.error(f"{option_string}: {e}")
        for key, value in self.underlay.items():  # keys no earlier option changed go back to the typed default
            if cfg.get(key) == value:
                cfg[key] = self.base[key]
        super().__call__(parser, cfg, str(path), option_string)
