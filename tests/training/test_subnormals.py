"""``trainer.flush_denormals``: subnormal floats flushed to zero on every CPU thread when set
before the first parallel operation (after it, OpenMP threads that exist already may keep their
own flags: reported); recorded per run."""

import subprocess
import sys

import pytest
import torch

from convergent.training import numerics

PROBE = """
import torch
from convergent.training.numerics import flush_denormals, subnormals_now
torch.set_num_threads(2)
{code}
"""


def _run(code: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code)], capture_output=True, text=True,
                         check=True, timeout=300).stdout  # fmt: skip
    return [part.strip() for part in out.strip().split("|")]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available() or torch.get_num_threads() < 2, reason="x86, 2 threads")
def test_flushing_before_the_first_parallel_operation_reaches_every_thread():
    assert _run("print(flush_denormals(), '|', subnormals_now())") == ["all threads", "flushed"]


@pytest.mark.skipif(not torch.backends.mkldnn.is_available() or torch.get_num_threads() < 2, reason="x86, 2 threads")
def test_flushing_later_reports_where_it_took_as_the_probe_sees_it():
    """After parallel work the pool's other threads may keep their own flags (OpenMP threads
    inherit the flag only when they are created); what flush_denormals reports must be what a
    parallel product then does."""
    before, said, after = _run("k = subnormals_now(); s = flush_denormals(); print(k, '|', s, '|', subnormals_now())")
    assert before == "kept"  # PyTorch's default
    assert {"all threads": "flushed", "this thread": "partly flushed"}[said] == after


def test_the_run_records_what_its_arithmetic_does_with_subnormals(tmp_path):
    from tests.training.test_resume import _fit

    _fit(tmp_path, max_steps=2)
    state = torch.load(tmp_path / "checkpoints" / "step-000002" / "state.pt", weights_only=True)
    assert state["numerics"]["subnormals"] == numerics.subnormals_now()
