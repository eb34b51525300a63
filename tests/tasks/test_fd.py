"""Feature distillation: the loss against the official construction written out by hand; the
teacher frozen, out of the optimizer the Trainer builds and out of the saved encoder, in the
checkpoints so a resume is exact; its input re-normalised; its token map brought to the
student's grid; a teacher loaded from a run, an encoder directory or a HF CLIP (features equal
to HF's to 1e-5); one clear error per bad input, before any training."""

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from convergent.backbones import build_backbone
from convergent.cli import main
from convergent.config import PretrainConfig
from convergent.losses.regression import whitened_smooth_l1
from convergent.rundir import RunDir
from convergent.tasks.configs import FDConfig
from convergent.tasks.fd import FD, Renormalize, resize_tokens
from convergent.training import loop
from convergent.training.checkpoint import load_latest
from convergent.training.loop import Trainer
from convergent.training.optim import build_optimizer
from convergent.workflows.assemble import build_run_task
from convergent.workflows.runs import write_config
from convergent.workflows.teacher import teacher_inputs
from tests.training_helpers import SyntheticImages, configs, random_transform

transformers = pytest.importorskip("transformers")

BEIT_STUDENT = {"pos_embed": "none", "rel_pos_bias": "shared", "layer_scale": 0.1, "drop_path": 0.2}
"""The paper's ViT student options, at test size."""


def reference_loss(pred: torch.Tensor, target: torch.Tensor, beta: float = 2.0, eps: float = 1e-5) -> torch.Tensor:
    """The official loss written out: ``ln_tgt = nn.LayerNorm(D, elementwise_affine=False)``,
    ``nn.SmoothL1Loss(beta)``, mean over every element."""
    mu = target.mean(dim=-1, keepdim=True)
    var = ((target - mu) ** 2).mean(dim=-1, keepdim=True)  # biased, as LayerNorm
    white = (target - mu) / torch.sqrt(var + eps)
    e = (pred - white).abs()
    return torch.where(e < beta, 0.5 * e**2 / beta, e - 0.5 * beta).mean()


def make(student: str = "vit_test", teacher=None, renormalize=None, **cfg) -> FD:
    torch.manual_seed(0)
    teacher = teacher if teacher is not None else build_backbone("vit_test", patch_size=4, embed_dim=24, num_heads=2)
    return FD(build_backbone(student), FDConfig(**cfg), teacher, renormalize)


def images(b: int = 2, side: int = 32) -> dict:
    return {"image": torch.randn(b, 3, side, side, generator=torch.Generator().manual_seed(1))}


# --- the loss -----------------------------------------------------------------------------------


def test_loss_is_the_official_construction():
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(2, 5, 8, generator=g) * 2, torch.randn(2, 5, 8, generator=g) * 3 + 1
    torch.testing.assert_close(whitened_smooth_l1(pred, target, 2.0), reference_loss(pred, target))
    torch.testing.assert_close(whitened_smooth_l1(pred, target, 1.0, eps=1e-6), reference_loss(pred, target, 1.0, 1e-6))
    official = torch.nn.SmoothL1Loss(beta=2.0)(pred, torch.nn.LayerNorm(8, elementwise_affine=False)(target))
    torch.testing.assert_close(whitened_smooth_l1(pred, target, 2.0), official)
    assert whitened_smooth_l1(pred, target, 0.0, whiten=False) == F.mse_loss(pred, target)
    with pytest.raises(ValueError, match="differ in shape"):
        whitened_smooth_l1(pred, target[..., :4], 2.0)


def test_task_loss_is_the_reference_on_its_parts():
    task = make().train()
    batch = images()
    with torch.no_grad():
        for p in task.teacher.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.manual_seed(3)  # drop path draws: none in vit_test; the loss is deterministic
    out = task(batch)
    tokens = task.backbone.forward_features(batch["image"])[:, 1:]  # (B, 16, 32): class token dropped
    teacher = task.teacher.forward_features(batch["image"])[:, 1:]  # (B, 64, 24) on an 8x8 grid
    target = F.interpolate(teacher.transpose(1, 2).reshape(2, 24, 8, 8), size=(4, 4), mode="bilinear")
    target = target.flatten(2).transpose(1, 2)  # (B, 16, 24)
    torch.testing.assert_close(out["loss"], reference_loss(task.head(tokens), target), rtol=1e-5, atol=1e-6)
    assert set(out) == {"loss", "target_cos"} and -1 <= out["target_cos"] <= 1
    assert isinstance(task.head, torch.nn.Linear) and task.head.weight.shape == (24, 32)  # the 1x1 projection


