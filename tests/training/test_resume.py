"""Exact resume (model, optimizer, scheduler, data position, every RNG) and atomic checkpoints."""

import pytest
import torch
from safetensors.torch import load_file

from convergent.layers import linear
from convergent.training import checkpoint as ckpt
from convergent.training.callbacks import Callback
from convergent.training.loop import Trainer
from tests.training_helpers import MaskedTask, SyntheticImages, build, configs, random_transform, read_metrics

TERMS = ("loss", "masked", "grad_norm", "lr")


class Kill(Exception):
    pass


class KillAt(Callback):
    """Raises after step ``step`` (after its checkpoint): a kill the run does not see coming."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, task, step, metrics):
        if step == self.step:
            raise Kill(step)


def _fit(run_dir, resume=False, callbacks=(), max_steps=8, batch_size=8, **cfg):
    trainer = Trainer(*configs(max_steps=max_steps, checkpoint_every=2, **cfg), run_dir, batch_size, progress=False)
    task = build(MaskedTask)
    task.data = SyntheticImages(5 * batch_size + 4)  # 5 steps per epoch; the 4 left-over samples change each epoch
    trainer.fit(task, task.data, random_transform, resume=resume, callbacks=callbacks)
    return trainer, task


def _per_step(run_dir):
    return [(m["step"],) + tuple(m[k] for k in TERMS) for m in read_metrics(run_dir)]


def test_resume_is_exact(tmp_path):
    _, straight = _fit(tmp_path / "a")
    with pytest.raises(Kill):
        _fit(tmp_path / "b", callbacks=[KillAt(4)])
    assert [m["step"] for m in read_metrics(tmp_path / "b")] == [1, 2, 3, 4]
    trainer, resumed = _fit(tmp_path / "b", resume=True)
    assert resumed.steps_seen == [5, 6, 7, 8]  # really continued from the step-4 checkpoint
    assert (straight.data.reads, resumed.data.reads) == (64, 32)  # done batches are not read again
    assert trainer.step == 8
    a, b = _per_step(tmp_path / "a"), _per_step(tmp_path / "b")
    assert [s[0] for s in b] == list(range(1, 9))
    assert len({s[1] for s in a}) == 8  # losses differ step to step: the comparison has teeth
    assert a == b  # identical, not approximately equal
    for (name, x), (_, y) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(x, y), name
    summary_a = (tmp_path / "a" / "summary_train.json").read_text()
    assert '"nonfinite_steps": 0' in summary_a


def test_checkpoint_contents(tmp_path):
    trainer, task = _fit(tmp_path, max_steps=5)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000004", "step-000005"]  # keeps 2
    assert (root / "latest").read_text().strip() == "step-000005"
    weights = load_file(str(root / "step-000005" / "model.safetensors"))
    assert weights.keys() == task.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in task.state_dict().items())
    state = torch.load(root / "step-000005" / "state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (5, 1, 0)
    assert len(state["losses"]) == 5 and len(state["rng"]) == 1
    assert state["optimizer"]["state"]  # AdamW moments are there


def _boom_after_partial_write(real):
    def boom(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")  # a torn file, then the process "dies"
        raise Kill("killed while saving")

    return boom


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    _fit(tmp_path, max_steps=2)
    monkeypatch.setattr(ckpt, "save_file", _boom_after_partial_write(ckpt.save_file))
    with pytest.raises(Kill):
        _fit(tmp_path, resume=True, max_steps=4)  # dies writing step 4
    root = tmp_path / "checkpoints"
    assert (root / "step-000004.tmp").is_dir()
    assert not (root / "step-000004").exists()
    assert (root / "latest").read_text().strip() == "step-000002"
    found = ckpt.load_latest(tmp_path)
    assert found is not None and found.step == 2 and found.path.name == "step-000002"
    assert not (root / "step-000004.tmp").exists()  # cleaned
    monkeypatch.undo()
    trainer, _ = _fit(tmp_path, resume=True, max_steps=4)
    assert trainer.step == 4 and (root / "latest").read_text().strip() == "step-000004"


def test_interrupted_state_write_and_damaged_checkpoint(tmp_path, monkeypatch):
    weights = {"w": torch.ones(2)}
    ckpt.save_checkpoint(tmp_path, 1, weights, {"step": 1})
    monkeypatch.setattr(ckpt.torch, "save", lambda *a, **k: (_ for _ in ()).throw(Kill("killed in torch.save")))
    with pytest.raises(Kill):
        ckpt.save_checkpoint(tmp_path, 2, weights, {"step": 2})
    monkeypatch.undo()
    assert ckpt.load_latest(tmp_path, clean=False).step == 1
    assert (tmp_path / "checkpoints" / "step-000002.tmp").is_dir()  # ignored, not cleaned
    ckpt.save_checkpoint(tmp_path, 3, weights, {"step": 3})
    (tmp_path / "checkpoints" / "step-000003" / "state.pt").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="cannot be loaded"):
        assert ckpt.load_latest(tmp_path).step == 1  # falls back past the damaged one


def test_tied_weights_are_saved(tmp_path):
    shared = torch.randn(3, 2)
    saved = ckpt.weights_for_saving(torch.nn.ParameterDict({"a": torch.nn.Parameter(shared)}))
    module = torch.nn.Module()
    module.a = torch.nn.Linear(2, 3, bias=False)
    module.b = torch.nn.Linear(2, 3, bias=False)
    module.b.weight = module.a.weight  # tied
    path = ckpt.save_checkpoint(tmp_path, 1, ckpt.weights_for_saving(module), {"step": 1})
    loaded = load_file(str(path / "model.safetensors"))
    assert torch.equal(loaded["a.weight"], loaded["b.weight"]) and saved["a"].shape == (3, 2)


def test_fresh_run_refuses_dir_with_checkpoints_and_resume_without_one_starts(tmp_path):
    _fit(tmp_path, max_steps=2)
    with pytest.raises(FileExistsError, match="resume=True"):
        _fit(tmp_path, max_steps=2)
    with pytest.warns(UserWarning, match="no checkpoint"):
        trainer, _ = _fit(tmp_path / "new", resume=True, max_steps=1)
    assert trainer.step == 1


OTHER = {"onednn": "blas", "blas": "onednn"}


ROUTE_BATCH = 64
"""64 images x 17 tokens: 1088 rows, where the routes' weight gradients start to differ."""


