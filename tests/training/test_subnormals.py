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
{before}
print(subnormals_now(), flush_denormals(), subnormals_now())
"""


def _run(before: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(before=before)], capture_output=True, text=True,
                         check=True, timeout=300).stdout  # fmt: skip
    return out.split()


@pytest.mark.skipif(not torch.backends.mkldnn.is_available() or torch.get_num_threads() < 2, reason="x86, 2 threads")
def test_flushing_before_the_first_parallel_operation_reaches_every_thread():
    assert _run("") == ["kept", "all", "threads", "flushed"]
    # where it reached the calling thread only, it says so, and the probe agrees
    got = _run("(torch.ones(1 << 22) * 2).sum()")
    assert got in (["kept", "all", "threads", "flushed"], ["kept", "this", "thread", "partly", "flushed"])


def test_the_run_records_what_its_arithmetic_does_with_subnormals(tmp_path):
    from tests.training.test_resume import _fit

    _fit(tmp_path, max_steps=2)
    state = torch.load(tmp_path / "checkpoints" / "step-000002" / "state.pt", weights_only=True)
    assert state["numerics"]["subnormals"] == numerics.subnormals_now()