def test_grid_interpolation_and_resized_views():
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)  # a 2x2 grid
    assert torch.equal(resize_tokens(tokens, (2, 2), (2, 2)), tokens)
    up = resize_tokens(tokens, (2, 2), (4, 4))
    fmap = F.interpolate(tokens.transpose(1, 2).reshape(2, 3, 2, 2), size=(4, 4), mode="bilinear")
    torch.testing.assert_close(up, fmap.flatten(2).transpose(1, 2))
    # Swin student (4-px patches, 2 stages: a 4x4 final grid) under a ViT teacher with an 8x8 grid
    task = make("swin_test")
    assert task.targets(images()["image"]).shape == (2, 16, 24)
    assert task(images())["loss"].isfinite()
    # the teacher reads 48-px views (12x12 tokens), the student 32-px ones (4x4)
    big = build_backbone("vit_test", img_size=48, patch_size=4, embed_dim=24, num_heads=2)
    task = make(teacher=big, teacher_img_size=48)
    seen = []
    task.teacher.patch_embed.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape))
    assert task.targets(images()["image"]).shape == (2, 16, 24) and seen == [(2, 3, 48, 48)]


def test_teacher_reads_the_view_in_its_own_normalisation():
    r = Renormalize.between([0.5] * 3, [0.5] * 3, [0.1, 0.2, 0.3], [0.2, 0.25, 0.3])
    task = make(renormalize=r)
    seen = []
    task.teacher.patch_embed.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = images()["image"]
    task.targets(x)
    pixels = x * 0.5 + 0.5  # what the data normalised
    expected = (pixels - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], expected)


def test_teacher_is_frozen_and_not_trained(tmp_path, monkeypatch):
    task = make("vit_test").train()
    assert not task.teacher.training and all(not p.requires_grad for p in task.teacher.parameters())
    task(images())["loss"].backward()
    assert all(p.grad is None for p in task.teacher.parameters())
    assert task.head.weight.grad is not None and task.backbone.blocks[0].attn.qkv.weight.grad is not None
    built = []  # the optimizer the Trainer builds
    monkeypatch.setattr(loop, "build_optimizer", lambda model, cfg: built.append(build_optimizer(model, cfg)) or built[-1])
    before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    Trainer(*configs(max_steps=2), tmp_path / "r", batch_size=8, progress=False).fit(task, SyntheticImages(16), random_transform)
    trained = {id(p) for g in built[0].param_groups for p in g["params"]}
    assert not any(id(p) in trained for p in task.teacher.parameters())
    assert all(id(p) in trained for p in [*task.head.parameters(), *task.backbone.parameters()])
    assert all(torch.equal(v, before[k]) for k, v in task.teacher.state_dict().items())
    assert not task.teacher.training


# --- teachers from their sources ----------------------------------------------------------------


def tiny_clip_vision(whole: bool):
    """A tiny random HF CLIP (whole, or its vision model) with noticeable weights."""
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                  patch_size=8, hidden_act="quick_gelu")  # fmt: skip
    torch.manual_seed(0)
    if whole:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
                    bos_token_id=97, eos_token_id=98, pad_token_id=1)  # fmt: skip
        model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision))
    else:
        model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**vision))
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model.eval()


def fd_config(teacher: str | Path, **task) -> PretrainConfig:
    cfg = PretrainConfig()
    cfg.model.backbone = "vit_test"
    cfg.task.name = "fd"
    cfg.task.fd = FDConfig(teacher=str(teacher), **task)
    return cfg


