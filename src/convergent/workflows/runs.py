"""Run directories (:class:`~convergent.rundir.RunDir`) as the workflows use them: the config
a run was started with, written and read back; an encoder found from a run or an encoder
directory (a run's task loaded back from them is :func:`convergent.workflows.assemble.load_task_from_run`)."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from convergent.backbones.pretrained import CONFIG_NAME
from convergent.config import PretrainConfig, RunConfig, from_dict, to_dict
from convergent.rundir import RunDir


def write_config(run: RunDir, cfg: RunConfig, header: str = "") -> Path:
    """Write ``cfg`` (a config dataclass) as the run's ``config.yaml`` (after ``header``, YAML
    comments); creates the run directory."""
    run.root.mkdir(parents=True, exist_ok=True)
    run.config.write_text(header + yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return run.config


@contextmanager
def started_run(run: RunDir, cfg: RunConfig | None) -> Iterator[RunDir]:
    """The body of a run in ``run``: writes ``cfg`` as its ``config.yaml`` first (None: a
    resumed run, whose config is there). When the body fails before training wrote anything
    (no metrics, no checkpoint: the data, tokenizer or model could not be built), the
    directories this call created (the run's, and ``out_dir`` when it was new) are removed: a
    run that never started leaves no run directory behind. An ``OSError`` that names no file
    (a write to an open file: the metrics, TensorBoard) is raised naming the run directory."""
    created = _first_missing(run.root)
    if cfg is not None:
        write_config(run, cfg)
    try:
        yield run
    except BaseException as e:
        if created is not None and not run.metrics.exists() and not run.checkpoints.exists():
            shutil.rmtree(created, ignore_errors=True)
        if isinstance(e, OSError) and e.errno is not None and not e.filename:
            raise OSError(e.errno, f"{e.strerror or e} (writing the run's files)", str(run.root)) from e
        raise


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (None when ``path`` exists)."""
    missing = None
    for p in [path, *path.parents]:
        if p.exists():
            return missing
        missing = p
    return missing


def read_config_dict(run: RunDir) -> dict | None:
    """The run's ``config.yaml`` as a plain dict; None when there is none; a ``ValueError``
    naming the file when it is not a YAML mapping."""
    if not run.is_run():
        return None
    try:
        data = yaml.safe_load(run.config.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{run.config}: not valid YAML ({' '.join(str(e).split())})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{run.config}: expected a mapping of config sections, got {type(data).__name__}")
    return data


def read_config(run_dir: str | Path | RunDir) -> Any:
    """The :class:`PretrainConfig` a run directory was started with."""
    run = RunDir(run_dir)
    data = read_config_dict(run)
    if data is None:
        raise FileNotFoundError(f"{run.config}: not found; expected the run directory of `convergent pretrain`")
    return from_dict(PretrainConfig, data, str(run.config))


def saved_encoder(run: RunDir) -> Path | None:
    """The run's saved ``encoder/`` (written when training finished); None before that."""
    return run.encoder if is_encoder_dir(run.encoder) else None


def is_encoder_dir(path: str | Path) -> bool:
    """Whether ``path`` holds a backbone written by ``save_pretrained`` (its ``config.json``)."""
    return (Path(path) / CONFIG_NAME).is_file()


def resolve_encoder(path: str | Path) -> tuple[Path, RunDir | None]:
    """``(encoder directory, its run or None)`` from ``path``: an encoder directory itself, or a
    pre-training run directory holding ``encoder/``."""
    path = Path(path)
    if is_encoder_dir(path):
        return path, None
    run = RunDir(path)
    encoder = saved_encoder(run)
    if encoder is None:
        raise FileNotFoundError(f"{path}: neither an encoder directory ({CONFIG_NAME}) nor a run directory "
                                f"({RunDir.ENCODER}/)")  # fmt: skip
    return encoder, run