@pytest.fixture
def two_threads():
    """On the development machine's CPU the two routes' products agree bit for bit; their weight
    gradients differ where oneDNN splits the sum over rows between threads. Two threads, so the
    tests below have teeth on any machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("route", ["onednn", "blas"])
def test_resume_reuses_the_recorded_cpu_matmul_route(tmp_path, monkeypatch, two_threads, route):
    """`auto` chooses the CPU matmul route from the machine's instruction set; a run resumed on
    another kind of machine would choose the other one. The run's route is recorded in its
    checkpoints and wins: 24 steps killed at 10 and resumed give the uninterrupted losses exactly
    (with the route chosen anew, they drifted from a few steps after the resume on)."""
    monkeypatch.setattr(linear, "MIN_MACS", 0)  # every product of the tiny model takes the route
    monkeypatch.delenv(linear.ENV, raising=False)  # auto
    monkeypatch.setattr(linear, "default_engine", lambda: route)  # the machine of the first processes
    linear.set_cpu_engine(None)
    _fit(tmp_path / "a", max_steps=24, batch_size=ROUTE_BATCH)
    linear.set_cpu_engine(None)  # each run is a fresh process
    with pytest.raises(Kill):
        _fit(tmp_path / "b", max_steps=24, batch_size=ROUTE_BATCH, callbacks=[KillAt(10)])
    linear.set_cpu_engine(None)
    monkeypatch.setattr(linear, "default_engine", lambda: OTHER[route])  # ... and the one resuming
    _fit(tmp_path / "b", resume=True, max_steps=24, batch_size=ROUTE_BATCH)
    a, b = _per_step(tmp_path / "a"), _per_step(tmp_path / "b")
    assert [s[0] for s in b] == list(range(1, 25))
    assert a == b
    assert linear.cpu_engine() == route
    state = torch.load(tmp_path / "b" / "checkpoints" / "step-000024" / "state.pt", weights_only=True)
    assert state["numerics"]["cpu_matmul"] == route
    linear.set_cpu_engine(None)


def test_the_two_routes_give_other_losses(tmp_path, monkeypatch, two_threads):
    """The teeth of the test above: its run trains differently on the two routes (on the AMD EPYC
    the losses of the first 4 steps agree to the last bit; later ones do not)."""
    monkeypatch.setattr(linear, "MIN_MACS", 0)
    losses = {}
    for route in ("onednn", "blas"):
        linear.set_cpu_engine(route)
        _fit(tmp_path / route, max_steps=24, batch_size=ROUTE_BATCH)  # the resume test's run
        losses[route] = [s[1:] for s in _per_step(tmp_path / route)]
    linear.set_cpu_engine(None)
    assert losses["onednn"] != losses["blas"]


def test_resume_warns_when_the_environment_forces_the_other_route(tmp_path, monkeypatch):
    monkeypatch.delenv(linear.ENV, raising=False)
    linear.set_cpu_engine("blas")
    _fit(tmp_path, max_steps=2)
    linear.set_cpu_engine(None)
    monkeypatch.setenv(linear.ENV, "onednn")
    with pytest.warns(UserWarning, match=r"CONVERGENT_CPU_MATMUL=onednn overrides .* \(blas\).* not be bit-exact"):
        _fit(tmp_path, resume=True, max_steps=3)
    assert linear.cpu_engine() == "onednn"  # the user asked for it
    state = torch.load(tmp_path / "checkpoints" / "step-000003" / "state.pt", weights_only=True)
    assert state["numerics"]["cpu_matmul"] == "onednn"
    linear.set_cpu_engine(None)


def test_resume_warns_when_the_thread_count_changed(tmp_path):
    threads = torch.get_num_threads()
    _fit(tmp_path, max_steps=2)
    state = torch.load(tmp_path / "checkpoints" / "step-000002" / "state.pt", weights_only=True)
    assert state["numerics"]["threads"] == [threads]
    torch.set_num_threads(threads + 1)
    try:
        with pytest.warns(UserWarning, match=rf"{threads + 1} torch thread\(s\) per process now, {threads} when"):
            _fit(tmp_path, resume=True, max_steps=3)
    finally:
        torch.set_num_threads(threads)
