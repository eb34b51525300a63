"""Real data, slow (``python -m pytest -m slow``): the Fashion-MNIST experiment of
``benchmarks/real_fmnist_simmim.py`` at a reduced budget, on the full 60k/10k set from the
Debian package ``dataset-fashion-mnist`` (skipped when it is not installed). The README's
numbers come from the script at its full budget; this test checks that the pipeline learns
something real: every accuracy well above chance (10 %)."""

import importlib.util
from pathlib import Path

import pytest

DEBIAN = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "real_fmnist_simmim.py"


@pytest.mark.slow
@pytest.mark.skipif(not DEBIAN.is_file(), reason="needs the Debian package dataset-fashion-mnist")
def test_simmim_on_full_fashion_mnist(tmp_path):
    spec = importlib.util.spec_from_file_location("real_fmnist_simmim", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    r = script.run(tmp_path, pretrain_steps=300, finetune_steps=200, root=None, batch=128)
    assert "60000" in r["data"]
    assert r["knn_acc"] > 0.5 and r["linear_probe_acc"] > 0.5
    assert r["finetune_pretrained_acc"] > 0.6 and r["finetune_scratch_acc"] > 0.6
