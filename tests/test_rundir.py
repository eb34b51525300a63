"""RunDir: every path of a run directory, named once, and the writers that use it."""

import os
import subprocess
import sys
from pathlib import Path

from convergent.rundir import RunDir

NAMES = {
    "config": "config.yaml", "checkpoints": "checkpoints", "encoder": "encoder", "tokenizer": "tokenizer",
    "metrics": "metrics.jsonl", "tensorboard": "tensorboard", "reconstructions": "reconstructions.png",
    "loss_plot": "loss.png", "summary": "summary.json", "train_summary": "summary_train.json",
    "packed": "packed-train.bin",
}  # fmt: skip
"""The layout on disk, spelled out: runs written before stay readable."""


def test_every_path_of_a_run(tmp_path):
    run = RunDir(tmp_path / "r")
    for member, name in NAMES.items():
        assert getattr(run, member) == tmp_path / "r" / name, member
    assert len({getattr(run, m) for m in NAMES}) == len(NAMES)


def test_a_run_goes_where_a_path_does(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.root == tmp_path and Path(run) == tmp_path and os.fspath(run) == str(tmp_path)
    assert str(run) == str(tmp_path) and RunDir(run) == run and RunDir(run).root == tmp_path


def test_is_run_needs_config_yaml(tmp_path):
    run = RunDir(tmp_path)
    assert not run.is_run()
    run.config.write_text("task:\n  name: mae\n")
    assert run.is_run()


def test_named_runs(tmp_path):
    assert RunDir.named(tmp_path, "mine", "mae-vit").root == tmp_path / "mine"
    auto = RunDir.named(tmp_path, None, "mae-vit").root
    assert auto.parent == tmp_path and auto.name.startswith("mae-vit-") and len(auto.name) == len("mae-vit-") + 15


def test_the_trainer_writes_where_rundir_says(tmp_path):
    from convergent.training.checkpoint import checkpoints_dir, save_checkpoint
    from convergent.training.metrics import MetricsLogger

    run = RunDir(tmp_path)
    assert checkpoints_dir(tmp_path) == run.checkpoints
    save_checkpoint(tmp_path, 1, {}, {"step": 1})
    assert (run.checkpoints / "step-000001").is_dir()
    logger = MetricsLogger(tmp_path)
    logger.log(1, {"loss": 1.0})
    logger.close()
    assert run.metrics.read_text().startswith('{"step": 1') and run.tensorboard.is_dir()


def test_import_is_torch_free():
    code = "import sys, convergent.rundir; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
