"""convergent.validate: every config value checked before anything loads, torch-free, each
error one line naming the option as typed (with a suggestion where one exists); the output
directory writable (faults injected: the tests run as root, so permissions cannot show it)."""

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from convergent import choices, validate
from convergent.backbones import build_backbone
from convergent.commands.presets import preset_config, preset_names
from convergent.config import EvalRunConfig, FinetuneConfig, PretrainConfig, TrainerConfig
from convergent.validate import ConfigError, Where, check_config, check_eval, check_finetune, check_pretrain
from tests.preset_helpers import with_stand_ins


def pretrain_cfg(tmp_path: Path, **changes) -> PretrainConfig:
    """The default config writing under ``tmp_path``, with ``changes`` (``"data.batch_size": -4``)."""
    cfg = PretrainConfig()
    cfg.trainer.out_dir = str(tmp_path / "runs")
    for key, value in changes.items():
        *path, name = key.split(".")
        node = cfg
        for part in path:
            node = getattr(node, part)
        setattr(node, name, value)
    return cfg


def error_of(cfg, check=check_pretrain) -> str:
    with pytest.raises(ConfigError) as e:
        check(cfg)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_importing_validate_imports_no_torch():
    code = "import sys; import convergent.validate; assert 'torch' not in sys.modules, 'torch imported'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_is_valid(name, tmp_path):
    check_config(with_stand_ins(preset_config(name), tmp_path))  # a teacher / start is another run, made first


