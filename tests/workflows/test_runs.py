"""Run directories as the workflows use them: config.yaml written and read back, an encoder
found from a run or an encoder directory, a run's task loaded back."""

import pytest
import torch

from convergent.backbones.pretrained import save_pretrained
from convergent.backbones.registry import build_backbone
from convergent.config import PretrainConfig, to_dict
from convergent.rundir import RunDir
from convergent.training.checkpoint import save_checkpoint, weights_for_saving
from convergent.workflows.assemble import build_run_task, load_task_from_run
from convergent.workflows.runs import (
    read_config,
    read_config_dict,
    resolve_encoder,
    saved_encoder,
    write_config,
)


def tiny_config():
    cfg = PretrainConfig()
    cfg.model.backbone, cfg.task.name = "vit_test", "mae"
    return cfg


def test_config_round_trip(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = tiny_config()
    cfg.optim.lr = 0.125
    assert write_config(run, cfg, header="# a comment\n") == run.config
    assert run.config.read_text().startswith("# a comment\n") and run.is_run()
    assert to_dict(read_config(run.root)) == to_dict(cfg) == to_dict(read_config(str(run.root)))
    assert read_config_dict(run)["optim"]["lr"] == 0.125


def test_missing_config_names_the_file(tmp_path):
    assert read_config_dict(RunDir(tmp_path)) is None
    with pytest.raises(FileNotFoundError, match="config.yaml: not found"):
        read_config(tmp_path)


def test_resolve_encoder_from_encoder_or_run(tmp_path):
    run = RunDir(tmp_path / "run")
    write_config(run, tiny_config())
    assert saved_encoder(run) is None  # not finished yet
    with pytest.raises(FileNotFoundError, match="neither an encoder directory"):
        resolve_encoder(run.root)
    save_pretrained(build_backbone("vit_test"), run.encoder)
    assert saved_encoder(run) == run.encoder
    assert resolve_encoder(run.root) == (run.encoder, run)
    assert resolve_encoder(run.encoder) == (run.encoder, None)


def test_load_task_from_run(tmp_path):
    run = RunDir(tmp_path / "run")
    cfg = tiny_config()
    write_config(run, cfg)
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        load_task_from_run(run.root)
    task = build_run_task(cfg)
    save_checkpoint(run.root, 3, weights_for_saving(task), {"step": 3})
    loaded, tokenizer, loaded_cfg = load_task_from_run(run.root)
    assert tokenizer is None and loaded_cfg.task.name == "mae" and not loaded.training
    for (name, a), b in zip(task.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
