"""SIGTERM / SIGINT during ``fit``: the step finishes, a checkpoint is written, one line says how to
resume, the process exits 75 and ``--resume`` continues to the losses of an uninterrupted run;
a second signal stops at once; under DDP a signal to one process stops them all at one step."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from convergent import exits
from convergent.cli import main
from convergent.training.callbacks import Callback
from convergent.training.loop import Trainer
from convergent.training.preemption import StopSignals
from convergent.training.status import Preempted
from tests import preempt_worker
from tests.training_helpers import (
    TINY_CLI,
    MaskedTask,
    SyntheticImages,
    build,
    configs,
    losses,
    random_transform,
    read_metrics,
    wait_for_step,
)

WORKER = Path(preempt_worker.__file__)
TERMS = ("loss", "masked", "grad_norm", "lr")


@pytest.fixture
def interruptible():
    """SIGINT raises KeyboardInterrupt here, even where the test runner was started with it
    ignored (a background job); the handlers of both signals are put back afterwards."""
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield before
    for s, handler in before.items():
        signal.signal(s, handler)


def test_first_signal_is_noted_second_acts_at_once(interruptible):
    with StopSignals() as signals:
        assert signal.getsignal(signal.SIGTERM) != interruptible[signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGINT)
        assert signals.received == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the second: as before
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == interruptible[signal.SIGTERM]
    with StopSignals():
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back on leaving


def test_an_ignored_signal_stays_ignored(interruptible):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with StopSignals():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


class SignalAt(Callback):
    """Sends this process ``sig`` at the end of step ``step`` (a scheduler's SIGTERM)."""

    def __init__(self, step: int, sig: int = signal.SIGTERM):
        self.step, self.sig = step, sig

    def on_step_end(self, trainer, task, step, metrics):
        if step == self.step:
            os.kill(os.getpid(), self.sig)


def _fit(run_dir, resume=False, callbacks=()):
    trainer = Trainer(*configs(max_steps=8, checkpoint_every=100), run_dir, batch_size=8, progress=False)
    task = build(MaskedTask)
    return trainer, trainer.fit(task, SyntheticImages(44), random_transform, resume=resume, callbacks=callbacks)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_checkpoints_preempted_and_resumes_exactly(tmp_path, interruptible, sig):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Preempted) as e:
        _fit(tmp_path / "b", callbacks=[SignalAt(3, sig)])
    name = signal.Signals(sig).name
    checkpoint = tmp_path / "b" / "checkpoints" / "step-000003"
    assert str(e.value) == f"{name} after step 3 of 8; last checkpoint {checkpoint}"
    summary = e.value.summary
    assert (summary["status"], summary["reason"], summary["steps"]) == ("preempted", f"{name} after step 3 of 8", 3)
    assert summary["checkpoint"] == str(checkpoint) and (checkpoint / "state.pt").is_file()  # checkpoint_every: 100
    assert json.loads((tmp_path / "b" / "summary_train.json").read_text()) == summary
    assert signal.getsignal(signal.SIGTERM) == before  # handlers put back
    if sig == signal.SIGINT:
        return  # the rest is the same for both
    _fit(tmp_path / "a")
    _, resumed = _fit(tmp_path / "b", resume=True)
    assert resumed["status"] == "ok"
    assert losses(tmp_path / "b", TERMS) == losses(tmp_path / "a", TERMS)  # exactly


def test_cli_sigterm_exits_75_and_resume_gives_the_same_losses(tmp_path):
    """A real ``convergent pretrain`` process sent SIGTERM mid-run; then ``--resume`` to the end,
    and an uninterrupted run of the same length (a constant learning rate, so the run's length,
    changed after the signal, does not change its schedule)."""
    args = [*TINY_CLI, "--optim.lr", "1e-3", "--optim.min_lr", "1e-3", "--optim.warmup_steps", "0",
            "--trainer.checkpoint_every", "1000", "--trainer.out_dir", str(tmp_path)]  # fmt: skip
    run = tmp_path / "p"
    cmd = [sys.executable, "-m", "convergent", "pretrain", *args, "--trainer.run_name", "p", "--trainer.max_steps", "100000"]
    with open(tmp_path / "err.txt", "w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        wait_for_step(run, proc, 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == exits.PREEMPTED == 75
    summary = json.loads((run / "summary.json").read_text())
    step = summary["steps"]
    assert (summary["status"], summary["reason"]) == ("preempted", f"SIGTERM after step {step} of 100000")
    checkpoint = run / "checkpoints" / f"step-{step:06d}"
    assert summary["checkpoint"] == str(checkpoint) and (checkpoint / "model.safetensors").is_file()
    assert summary["encoder"] is None and not (run / "encoder").exists()
    line = f"PREEMPTED: SIGTERM after step {step} of 100000; last checkpoint {checkpoint}; "
    assert line + f"resume with: convergent pretrain --resume {run}" in (tmp_path / "err.txt").read_text()
    assert [m["step"] for m in read_metrics(run)] == list(range(1, step + 1))

    config = run / "config.yaml"
    config.write_text(config.read_text().replace("max_steps: 100000", f"max_steps: {step + 3}"))
    assert main(["pretrain", "--resume", str(run)]) == exits.OK
    assert main(["pretrain", *args, "--trainer.run_name", "ref", "--trainer.max_steps", str(step + 3)]) == exits.OK
    assert json.loads((run / "summary.json").read_text())["status"] == "ok"
    assert losses(run, ("loss", "grad_norm")) == losses(tmp_path / "ref", ("loss", "grad_norm"))
    assert len(losses(run)) == step + 3


def test_second_sigterm_stops_at_once_without_a_checkpoint(tmp_path):
    """Each step of the worker sleeps 2 s; the first SIGTERM lands in one, the second follows as
    soon as the first is acknowledged: the process ends by the signal, writing nothing more."""
    cmd = [sys.executable, str(WORKER), str(tmp_path), "1", "2.0"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    wait_for_step(tmp_path, proc, 1)
    proc.send_signal(signal.SIGTERM)
    for line in proc.stderr:
        if line.startswith("SIGTERM received: stopping after this step"):
            break
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == -signal.SIGTERM
    assert not (tmp_path / "checkpoints").exists()  # checkpoint_every is 1000: none but the one not written
    assert not (tmp_path / "result-0.json").exists() and not (tmp_path / "summary_train.json").exists()


def test_ddp_sigterm_to_one_process_stops_both_at_one_step(tmp_path):
    """2 processes (gloo); SIGTERM reaches rank 1 only. Rank 0 learns of it from the per-step
    all-reduce of the stop flag: both stop after the same step, write one checkpoint, exit 75."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(WORKER), str(tmp_path), "2", "0.05"]  # fmt: skip
    with open(tmp_path / "out.txt", "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_for_step(tmp_path, proc, 2)
        os.kill(int((tmp_path / "pid-1").read_text()), signal.SIGTERM)
        proc.wait(timeout=120)
    output = (tmp_path / "out.txt").read_text()
    results = [json.loads((tmp_path / f"result-{rank}.json").read_text()) for rank in (0, 1)]
    assert results[0] == results[1] and results[0]["status"] == "preempted", output[-3000:]
    step = results[0]["steps"]
    summary = json.loads((tmp_path / "summary_train.json").read_text())
    assert (summary["reason"], summary["world_size"]) == (f"SIGTERM after step {step} of {preempt_worker.STEPS}", 2)
    assert summary["checkpoint"] == str(tmp_path / "checkpoints" / f"step-{step:06d}")
    assert [m["step"] for m in read_metrics(tmp_path)] == list(range(1, step + 1))