def test_the_defaults_are_valid(tmp_path):
    check_pretrain(pretrain_cfg(tmp_path))
    cfg = FinetuneConfig()
    cfg.trainer.out_dir = str(tmp_path)
    check_finetune(cfg)
    check_eval(EvalRunConfig())
    assert not (tmp_path / "runs").exists()  # checking writes nothing


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data.batch_size": -4}, "--data.batch_size must be >= 1, got -4"),
        ({"trainer.max_steps": 0}, "--trainer.max_steps must be >= 1, got 0"),
        ({"optim.lr": 0.0}, "--optim.lr must be > 0, got 0.0"),
        ({"optim.warmup_steps": -1}, "--optim.warmup_steps must be >= 0, got -1"),
        ({"optim.accumulate": 0}, "--optim.accumulate must be >= 1, got 0"),
        ({"optim.betas": (0.9, 1.0)}, "--optim.betas must be in [0, 1), got 1.0 (in [0.9, 1.0])"),
        ({"optim.clip_grad": -1.0}, "--optim.clip_grad must be > 0, got -1.0"),
        ({"data.hflip": 1.5}, "--data.hflip must be in [0, 1], got 1.5"),
        ({"data.num_workers": -1}, "--data.num_workers must be >= 0"),
        ({"data.std": (0.5, 0.0, 0.5)}, "--data.std must be > 0, got 0.0"),
        ({"data.max_length": 1}, "--data.max_length must be >= 2"),
        ({"trainer.seed": -1}, "--trainer.seed must be in [0, 4294967295], got -1"),
        ({"trainer.devices": "x"}, "--trainer.devices must be a number of devices"),
        ({"trainer.devices": 0}, "--trainer.devices must be a number of devices"),
        ({"trainer.nonfinite": "skp"}, "--trainer.nonfinite must be one of skip, stop, got 'skp'; did you mean 'skip'?"),
        ({"trainer.compile": "atuo"}, "--trainer.compile must be true, false or 'auto', got 'atuo'; did you mean 'auto'?"),
        ({"trainer.precision": "bf16-mixd"}, "did you mean 'bf16-mixed'?"),
        ({"trainer.strategy": "fsdpp"}, "--trainer.strategy must be one of auto, ddp, fsdp, got 'fsdpp'; did you mean 'fsdp'?"),
        ({"trainer.accelerator": "cpus"}, "did you mean 'cpu'?"),
        ({"eval.pooling": "mean"}, "--eval.pooling must be one of cls, avg, eos, default, got 'mean'"),
        ({"eval.knn_k": 0}, "--eval.knn_k must be >= 1"),
        ({"task.name": "simmmim"}, "--task.name: unknown task 'simmmim'; did you mean simmim?"),
        ({"model.backbone": "swinv2_mirco"}, "--model.backbone: unknown backbone 'swinv2_mirco'; did you mean swinv2_micro"),
        ({"data.name": "fashon-mnist"}, "--data.name: unknown dataset 'fashon-mnist'; did you mean fashion-mnist, fashion-mnist-captions?"),
        ({"data.tokenizer_kind": "wordpeice"}, "did you mean 'wordpiece'?"),
        ({"trainer.max_steps": "abc"}, "--trainer.max_steps must be an integer, got 'abc'"),
        ({"trainer.max_steps": True}, "--trainer.max_steps must be an integer, got True"),
        ({"data.limit": "x"}, "--data.limit must be an integer or null, got 'x'"),
        ({"data.scale": (0.5,)}, "--data.scale must be a list of 2 numbers, got (0.5,)"),
        ({"eval.knn": "maybe"}, "--eval.knn must be true or false, got 'maybe'"),
        ({"model.overrides": [1]}, "--model.overrides must be a mapping"),
    ],
)
def test_one_value(tmp_path, changes, message):
    assert message in error_of(pretrain_cfg(tmp_path, **changes))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data.scale": (0.9, 0.5)}, "--data.scale must be [low, high] with low <= high, got [0.9, 0.5]"),
        ({"data.mean": (0.5, 0.4)}, "--data.mean has 2 values for 3 channels (--data.in_chans)"),
        ({"data.limit": 4}, "--data.limit 4 is less than one batch (--data.batch_size 128)"),
        ({"data.batch_size": 10, "optim.accumulate": 4},
         "--data.batch_size 10 cannot be split evenly over 1 process(es) x 4 accumulation step(s) (--optim.accumulate); "
         "use a multiple of 4"),
        ({"data.batch_size": 12, "trainer.devices": "0,1,2,3,4"}, "over 5 process(es) x 1 accumulation step(s)"),
        ({"optim.min_lr": 0.1}, "--optim.min_lr 0.1 is above the peak --optim.lr 0.001"),
        ({"model.overrides": {"window_sise": 4}},
         "--model.overrides: 'window_sise' is not a field of swinv2_micro's config; did you mean 'window_size'?"),
    ],
)  # fmt: skip
def test_relations_between_values(tmp_path, changes, message):
    assert message in error_of(pretrain_cfg(tmp_path, **changes))


def test_only_the_selected_task_section_is_checked(tmp_path):
    cfg = pretrain_cfg(tmp_path, **{"task.mae.mask_ratio": 5.0})  # unused: the task is simmim
    check_pretrain(cfg)
    cfg.task.name = "mae"
    assert "--task.mae.mask_ratio must be in [0, 1), got 5.0" in error_of(cfg)


