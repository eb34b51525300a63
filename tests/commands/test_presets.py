"""Every bundled preset is a valid run config (typed, no unknown keys) whose task and dataset
are registered, and overrides apply on top of it."""

import pytest

from convergent.commands.presets import DEFAULT_PRESET, preset_config, preset_names
from convergent.commands.pretrain import parser as pretrain_parser
from convergent.config import PretrainConfig, from_namespace, to_dict
from convergent.data.registry import names as dataset_names
from convergent.tasks.registry import names as task_names


@pytest.mark.parametrize("name", preset_names())
def test_preset_is_a_valid_run_config(name):
    cfg = preset_config(name)
    assert cfg.task.name in task_names() and cfg.data.name in dataset_names()
    assert cfg.task.selected() is not None


def test_overrides_apply_and_typos_fail():
    cfg = preset_config("mlm-bert-wordnet", {"data": {"name": "wordnet-definitions"}, "trainer": {"max_steps": 7}})
    assert (cfg.data.name, cfg.trainer.max_steps, cfg.task.name) == ("wordnet-definitions", 7, "mlm")
    with pytest.raises(ValueError, match="max_stepz"):
        preset_config("mlm-bert-wordnet", {"trainer": {"max_stepz": 7}})
    with pytest.raises(ValueError, match="did you mean"):
        preset_config("mlm-bert-wordnt")


@pytest.mark.parametrize("name", preset_names())
def test_a_preset_means_the_same_from_the_cli_and_from_python(name):
    """`convergent pretrain --preset NAME` resolves to exactly `preset_config(NAME)`: another
    preset starts from the shared typed defaults, not from the default preset's values."""
    cli = from_namespace(PretrainConfig, pretrain_parser().parse_args(["--preset", name]), "cli")
    assert to_dict(cli) == to_dict(preset_config(name))


def test_no_preset_is_the_default_preset_and_options_still_win():
    parser = pretrain_parser()
    assert to_dict(from_namespace(PretrainConfig, parser.parse_args([]), "cli")) == to_dict(preset_config(DEFAULT_PRESET))
    args = parser.parse_args(["--task.simmim.mask_patch_size", "4", "--preset", "mae-vit-fmnist", "--optim.lr", "0.5"])
    cfg = from_namespace(PretrainConfig, args, "cli")
    assert cfg.task.simmim.mask_patch_size == 4  # set before the preset, which does not set it
    assert cfg.optim.lr == 0.5 and cfg.task.name == "mae"
