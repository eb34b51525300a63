"""A run that fails says so: a diverged run is halted with status ``failed`` and the reason, its
``final_loss`` is the last finite one (and says which step), its last good checkpoint resumes,
no checkpoint holds non-finite weights, no encoder is published, and ``convergent pretrain``
exits 1."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from convergent import exits
from convergent.cli import main
from convergent.config import TrainerConfig
from convergent.training.callbacks import Callback
from convergent.training.loop import Trainer
from convergent.training.nonfinite import NonfiniteCount, divergence
from convergent.training.status import Diverged
from tests.training_helpers import TINY_CLI, RegressTask, SyntheticImages, build, configs, eval_transform, read_metrics


def _trainer(run_dir, **cfg):
    return Trainer(*configs(checkpoint_every=2, **cfg), run_dir, batch_size=8, progress=False)


class Snapshot(Callback):
    """The weights after each step."""

    def __init__(self):
        self.weights = {}

    def on_step_end(self, trainer, task, step, metrics):
        self.weights[step] = {k: v.clone() for k, v in task.state_dict().items()}


def test_diverged_run_halts_with_status_failed_and_resumes_from_its_checkpoint(tmp_path):
    snap = Snapshot()
    trainer = _trainer(tmp_path, max_steps=12)
    task = build(RegressTask, nan_from_call=4)  # steps 1-3 train, then every loss is NaN
    with pytest.warns(UserWarning, match="update skipped"), pytest.raises(Diverged) as e:
        trainer.fit(task, SyntheticImages(32), eval_transform, callbacks=[snap])
    reason = "diverged: 5 of 8 steps non-finite (5 in a row)"
    assert str(e.value).startswith(f"{reason}; last checkpoint ") and "step-000008" in str(e.value)
    summary = e.value.summary
    assert summary == trainer.summary == json.loads((tmp_path / "summary_train.json").read_text())
    assert (summary["status"], summary["reason"], summary["steps"], summary["nonfinite_steps"]) == (
        "failed", reason, 8, 5)  # fmt: skip
    metrics = read_metrics(tmp_path)
    assert [m["loss"] is None for m in metrics] == [False] * 3 + [True] * 5
    assert (summary["final_loss"], summary["final_loss_step"]) == (metrics[2]["loss"], 3)
    # the skipped steps left the weights of step 3: that is what the checkpoint at the halt holds
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000006", "step-000008"]
    saved = load_file(str(root / "step-000008" / "model.safetensors"))
    assert all(torch.equal(saved[k], v) for k, v in snap.weights[3].items())
    # it resumes (5 of 12 steps non-finite would pass the default 25% limit: lifted here)
    again = _trainer(tmp_path, max_steps=12, max_nonfinite_fraction=1.0)
    summary = again.fit(build(RegressTask), SyntheticImages(32), eval_transform, resume=True)
    assert (summary["status"], summary["reason"], summary["steps"]) == ("ok", None, 12)
    assert (summary["nonfinite_steps"], summary["final_loss_step"]) == (5, 12)


def test_divergence_limits():
    cfg = TrainerConfig()  # 5 in a row; more than 25% from step 10 on
    assert (cfg.max_nonfinite_consecutive, cfg.max_nonfinite_fraction, cfg.nonfinite_min_steps) == (5, 0.25, 10)
    assert divergence(NonfiniteCount(4, 4), 4, cfg) is None
    assert divergence(NonfiniteCount(7, 5), 8, cfg) == "diverged: 7 of 8 steps non-finite (5 in a row)"
    assert divergence(NonfiniteCount(3, 1), 9, cfg) is None  # a third, but before step 10
    assert divergence(NonfiniteCount(3, 0), 10, cfg) == (
        "diverged: 3 of 10 steps non-finite (30%, more than trainer.max_nonfinite_fraction=0.25)")  # fmt: skip
    assert divergence(NonfiniteCount(25, 1), 100, cfg) is None  # a quarter is not more than a quarter
    off = TrainerConfig(max_nonfinite_consecutive=0, max_nonfinite_fraction=1.0)
    assert divergence(NonfiniteCount(50, 50), 50, off) is None
    count = NonfiniteCount()
    for bad in (True, True, False, True):
        count.add(bad)
    assert (count.total, count.in_a_row) == (3, 1)


@pytest.mark.parametrize(
    "field, value, message",
    [("max_nonfinite_consecutive", -1, ">= 0"), ("max_nonfinite_fraction", 1.5, r"in \[0, 1\]"),
     ("nonfinite_min_steps", -2, ">= 0")],
)  # fmt: skip
def test_policy_fields_are_checked(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=f"trainer.{field} must be {message}"):
        _trainer(tmp_path, **{field: value})


class Poison(Callback):
    """Makes the weights infinite after step ``step`` (a finite step whose update overflowed)."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, task, step, metrics):
        if step == self.step:
            with torch.no_grad():
                task.head.weight.fill_(float("inf"))


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    trainer = _trainer(tmp_path, max_steps=12)
    with pytest.warns(UserWarning, match="step 4: the weights are not finite; no checkpoint written"):
        with pytest.raises(Diverged, match=r"diverged: 5 of 8 steps non-finite \(5 in a row\)"):
            trainer.fit(build(RegressTask), SyntheticImages(32), eval_transform, callbacks=[Poison(3)])
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.glob("step-*")) == ["step-000002"]  # neither step 4, 6 nor 8
    assert trainer.summary["checkpoint"] == str(root / "step-000002")
    assert (trainer.summary["final_loss_step"], trainer.summary["status"]) == (3, "failed")


def test_cli_diverged_run_exits_1_without_an_encoder(tmp_path):
    """The reported case, in a real process: ``--optim.lr 1e6`` used to exit 0 and save an
    encoder with ``final_loss`` of step 1 as if it were the end."""
    run = tmp_path / "d"
    cmd = [sys.executable, "-m", "convergent", "pretrain", *TINY_CLI, "--optim.lr", "1e6", "--optim.warmup_steps", "0",
           "--trainer.max_steps", "8", "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "d"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == exits.FAILED == 1, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert re.fullmatch(r"diverged: (\d) of \d steps non-finite \(5 in a row\)", summary["reason"]), summary["reason"]
    assert f"FAILED: {summary['reason']}; last checkpoint {summary['checkpoint']}" in proc.stderr
    assert summary["final_loss_step"] < summary["steps"] and summary["encoder"] is None
    assert not (run / "encoder").exists()
    # the checkpoint resumes: the run goes on from the step it halted at, counting on (and, with
    # the weights of lr 1e6's first update, halts again: no learning rate rescues those)
    assert main(["pretrain", "--resume", str(run)]) == exits.FAILED
    again = json.loads((run / "summary.json").read_text())
    assert again["steps"] == summary["steps"] + 1 and again["nonfinite_steps"] == summary["nonfinite_steps"] + 1
    assert [m["step"] for m in read_metrics(run)] == list(range(1, again["steps"] + 1))
    assert again["final_loss_step"] == summary["final_loss_step"] and not (run / "encoder").exists()


def test_cli_diverged_finetune_exits_1(tmp_path):
    args = ["finetune", "--model.backbone", "vit_test", "--data.limit", "64", "--data.batch_size", "8",
            "--optim.lr", "1e6", "--optim.warmup_steps", "0", "--trainer.max_steps", "8",
            "--trainer.out_dir", str(tmp_path), "--trainer.run_name", "ft"]  # fmt: skip
    with pytest.warns(UserWarning, match="update skipped"):
        assert main(args) == exits.FAILED
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["reason"].startswith("diverged: ")
    assert "test_acc" not in summary and summary["init"] == "random"