@pytest.mark.parametrize(
    "task, field, value, message",
    [
        ("mlm", "random_prob", 0.5, "--task.mlm.random_prob 0.5 + --task.mlm.replace_prob 0.8 must be <= 1"),
        ("vilt", "mask_ratio", 0.0, "--task.vilt.mask_ratio must be in (0, 1], got 0.0"),
        ("data2vec", "mask_kind", "blok", "--task.data2vec.mask_kind must be one of auto, block, patch, token"),
        ("data2vec", "target_norm", "layr", "did you mean 'layer'?"),
        ("data2vec", "target_layer", "fnn", "--task.data2vec.target_layer must be one of auto, block, ffn, got 'fnn'"),
        ("data2vec", "final_norm", "batch", "--task.data2vec.final_norm must be one of auto, layer, instance, none"),
        ("data2vec", "loss_reduction", "avg", "--task.data2vec.loss_reduction must be one of auto, mean, sum, sqrt"),
        ("data2vec", "head_layers", 0, "--task.data2vec.head_layers must be >= 1, got 0"),
        ("data2vec", "ema_decay", 1.5, "--task.data2vec.ema_decay must be in [0, 1], got 1.5"),
        ("data2vec", "random_prob", 0.5, "--task.data2vec.random_prob 0.5 + --task.data2vec.replace_prob 0.8 must be <= 1"),
        ("data2vec", "ema_transformer_only", "yes", "--task.data2vec.ema_transformer_only must be"),
        ("vilt", "itm_negatives", "batches", "--task.vilt.itm_negatives must be one of dataset, batch, got 'batches'"),
        ("mocov3", "momentum", 1.0, "--task.mocov3.momentum 1 must be <= --task.mocov3.momentum_end"),
        ("mocov3", "temperature", 0.0, "--task.mocov3.temperature must be > 0"),
        ("clip", "text_overrides", {"vocab_sise": 9}, "--task.clip.text_overrides: 'vocab_sise' is not a field"),
        ("clip", "text_pooling", "last", "--task.clip.text_pooling must be one of cls, avg, eos, default"),
        ("simmim", "mask_ratio", 1.5, "--task.simmim.mask_ratio must be in [0, 1], got 1.5"),
        ("simmim", "norm_target_window", 8, "--task.simmim.norm_target_window must be an odd number >= 3, got 8"),
        ("clip", "loss", "sigmoids", "--task.clip.loss must be one of softmax, sigmoid, got 'sigmoids'; did you "
         "mean 'sigmoid'?"),
        ("clip", "init_temperature", 0.0, "--task.clip.init_temperature must be > 0"),
        ("simclr", "head", "mlp2", "--task.simclr.head must be one of mlp, tanh, none, got 'mlp2'"),
        ("simclr", "temperature", -0.1, "--task.simclr.temperature must be > 0"),
        ("simcse", "loss", "ntxent", "--task.simcse.loss must be one of nt_xent, info_nce, got 'ntxent'; did you "
         "mean 'nt_xent'?"),
        ("simcse", "pooling", "first", "--task.simcse.pooling must be one of cls, avg, eos, default"),
        ("simcse", "head_layers", 0, "--task.simcse.head_layers must be >= 1, got 0"),
        ("fd", "teacher", "/no/such/run", "--task.fd.teacher /no/such/run: no such directory"),
        ("fd", "teacher", None, "--task.fd.teacher is required: the run directory of another"),
        ("fd", "teacher_img_size", 0, "--task.fd.teacher_img_size must be >= 1, got 0"),
        ("fd", "teacher_mean", (0.5,), "--task.fd.teacher_mean needs --task.fd.teacher_std too"),
        ("fd", "teacher_std", (0.0,), "--task.fd.teacher_std must be > 0, got 0.0"),
        ("fd", "loss_beta", -1.0, "--task.fd.loss_beta must be >= 0, got -1.0"),
        ("fd", "whiten_eps", 0.0, "--task.fd.whiten_eps must be > 0, got 0.0"),
        ("beit", "tokenizer", "/no/such/run", "--task.beit.tokenizer /no/such/run: no such directory"),
        ("beit", "tokenizer", None, "--task.beit.tokenizer is required: the directory of a `convergent pretrain"),
        ("beit", "mask_ratio", 1.0, "--task.beit.mask_ratio must be in (0, 1), got 1.0"),
        ("beit", "min_block_patches", 0, "--task.beit.min_block_patches must be >= 1, got 0"),
        ("vqvae", "num_codes", 1, "--task.vqvae.num_codes must be >= 2, got 1"),
        ("vqvae", "decay", 1.0, "--task.vqvae.decay must be in [0, 1), got 1.0"),
        ("vqvae", "restart_threshold", -1.0, "--task.vqvae.restart_threshold must be >= 0, got -1.0"),
    ],
)
def test_task_sections(tmp_path, task, field, value, message):
    cfg = pretrain_cfg(tmp_path, **{"task.name": task})
    if task == "fd":
        cfg.task.fd.teacher = str(tmp_path)  # exists
    if task == "beit":
        cfg.task.beit.tokenizer = str(tmp_path)  # exists
    if task == "mocov3":
        cfg.task.mocov3.momentum_end = 0.999
    if task == "data2vec" and field == "ema_decay":
        cfg.task.data2vec.ema_end_decay = 0.99  # checked as a value first, before the relation
    setattr(cfg.task.selected(), field, value)
    assert message in error_of(cfg)


