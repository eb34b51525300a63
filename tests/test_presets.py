"""Every bundled preset is a valid run config (typed, no unknown keys) whose task and dataset
are registered, and overrides apply on top of it."""

import pytest

from convergent.commands.presets import preset_config, preset_names
from convergent.config import task_field
from convergent.data.registry import names as dataset_names
from convergent.tasks.registry import names as task_names


@pytest.mark.parametrize("name", preset_names())
def test_preset_is_a_valid_run_config(name):
    cfg = preset_config(name)
    assert cfg.task.name in task_names() and cfg.data.name in dataset_names()
    assert getattr(cfg.task, task_field(cfg.task.name)) is not None


def test_overrides_apply_and_typos_fail():
    cfg = preset_config("mlm-bert-wordnet", {"data": {"name": "wordnet-definitions"}, "trainer": {"max_steps": 7}})
    assert (cfg.data.name, cfg.trainer.max_steps, cfg.task.name) == ("wordnet-definitions", 7, "mlm")
    with pytest.raises(ValueError, match="max_stepz"):
        preset_config("mlm-bert-wordnet", {"trainer": {"max_stepz": 7}})
    with pytest.raises(ValueError, match="did you mean"):
        preset_config("mlm-bert-wordnt")
