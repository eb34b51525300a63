"""Stand-ins for the other runs a preset starts from (an FD teacher, a SimCSE start), so that
tests of every preset can validate and build it without training those runs first."""

from pathlib import Path

from convergent.backbones import build_backbone
from convergent.tasks.configs import TeacherConfig


def with_stand_ins(cfg, tmp_path: Path):
    """``cfg`` with its teacher and its ``model.init`` (when it has them) pointing at freshly
    built encoders of the right backbone under ``tmp_path``."""
    if isinstance(cfg.task.selected(), TeacherConfig):
        build_backbone(cfg.model.backbone, **cfg.model.overrides).save_pretrained(tmp_path / "teacher")
        cfg.task.selected().teacher = str(tmp_path / "teacher")
    if cfg.model.init:
        build_backbone(cfg.model.backbone, **cfg.model.overrides).save_pretrained(tmp_path / "init")
        cfg.model.init = str(tmp_path / "init")
    return cfg