def test_siglip_has_no_local_loss(tmp_path):
    cfg = pretrain_cfg(tmp_path, **{"task.name": "clip"})
    cfg.task.clip.loss, cfg.task.clip.local_loss = "sigmoid", True
    assert "--task.clip.local_loss is an option of --task.clip.loss softmax" in error_of(cfg)


def test_a_resumed_run_names_its_config_file(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    (run / "config.yaml").write_text("{}\n")
    cfg = pretrain_cfg(tmp_path, **{"trainer.max_steps": 0})
    with pytest.raises(ConfigError) as e:
        check_pretrain(cfg, resume_dir=run)
    assert str(e.value) == f"{run / 'config.yaml'}: trainer.max_steps must be >= 1, got 0"


def test_paths_exist_and_are_of_the_right_kind(tmp_path):
    missing = tmp_path / "nope"
    assert error_of(pretrain_cfg(tmp_path, **{"data.root": str(missing)})) == (
        f"--data.root {missing}: no such file or directory")  # fmt: skip
    assert "--data.tokenizer" in error_of(pretrain_cfg(tmp_path, **{"data.tokenizer": str(missing)}))
    assert error_of(pretrain_cfg(tmp_path, **{"model.init": str(missing)})) == f"--model.init {missing}: no such directory"
    (tmp_path / "file").write_text("x")
    assert "not a directory" in error_of(pretrain_cfg(tmp_path, **{"model.init": str(tmp_path / "file")}))
    assert "not an encoder directory (no config.json" in error_of(pretrain_cfg(tmp_path, **{"model.init": str(tmp_path)}))
    enc = tmp_path / "run" / "encoder"
    enc.mkdir(parents=True)
    (enc / "config.json").write_text("{}")
    ft = FinetuneConfig(trainer=TrainerConfig(out_dir=str(tmp_path)))
    ft.model.init = str(tmp_path / "run")  # finetune takes a pretrain run directory too
    check_finetune(ft)
    assert "nor a run directory with encoder/" in error_of(pretrain_cfg(tmp_path, **{"model.init": str(tmp_path)}),
                                                             check=lambda c: check_finetune(_as_finetune(c)))  # fmt: skip


def test_eval_layer_is_a_block_of_the_trained_backbone(tmp_path):
    assert error_of(pretrain_cfg(tmp_path, **{"model.backbone": "swinv2_test", "eval.layer": 5})) == (
        "--eval.layer 5 is not a block of swinv2_test (4 blocks: 0..3, negatives from the end), nor -1 (the final "
        "normalised tokens); a preset's probe block is chosen for its own backbone: with another, set it")  # fmt: skip
    for layer in (3, -4, -1):
        check_pretrain(pretrain_cfg(tmp_path, **{"model.backbone": "swinv2_test", "eval.layer": layer}))
    assert "is not a block of vit_micro (6 blocks" in error_of(pretrain_cfg(tmp_path, **{
        "model.backbone": "vit_micro", "eval.layer": -7}))  # fmt: skip
    check_pretrain(pretrain_cfg(tmp_path, **{"model.backbone": "swinv2_test", "eval.layer": 9, "eval.knn": False,
                                             "eval.linear_probe": False}))  # no probe reads it  # fmt: skip
    enc = tmp_path / "enc"  # a run starting from an encoder: its blocks, not model.backbone's
    build_backbone("swinv2_test").save_pretrained(enc)
    assert "is not a block of " + str(enc) + " (4 blocks" in error_of(pretrain_cfg(tmp_path, **{
        "model.init": str(enc), "eval.layer": 4}))  # fmt: skip


def _as_finetune(cfg: PretrainConfig) -> FinetuneConfig:
    return FinetuneConfig(data=cfg.data, model=cfg.model, trainer=cfg.trainer)


def test_resume_needs_a_run_directory(tmp_path):
    with pytest.raises(ConfigError, match="no such directory; expected the run directory .* config.yaml"):
        validate.check_resume_dir(tmp_path / "nope")
    with pytest.raises(ConfigError, match="not a run directory"):
        validate.check_resume_dir(tmp_path)


def test_output_that_is_a_file(tmp_path):
    (tmp_path / "runs").write_text("x")
    assert error_of(pretrain_cfg(tmp_path)) == f"--trainer.out_dir {tmp_path / 'runs'}: {tmp_path / 'runs'} is a file, not a directory"


def test_read_only_output(tmp_path, read_only):
    cfg = pretrain_cfg(tmp_path, **{"trainer.out_dir": str(read_only / "runs")})
    message = error_of(cfg)
    assert message == f"--trainer.out_dir {read_only / 'runs'}: cannot write in {read_only}: Read-only file system"
    assert list(read_only.iterdir()) == []  # nothing created, not even the probe


def test_the_probe_leaves_nothing(tmp_path):
    validate.probe_writable(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_new_run_refuses_an_existing_runs_checkpoints(tmp_path):
    (tmp_path / "runs" / "r" / "checkpoints" / "step-000004").mkdir(parents=True)
    message = error_of(pretrain_cfg(tmp_path, **{"trainer.run_name": "r"}))
    assert message.startswith("--trainer.run_name r: ") and f"--resume {tmp_path / 'runs' / 'r'}" in message


def test_free_space(tmp_path, monkeypatch):
    validate.check_free_space(tmp_path, 1000, "--trainer.out_dir", "checkpoints")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1500, 1500))
    with pytest.raises(ConfigError) as e:
        validate.check_free_space(tmp_path / "new" / "run", 3 * 10**9, "--trainer.out_dir", "3 checkpoints")
    assert str(e.value) == (f"--trainer.out_dir {tmp_path / 'new' / 'run'}: 1.5 kB free there, but 3 checkpoints need "
                            "about 3.0 GB; free some space or write elsewhere")  # fmt: skip


