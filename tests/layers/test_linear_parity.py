"""The HF parity tests again, with every linear layer forced through the oneDNN route of
layers/linear.py (engine ``onednn``, no size threshold): the faster route must stay within
the same tolerances against HF's BLAS products."""

import pytest

from convergent.layers.linear import set_cpu_engine
from tests.backbones import test_swin as swin
from tests.converters import test_hf_bert as bert
from tests.converters import test_hf_clip as clip
from tests.converters import test_hf_vit as vit
from tests.tasks import test_mae as mae
from tests.tasks import test_simmim as simmim


@pytest.fixture(autouse=True)
def onednn_everywhere(monkeypatch):
    import convergent.layers.linear as mod

    monkeypatch.setattr(mod, "MIN_MACS", 0)
    set_cpu_engine("onednn")
    yield
    set_cpu_engine(None)


@pytest.mark.parametrize("version,img,window", swin.CASES)
def test_swin_parity(version, img, window):
    swin.test_parity_with_hf(version, img, window, "from_hf")


def test_vit_parity():
    vit.test_hf_to_ours_forward_parity()
    vit.test_gradient_parity_inputs_and_parameters()


@pytest.mark.parametrize("causal", [False, True])
def test_bert_parity(causal):
    bert.test_gradient_parity(causal)


def test_clip_parity():
    clip.test_gradient_parity()


def test_mae_loss_parity():
    mae.test_loss_parity_with_hf(True)


@pytest.mark.parametrize("family", ["swinv2", "swin", "vit"])
def test_simmim_loss_parity(family):
    simmim.test_loss_parity_with_hf(family)
