"""benchmarks/common.py ``--isa``: one table with a row set per CPU instruction set, each measured
in its own interpreter under that instruction set's environment."""

import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_isa_runs_each_instruction_set_in_its_own_process_and_prints_one_table():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "mlm.py"), "--case", "tiny", "--reps", "1", "--warmup", "0",
           "--no-memory", "--no-floor", "--isa", "native", "avx2"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600).stdout
    rows = [line for line in out.splitlines() if line.startswith("| BERT-tiny")]
    labels = [row.split("|")[2].strip() for row in rows]
    assert len(rows) == 6  # ours, HF, HF default AdamW: once per instruction set
    native = torch.backends.cpu.get_cpu_capability()
    assert all(label.startswith(native + ",") for label in labels[:3])
    assert labels[3:] == ["AVX2, blas"] * 3  # AVX2 kernels, and auto keeps the BLAS there
    assert out.count("matmul peak") == 2


def test_isa_is_refused_on_a_gpu_run():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "mlm.py"), "--device", "cuda", "--isa", "avx2"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=600)
    assert out.returncode == 2 and "--isa applies to CPU runs only" in out.stderr
