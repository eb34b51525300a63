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


class ActionPreset(ActionConfigFile):
    """``--preset NAME``: load a bundled preset (or a YAML path) like ``--config``; options
    given after it override it."""

    def __call__(self, parser, cfg, values, option_string=None):
        try:
            path = preset_path(values)
        except ValueError as e:
            parser.error(str(e))
        super().__call__(parser, cfg, str(path), option_string)
