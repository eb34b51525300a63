"""Generated from the registries: every registered test-size backbone × every registered task.

A pairing the task can serve by the backbone's declared capabilities (``Task.modality``,
``Task.requires``; see ``tasks/base.py:backbone_problems``) takes one forward, backward and
optimizer step; every other pairing is refused when the task is built, with the reason. Text
backbones and tasks that embed text get a tokenizer's vocabulary as a run gives it
(``Task.configure_text``, ``vocabulary_overrides``), and a task that distils a frozen teacher
(its config a ``TeacherConfig``: FD) gets one as a run loads it — a ``vit_test`` at the student's
image size and channels — and BEiT / text-to-image a stand-in image tokenizer, so a new backbone family or task is picked up here with no edit.
"""

import pytest
import torch

from convergent.backbones import backbone_config, backbone_names, build_backbone
from convergent.backbones.configs import vocabulary_overrides
from convergent.tasks.base import backbone_problems
from convergent.tasks.configs import (
    CaptionConfig,
    ClassifyConfig,
    CLIPConfig,
    MAEConfig,
    MoCoV3Config,
    TeacherConfig,
    VisualTokensConfig,
)
from convergent.tasks.registry import entry, names, task_class
from tests.preset_helpers import stand_in_tokenizer

VOCAB = {"vocab_size": 100, "pad_token_id": 0, "mask_token_id": 3, "max_length": 12}
"""What a run's tokenizer would decide (``workflows/text.py:tokenizer_vocab``)."""
B, SEQ, CLASSES = 4, 12, 3

SMALL_CONFIGS = {
    "classify": lambda: ClassifyConfig(num_classes=CLASSES),
    "mae": lambda: MAEConfig(decoder_dim=16, decoder_depth=1, decoder_heads=2),
    "mocov3": lambda: MoCoV3Config(hidden_dim=32, out_dim=16),
    "clip": lambda: CLIPConfig(text_backbone="clip_text_test", embed_dim=16),
    "caption": lambda: CaptionConfig(text_backbone="text_test"),
}
"""Task configs at test size where the defaults are paper-sized (others: their defaults)."""


def small_backbones() -> list[str]:
    return [n for n in backbone_names() if n.endswith("_test")]


def build_backbone_for(name: str, task_cls: type):
    """The backbone as a run builds it for ``task_cls``: text backbones take the vocabulary
    and, for a task that requires it, causal attention."""
    cfg = backbone_config(name)
    overrides = {}
    if cfg.modality == "text":
        overrides = {**vocabulary_overrides(cfg, VOCAB), "causal": "supports_causal" in task_cls.requires}
    return build_backbone(name, **overrides)


def task_inputs(config, backbone) -> dict:
    """What the task's constructor takes besides backbone and config: for a distillation task
    (``TeacherConfig``) a frozen teacher, built as the run builds it (at the student's image size
    and channels; a text student is refused before its teacher is looked at); for BEiT an image
    tokenizer with one code per patch."""
    if isinstance(config, VisualTokensConfig):  # BEiT, text-to-image
        if backbone.modality != "image":
            return {"tokenizer": stand_in_tokenizer(4, 32)}
        return {"tokenizer": stand_in_tokenizer(backbone.patch_size, backbone.image_size, backbone.in_chans)}
    if not isinstance(config, TeacherConfig):
        return {}
    if backbone.modality != "image":
        return {"teacher": build_backbone("vit_test")}
    return {"teacher": build_backbone("vit_test", img_size=backbone.image_size, in_chans=backbone.in_chans)}


def make_batch(task, backbone) -> dict[str, torch.Tensor]:
    """A batch with every key ``task`` reads, shaped for ``backbone``."""
    g = torch.Generator().manual_seed(0)
    # a text backbone reads images only beside its text (text-to-image): the stand-in tokenizer's size
    image_shape = (3, 32, 32)
    if backbone.modality == "image":
        image_shape = (backbone.in_chans, backbone.image_size, backbone.image_size)
    makers = {
        "image": lambda: torch.randn(B, *image_shape, generator=g),
        "input_ids": lambda: torch.randint(4, VOCAB["vocab_size"], (B, SEQ), generator=g),
        "attention_mask": lambda: torch.ones(B, SEQ, dtype=torch.long),
        "label": lambda: torch.randint(0, CLASSES, (B,), generator=g),
    }
    makers["image2"] = makers["false_image"] = makers["image"]  # further views; ViLT's false images
    missing = sorted(set(task.batch_keys) - set(makers))
    assert not missing, f"the matrix test cannot make batch keys {missing} for task {task.name!r}"
    return {k: makers[k]() for k in task.batch_keys}


@pytest.mark.parametrize("task_name", names())
@pytest.mark.parametrize("backbone_name", small_backbones())
def test_every_backbone_with_every_task(backbone_name, task_name):
    torch.manual_seed(0)
    cls = task_class(task_name)
    backbone = build_backbone_for(backbone_name, cls)
    config = SMALL_CONFIGS.get(task_name, entry(task_name).config)()
    cls.configure_text(config, VOCAB)
    problems = backbone_problems(cls, backbone)
    inputs = task_inputs(config, backbone)
    if problems:
        with pytest.raises(ValueError, match=f"task '{task_name}' needs"):
            cls(backbone, config, **inputs)
        return
    task = cls(backbone, config, **inputs).train()
    named = [(n, p) for n, p in task.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    before = [p.detach().clone() for p in params]
    out = task(make_batch(task, backbone))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"]), out["loss"]
    out["loss"].backward()
    torch.optim.AdamW(params, lr=1e-3).step()
    task.on_step_end(1, 10)
    changed = [not torch.equal(a, p.detach()) for a, p in zip(before, params)]
    assert any(changed), "one optimizer step changed no parameter"
    assert any(c for c, (n, _) in zip(changed, named) if n.startswith("backbone.")), "the backbone took no step"


def test_the_matrix_has_both_outcomes():
    """Guard against a matrix where every pairing is refused (or none is)."""
    served = refused = 0
    for b in small_backbones():
        for t in names():
            cls = task_class(t)
            if backbone_problems(cls, build_backbone_for(b, cls)):
                refused += 1
            else:
                served += 1
    assert served > 0 and refused > 0, (served, refused)