@pytest.mark.parametrize("whole", [False, True], ids=["CLIPVisionModel", "CLIPModel"])
def test_teacher_from_a_hf_clip_gives_hfs_features(tmp_path, whole):
    hf = tiny_clip_vision(whole)
    hf.save_pretrained(tmp_path / "clip")
    task = build_run_task(fd_config(tmp_path / "clip")).eval()
    x = images()["image"]
    vision = hf.vision_model if whole else hf
    with torch.no_grad():
        hidden = vision(pixel_values=x).last_hidden_state  # before post_layernorm
        post = hf.vision_model.post_layernorm if whole else hf.post_layernorm  # CLIP's ln_post on every token
        expected = post(hidden)[:, 1:]  # (B, 16, 32), class token dropped
        # the teacher's input is the view re-normalised from data.mean/std (0.5) to OpenAI's
        xt = x * task.renorm_scale + task.renorm_shift
        got = task.teacher.forward_features(xt)[:, 1:]
        torch.testing.assert_close(task.teacher.forward_features(x)[:, 1:], expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(task.targets(x), post(vision(pixel_values=xt).last_hidden_state)[:, 1:],
                                   rtol=1e-5, atol=1e-5)  # fmt: skip
    assert got.shape == (2, 16, 32)
    openai = Renormalize.between([0.5] * 3, [0.5] * 3, [0.48145466, 0.4578275, 0.40821073],
                                 [0.26862954, 0.26130258, 0.27577711])  # fmt: skip
    torch.testing.assert_close(task.renorm_scale.flatten(), torch.tensor(openai.scale))
    # a preprocessor_config.json records the normalisation
    (tmp_path / "clip" / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    task = build_run_task(fd_config(tmp_path / "clip"))
    assert torch.equal(task.renorm_scale.flatten(), torch.ones(3)) and not task.renorm_shift.any()


def test_teacher_from_hf_vit_and_swin_directories(tmp_path):
    """A HF ViT trained at 64 px teaches 32-px views (its positions interpolated as from_pretrained
    does); a HF Swin as it is. Their converters' parity is tested in tests/converters."""
    torch.manual_seed(0)
    vit = transformers.ViTModel(transformers.ViTConfig(image_size=64, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                                       num_attention_heads=2, intermediate_size=64))  # fmt: skip
    vit.save_pretrained(tmp_path / "vit")
    swin = transformers.SwinModel(transformers.SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1],
                                                          num_heads=[2, 4], window_size=4))  # fmt: skip
    swin.save_pretrained(tmp_path / "swin")
    x = images()["image"]
    with pytest.warns(UserWarning, match="not recorded"):
        task = build_run_task(fd_config(tmp_path / "vit"))
    assert task.teacher.image_size == 32 and task.teacher.config.patch_size == 8
    assert task.targets(x).shape == (2, 16, 32)  # 4x4 teacher grid = the student's
    with pytest.warns(UserWarning, match="not recorded"):
        task = build_run_task(fd_config(tmp_path / "swin", teacher_final_norm=False))
    assert type(task.teacher).__name__ == "SwinTransformer"
    assert task.targets(x).shape == (2, 16, 32)  # Swin's 4x4 final grid of width 32
    assert task(images())["loss"].isfinite()


def write_run(run: RunDir, encoder, mean=(0.2, 0.2, 0.2), std=(0.4, 0.4, 0.4)) -> RunDir:
    """A finished run's directory as ``convergent pretrain`` leaves it (config.yaml + encoder/)."""
    cfg = PretrainConfig()
    cfg.data.mean, cfg.data.std = mean, std
    write_config(run, cfg)
    encoder.save_pretrained(run.encoder)
    return run


