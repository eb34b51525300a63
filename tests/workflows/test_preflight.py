"""Preflight: the task built on the meta device (fast, no memory) counts the parameters the
disk-space estimate needs, and refuses what the constructors refuse, before any data loads."""

import time

import pytest
import torch

from convergent.commands.presets import preset_config, preset_names
from convergent.config import FinetuneConfig, PretrainConfig
from convergent.rundir import RunDir
from convergent.training.checkpoint import KEEP
from convergent.validate import ConfigError
from convergent.workflows import preflight
from convergent.workflows.assemble import build_run_task
from tests.preset_helpers import with_stand_ins


def _meta_task(cfg):
    with preflight._ParametersOnMeta():
        return preflight._built(lambda: build_run_task(cfg, preflight.planned_tokenizer(cfg)))


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_builds_on_the_meta_device_quickly(name, tmp_path):
    cfg = with_stand_ins(preset_config(name), tmp_path)  # a teacher / start is another run's encoder
    t0 = time.perf_counter()
    task = _meta_task(cfg)
    assert task is not None
    assert any(p.is_meta for p in task.parameters())
    assert time.perf_counter() - t0 < 20  # generous: a shared CPU; typically well under a second


def test_the_count_is_the_real_models():
    cfg = preset_config("mae-vit-fmnist")
    torch.manual_seed(0)
    real = build_run_task(cfg)
    meta = _meta_task(preset_config("mae-vit-fmnist"))
    assert preflight.checkpoint_bytes(meta) == preflight.checkpoint_bytes(real)
    trainable = sum(p.numel() for p in real.parameters() if p.requires_grad)
    weights = sum(t.numel() * t.element_size() for t in real.state_dict().values())
    assert preflight.checkpoint_bytes(real) == weights + 8 * trainable
    needed, what = preflight.needed_bytes(meta, resume=False)
    encoder = sum(t.numel() * t.element_size() for t in real.backbone.state_dict().values())
    assert needed == (KEEP + 1) * preflight.checkpoint_bytes(real) + encoder
    assert f"{KEEP + 1} checkpoint(s)" in what
    assert preflight.needed_bytes(meta, resume=True)[0] == preflight.checkpoint_bytes(real) + encoder


def test_the_config_is_not_changed():
    cfg = preset_config("vilt-emoji")
    before = repr(cfg)
    preflight.check_pretrain_start(cfg, RunDir("/nonexistent-run"), resume=False)
    assert repr(cfg) == before


def test_a_full_disk_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(preflight, "check_free_space", _refuse)
    with pytest.raises(ConfigError, match="no room"):
        preflight.check_pretrain_start(preset_config("mae-vit-fmnist"), RunDir(tmp_path / "r"), resume=False)
    cfg = FinetuneConfig()
    with pytest.raises(ConfigError, match="no room"):
        preflight.check_finetune_start(cfg, RunDir(tmp_path / "f"))


def _refuse(path, needed, option, what):
    assert needed > 0 and "checkpoint(s)" in what
    raise ConfigError("no room")


def test_what_a_constructor_refuses_is_refused_before_the_data(tmp_path):
    cfg = PretrainConfig()
    cfg.task.simmim.mask_patch_size = 5  # not a multiple of the backbone's 2-px patches
    with pytest.raises(ValueError, match="mask_patch_size 5 must be a multiple"):
        preflight.check_pretrain_start(cfg, RunDir(tmp_path / "r"), resume=False)


def test_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = PretrainConfig()
    cfg.trainer.accelerator = "cuda"
    with pytest.raises(ConfigError, match="--trainer.accelerator cuda: no CUDA device"):
        preflight.check_device(cfg.trainer)
    cfg.trainer.accelerator, cfg.trainer.precision = "auto", "16-mixed"
    with pytest.raises(ConfigError, match="fp16 mixed precision needs a GPU"):
        preflight.check_device(cfg.trainer)
    cfg.trainer.precision = "bf16-mixed"
    preflight.check_device(cfg.trainer)
