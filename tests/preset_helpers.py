"""Stand-ins for the other runs a preset starts from (an FD teacher, a SimCSE start, BEiT's image
tokenizer), so that tests of every preset can validate and build it without training those runs
first."""

from pathlib import Path

from convergent.backbones import build_backbone
from convergent.tasks.configs import TeacherConfig, VisualTokensConfig, VQVAEConfig
from convergent.tasks.vqvae import VQVAE


def stand_in_tokenizer(patch_size: int, img_size: int, in_chans: int = 3) -> VQVAE:
    """A tiny untrained image tokenizer with one code per ``patch_size`` pixels: a one-stage
    ConvNeXt (stride = its stem's patch size)."""
    encoder = build_backbone("convnext_test", img_size=img_size, in_chans=in_chans, patch_size=patch_size,
                             depths=(1,), dims=(8,))  # fmt: skip
    return VQVAE(encoder, VQVAEConfig(num_codes=16, code_dim=8, decoder_width=8, decoder_res_blocks=1)).eval()


def with_stand_ins(cfg, tmp_path: Path):
    """``cfg`` with its teacher, its image tokenizer and its ``model.init`` (when it has them)
    pointing at freshly built ones of the right backbone under ``tmp_path``."""
    if isinstance(cfg.task.selected(), TeacherConfig):
        build_backbone(cfg.model.backbone, **cfg.model.overrides).save_pretrained(tmp_path / "teacher")
        cfg.task.selected().teacher = str(tmp_path / "teacher")
    if isinstance(cfg.task.selected(), VisualTokensConfig):
        backbone = build_backbone(cfg.model.backbone, **cfg.model.overrides)
        patch = backbone.patch_size if backbone.modality == "image" else 4  # text-to-image: any grid
        stand_in_tokenizer(patch, cfg.data.img_size, cfg.data.in_chans).save_pretrained(
            tmp_path / "image_tokenizer")
        cfg.task.selected().tokenizer = str(tmp_path / "image_tokenizer")
    if cfg.model.init:
        build_backbone(cfg.model.backbone, **cfg.model.overrides).save_pretrained(tmp_path / "init")
        cfg.model.init = str(tmp_path / "init")
    return cfg
