"""trainer.compile: auto's rule, the FLOP count it rests on, the compiled step's masks and its
exact resume, and what happens without a working compiler."""

import os

import pytest
import torch

from convergent.layers import linear
from convergent.training import compiling
from convergent.training.compiling import decide_auto
from convergent.training.loop import Trainer
from tests.training.test_resume import Kill, KillAt, _fit, _per_step
from tests.training_helpers import MaskedTask, SyntheticImages, build, configs, random_transform

BIG = dict(device="cpu", world_size=1, sharded=False, precision="32-true", route="onednn", modality="image",
           threads=2, steps_left=100_000, count=lambda: 10**12)  # fmt: skip


def test_auto_compiles_only_long_single_process_fp32_onednn_image_runs():
    assert decide_auto(**BIG).compiled
    changes = [(dict(device="cuda"), "cuda"), (dict(world_size=2), "2 process"), (dict(sharded=True), "FSDP"),
               (dict(precision="bf16-mixed"), "bf16-mixed"), (dict(route="blas"), "blas"),
               (dict(modality="text"), "text backbone"), (dict(count=lambda: None), "could not be counted"),
               (dict(steps_left=10), "under")]  # fmt: skip
    for change, word in changes:
        choice = decide_auto(**{**BIG, **change})
        assert not choice.compiled and word in choice.reason, change

    def boom():
        raise AssertionError("counted although the rule had already decided")

    assert not decide_auto(**{**BIG, "route": "blas", "count": boom}).compiled  # the count is the last condition


def test_auto_threshold_is_the_estimated_eager_time():
    rate = compiling.NOMINAL_FLOPS_PER_THREAD * 2
    steps = int(compiling.AUTO_MIN_EAGER_S * rate / 10**12)  # the estimate crosses the threshold here
    assert not decide_auto(**{**BIG, "steps_left": steps - 1}).compiled
    assert decide_auto(**{**BIG, "steps_left": steps + 1}).compiled
    assert not decide_auto(**{**BIG, "steps_left": steps + 1, "threads": 4}).compiled  # twice the rate


def test_setting_is_checked():
    with pytest.raises(ValueError, match="trainer.compile must be true, false or 'auto', not 'yes'"):
        compiling.check_setting("yes")
    for ok in (True, False, "auto"):
        compiling.check_setting(ok)


@pytest.fixture
def onednn_and_cheap(monkeypatch):
    """auto's other conditions hold: the oneDNN route, and every run counts as long."""
    monkeypatch.setenv(linear.ENV, "onednn")
    linear.set_cpu_engine(None)
    monkeypatch.setattr(compiling, "AUTO_MIN_EAGER_S", 0.0)
    yield
    linear.set_cpu_engine(None)


def _summary(trainer: Trainer) -> tuple[bool, str]:
    return trainer.summary["compiled"], trainer.summary["compile_reason"]


def test_a_short_run_stays_eager_and_records_it(tmp_path):
    trainer, _ = _fit(tmp_path, max_steps=2)
    compiled, reason = _summary(trainer)
    assert not compiled and reason.startswith("auto: eager"), reason
    state = torch.load(tmp_path / "checkpoints" / "step-000002" / "state.pt", weights_only=True)
    assert state["numerics"]["compiled"] is False


def test_auto_compiles_with_the_eager_masks_and_resumes_exactly(tmp_path, onednn_and_cheap, monkeypatch):
    trainer, _ = _fit(tmp_path / "compiled")
    assert _summary(trainer)[0], _summary(trainer)
    _fit(tmp_path / "eager", compile=False)
    compiled, eager = _per_step(tmp_path / "compiled"), _per_step(tmp_path / "eager")
    # the same masks (fallback_random): the masked fraction is the same every step, the losses
    # agree closely at first (rounding, then drift) and are not the eager ones to the bit
    assert [s[2] for s in compiled] == [s[2] for s in eager]
    assert compiled[0][1] == pytest.approx(eager[0][1], rel=1e-5)
    assert compiled != eager
    with pytest.raises(Kill):
        _fit(tmp_path / "killed", callbacks=[KillAt(4)])
    monkeypatch.setattr(compiling, "AUTO_MIN_EAGER_S", float("inf"))  # now auto alone would not compile
    trainer, _ = _fit(tmp_path / "killed", resume=True)
    assert _summary(trainer) == (True, "auto: as the checkpoint being resumed recorded")
    assert _per_step(tmp_path / "killed") == compiled  # identical, not approximately equal


def test_an_explicit_setting_that_differs_from_the_checkpoint_warns(tmp_path):
    with pytest.raises(Kill):
        _fit(tmp_path, callbacks=[KillAt(2)], max_steps=4)
    with pytest.warns(UserWarning, match="written by an eager train step, this run's is compiled"):
        trainer, _ = _fit(tmp_path, resume=True, max_steps=4, compile=True)
    assert _summary(trainer) == (True, "trainer.compile=true")


def test_without_a_working_compiler(tmp_path, onednn_and_cheap, monkeypatch):
    monkeypatch.setattr(compiling, "compiler_problem", lambda: "no C++ compiler found")
    warning = r"torch.compile does not work here \(no C\+\+ compiler found\); training eagerly"
    with pytest.warns(UserWarning, match=warning):
        trainer, _ = _fit(tmp_path / "auto", max_steps=2)
    assert _summary(trainer) == (False, "auto: eager (torch.compile does not work here: no C++ compiler found)")
    with pytest.raises(RuntimeError, match="trainer.compile=true, but torch.compile does not work here"):
        _fit(tmp_path / "true", max_steps=2, compile=True)


def test_the_compiler_probe_works_here():
    assert compiling.compiler_problem() is None  # CI installs a C++ compiler with the toolchain torch uses


def test_a_task_that_cannot_run_on_meta_stays_eager(tmp_path, onednn_and_cheap):
    class DataDependent(MaskedTask):
        def forward(self, batch):
            out = super().forward(batch)
            if out["loss"].item() < -1:  # a host sync: impossible on the meta device
                raise AssertionError
            return out

    trainer = Trainer(*configs(max_steps=1), tmp_path, 8, progress=False)
    task = build(DataDependent)
    trainer.fit(task, SyntheticImages(16), random_transform)
    assert _summary(trainer) == (False, "auto: eager (the step's FLOPs could not be counted on the meta device)")


def test_a_process_held_to_another_instruction_set_gets_its_own_cache(monkeypatch):
    monkeypatch.delenv(compiling.CACHE_ENV, raising=False)
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    compiling.cache_per_isa()
    assert compiling.CACHE_ENV not in os.environ  # the machine's own kernels: torch's default cache
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    compiling.cache_per_isa()
    assert os.environ[compiling.CACHE_ENV].endswith("-" + torch.backends.cpu.get_cpu_capability().lower())
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv(compiling.CACHE_ENV, default_cache_dir())  # what torch writes there itself
    compiling.cache_per_isa()
    assert os.environ[compiling.CACHE_ENV].endswith("-" + torch.backends.cpu.get_cpu_capability().lower())
    monkeypatch.setenv(compiling.CACHE_ENV, "/somewhere/else")
    compiling.cache_per_isa()
    assert os.environ[compiling.CACHE_ENV] == "/somewhere/else"  # one the user named is kept