def test_where_names_options():
    assert Where().option("data.batch_size") == "--data.batch_size"
    assert str(Where("c.yaml").error("data.batch_size", " must be >= 1")) == "c.yaml: data.batch_size must be >= 1"


def test_rules_name_existing_fields():
    for cls, rules in validate.RULES.items():
        fields = {f.name for f in dataclasses.fields(cls)}
        assert set(rules) <= fields, (cls.__name__, set(rules) - fields)


def test_data2vec_ema_decays_in_order(tmp_path):
    cfg = pretrain_cfg(tmp_path, **{"task.name": "data2vec"})
    cfg.task.data2vec.ema_decay, cfg.task.data2vec.ema_end_decay = 0.9999, 0.999
    assert "--task.data2vec.ema_decay 0.9999 must be <= --task.data2vec.ema_end_decay 0.999" in error_of(cfg)
    cfg.task.data2vec.ema_end_decay = None  # the mask kind's official value: decided when the task is built
    check_pretrain(cfg)


def test_data2vec_mask_kinds_are_its_generators():
    """The one copy left: data2vec's generator table must offer exactly the kinds the config accepts."""
    from convergent.tasks.data2vec import MASK_GENERATORS

    assert set(MASK_GENERATORS) == set(choices.DATA2VEC_MASK_KINDS)


def test_sizes():
    assert [validate.size(n) for n in (999, 1500, 2.5e6, 3e9, 4e15)] == ["999 B", "1.5 kB", "2.5 MB", "3.0 GB", "4000.0 TB"]
