"""Bundled presets (``convergent/configs/*.yaml``): names, paths, and the ``--preset`` option."""

from pathlib import Path

from jsonargparse import ActionConfigFile

PRESET_DIR = Path(__file__).resolve().parents[1] / "configs"
DEFAULT_PRESET = "simmim-swinv2-fmnist"


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    """Path of preset ``name`` (a bundled name, or a path to a YAML file)."""
    path = PRESET_DIR / f"{name}.yaml"
    if path.is_file():
        return path
    if Path(name).is_file():
        return Path(name)
    import difflib

    close = difflib.get_close_matches(name, preset_names(), n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise ValueError(f"unknown preset {name!r}{hint} (bundled: {', '.join(preset_names())})")


def preset_config(name: str, overrides: dict | None = None):
    """The run config (``PretrainConfig``) of preset ``name``, with ``overrides`` (nested dicts,
    section -> fields) applied: what ``convergent pretrain --preset NAME`` plus options builds."""
    import yaml

    from convergent.config import from_dict, pretrain_config_class

    data = yaml.safe_load(preset_path(name).read_text()) or {}
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    return from_dict(pretrain_config_class(), data, f"preset {name}")


class ActionPreset(ActionConfigFile):
    """``--preset NAME``: load a bundled preset (or a YAML path) like ``--config``; options
    given after it override it."""

    def __call__(self, parser, cfg, values, option_string=None):
        try:
            path = preset_path(values)
        except ValueError as e:
            parser.error(str(e))
        super().__call__(parser, cfg, str(path), option_string)