def test_teacher_from_a_run_or_an_encoder_directory(tmp_path):
    torch.manual_seed(0)
    enc = build_backbone("swin_test")
    run = write_run(RunDir(tmp_path / "run"), enc)
    student = build_backbone("vit_test")
    data = PretrainConfig().data
    for path in (tmp_path / "run", tmp_path / "run" / "encoder"):  # the run's normalisation either way
        got = teacher_inputs(FDConfig(teacher=str(path)), student, data, "task.fd")
        assert got["renormalize"] == Renormalize.between([0.5] * 3, [0.5] * 3, [0.2] * 3, [0.4] * 3)
        assert torch.equal(got["teacher"].state_dict()["norm.weight"], enc.state_dict()["norm.weight"])
    shutil.copytree(run.encoder, tmp_path / "alone")
    with pytest.warns(UserWarning, match="normalisation is not recorded there; assuming the student's"):
        got = teacher_inputs(FDConfig(teacher=str(tmp_path / "alone")), student, data, "task.fd")
    assert got["renormalize"] == Renormalize((1.0,) * 3, (0.0,) * 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        given = FDConfig(teacher=str(tmp_path / "alone"), teacher_mean=(0.1,), teacher_std=(0.2,))
        assert teacher_inputs(given, student, data, "task.fd")["renormalize"] == Renormalize.between(
            [0.5] * 3, [0.5] * 3, [0.1] * 3, [0.2] * 3
        )


# --- bad input: one clear error each, before any training -------------------------------------------


def pretrain(tmp_path: Path, *extra: str) -> int:
    return main(["pretrain", "--task.name", "fd", "--model.backbone", "vit_test", "--data.batch_size", "8",
                 "--data.limit", "16", "--eval.layer", "-1", "--trainer.out_dir", str(tmp_path / "runs"), *extra])  # fmt: skip


def test_bad_inputs_are_refused_before_training(tmp_path, capsys):
    build_backbone("text_test").save_pretrained(tmp_path / "text")
    build_backbone("vit_test", in_chans=1).save_pretrained(tmp_path / "grey")
    build_backbone("vit_test", patch_size=16).save_pretrained(tmp_path / "p16")
    build_backbone("vit_test").save_pretrained(tmp_path / "ok")
    write_config(RunDir(tmp_path / "unfinished"), PretrainConfig())
    (tmp_path / "junk").mkdir()
    cases = [
        (["--task.fd.teacher", str(tmp_path / "missing")], "--task.fd.teacher .*missing: no such directory"),
        (["--task.fd.teacher", str(tmp_path / "text")], "holds a text encoder"),
        (["--task.fd.teacher", str(tmp_path / "grey")], "teacher reads 1-channel images, the student 3-channel"),
        (["--task.fd.teacher", str(tmp_path / "p16"), "--data.img_size", "40"], "cannot read 40-px images"),
        (["--task.fd.teacher", str(tmp_path / "ok"), "--model.backbone", "text_test"], "task 'fd' needs an image backbone"),
        ([], "--task.fd.teacher is required"),
        (["--task.fd.teacher", str(tmp_path / "unfinished")], "a run without encoder/ .not finished yet"),
        (["--task.fd.teacher", str(tmp_path / "junk")], "neither config.yaml nor config.json there"),
        (["--task.fd.teacher", str(tmp_path / "ok"), "--task.fd.teacher_mean", "[0.5]"], "needs --task.fd.teacher_std"),
    ]  # fmt: skip
    for extra, message in cases:
        assert pretrain(tmp_path, *extra) == 2, extra
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("convergent pretrain: error: "), err
        assert re.search(message, err[0]), (message, err[0])
    assert not (tmp_path / "runs").exists()  # nothing was written: refused before any data loaded
    hf_text = transformers.CLIPTextModel(transformers.CLIPTextConfig(hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, vocab_size=50))  # fmt: skip
    hf_text.save_pretrained(tmp_path / "hf-text")
    assert pretrain(tmp_path, "--task.fd.teacher", str(tmp_path / "hf-text")) == 2
    assert "holds a text encoder (HF model_type 'clip_text_model')" in capsys.readouterr().err
    with pytest.raises(ValueError, match="the fd teacher must be an image encoder; TextTransformer reads text"):
        FD(build_backbone("vit_test"), FDConfig(), build_backbone("text_test"))
    with pytest.raises(ValueError, match="laid out for 48-px images but will read 32-px ones"):
        FD(build_backbone("vit_test"), FDConfig(), build_backbone("vit_test", img_size=48))


# --- end to end: the saved encoder, the checkpoints, resume -------------------------------------------


def test_tiny_run_saves_only_the_student_and_resumes_exactly(tmp_path):
    """A MoCo v3 run's encoder becomes the teacher of an FD run (the preset's pairing, at test size)."""
    base = ["--data.batch_size", "8", "--data.limit", "16", "--optim.warmup_steps", "1", "--eval.knn", "false",
            "--eval.linear_probe", "false", "--trainer.out_dir", str(tmp_path)]  # fmt: skip
    moco = ["pretrain", "--preset", "mocov3-vit-fmnist", "--model.backbone", "vit_test", "--task.mocov3.hidden_dim",
            "32", "--task.mocov3.out_dim", "16", "--trainer.max_steps", "1", "--trainer.run_name", "moco"]  # fmt: skip
    assert main([*moco, *base]) == 0
    overrides = json.dumps(BEIT_STUDENT)
    fd = ["pretrain", "--preset", "fd-vit-fmnist", "--model.backbone", "vit_test", "--model.overrides", overrides,
          "--task.fd.teacher", str(tmp_path / "moco"), "--trainer.max_steps", "4", "--trainer.checkpoint_every", "2",
          "--trainer.run_name", "fd", *base]  # fmt: skip
    assert main(fd) == 0
    run = tmp_path / "fd"
    encoder = load_file(run / "encoder" / "model.safetensors")
    student = build_backbone("vit_test", **BEIT_STUDENT).state_dict()
    assert set(encoder) == set(student)  # only the student: no teacher, no head
    checkpoint = load_latest(run)
    assert checkpoint.step == 4 and any(k.startswith("teacher.") for k in checkpoint.weights)
    teacher = load_file(tmp_path / "moco" / "encoder" / "model.safetensors")
    for k, v in teacher.items():  # the checkpoint's teacher is the MoCo v3 encoder, untouched by training
        assert torch.equal(checkpoint.weights[f"teacher.{k}"], v), k

    # resume from step 2 of a copy: the same weights at step 4 (the teacher comes from the checkpoint)
    copy = tmp_path / "fd-resumed"
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step-000004")
    (copy / "checkpoints" / "latest").write_text("step-000002\n")
    for f in ("encoder", "summary.json"):
        shutil.rmtree(copy / f) if (copy / f).is_dir() else (copy / f).unlink()
    assert main(["pretrain", "--resume", str(copy)]) == 0
    resumed = load_latest(copy)
    assert resumed.step == 4
    for k, v in checkpoint.weights.items():
        assert torch.equal(resumed.weights[k], v), k
