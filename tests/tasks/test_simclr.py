"""SimCLR and SimCSE, one implementation (``tasks/simclr.py``): each task's loss is its loss
function of its parts (the losses themselves, by hand and across 2 gloo processes:
``tests/losses/test_contrastive.py``, ``tests/tasks/test_clip_ddp.py``); SimCLR's views go through
the backbone and the projector as one batch; SimCSE's two encodings differ by dropout only;
the heads have each paper's layout; both train on a fixed batch; clear errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convergent.backbones import build_backbone
from convergent.heads.mlp_head import MLPHead
from convergent.losses.contrastive import info_nce, nt_xent
from convergent.tasks.configs import SimCLRConfig, SimCSEConfig
from convergent.tasks.registry import build_task, entry
from convergent.tasks.simclr import SimCLR, SimCSE
from tests.task_helpers import train_steps

VOCAB = dict(vocab_size=100, pad_token_id=0)


def simclr(**cfg) -> SimCLR:
    return SimCLR(build_backbone("vit_test"), SimCLRConfig(**{"out_dim": 16, **cfg}))


def simcse(dropout: float = 0.1, **cfg) -> SimCSE:
    return SimCSE(build_backbone("text_test", dropout=dropout, **VOCAB), SimCSEConfig(**cfg))


def views(b: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randn(b, 3, 32, 32, generator=g), "image2": torch.randn(b, 3, 32, 32, generator=g)}


def texts(b: int = 6, length: int = 10) -> dict:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (b, length), generator=g)
    lengths = torch.randint(4, length + 1, (b,), generator=g)
    mask = (torch.arange(length) < lengths[:, None]).long()
    return {"input_ids": ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def test_registered_with_the_papers_defaults():
    assert entry("simclr").config is SimCLRConfig and entry("simcse").config is SimCSEConfig
    a, b = SimCLRConfig(), SimCSEConfig()
    assert (a.temperature, a.head, a.head_layers, a.hidden_dim, a.out_dim, a.loss) == (0.1, "mlp", 3, None, 128, "nt_xent")
    assert (b.temperature, b.pooling, b.head, b.loss) == (0.05, "cls", "tanh", "info_nce")
    assert (SimCLR.num_views, SimCLR.modality, SimCSE.num_views, SimCSE.modality) == (2, "image", 1, "text")


def test_simclr_loss_is_nt_xent_of_the_projected_views():
    task = simclr(temperature=0.5).train()
    batch = views()
    out = task(batch)
    tokens = task.backbone.forward_features(torch.cat([batch["image"], batch["image2"]]))
    z1, z2 = task.head(task.backbone.pooled(tokens)).chunk(2)  # BN over the 2B, as the official code
    torch.testing.assert_close(out["loss"], nt_xent(z1, z2, 0.5), rtol=1e-5, atol=1e-5)
    assert set(out) == {"loss", "acc"}


def test_simclr_projector_layout():
    task = simclr(head_layers=2)
    assert isinstance(task.head, MLPHead)
    linears = [m for m in task.head if isinstance(m, nn.Linear)]
    width = task.backbone.num_features
    assert [(m.in_features, m.out_features) for m in linears] == [(width, width), (width, 16)]  # hidden = width
    assert isinstance(task.head[-1], nn.modules.batchnorm._BatchNorm) and not task.head[-1].affine  # last BN
    assert [(m.in_features, m.out_features) for m in simclr(hidden_dim=24).head if isinstance(m, nn.Linear)][1] == (24, 24)


def test_simcse_views_differ_by_dropout_only():
    task = simcse().train()
    batch = texts()
    torch.manual_seed(5)
    out = task(batch)
    torch.manual_seed(5)  # the same dropout masks, drawn by the same single pass of 2B rows
    twice = {k: torch.cat([v, v]) for k, v in batch.items()}
    tokens = task.backbone.forward_features(twice["input_ids"], attention_mask=twice["attention_mask"], unpad=True)
    z1, z2 = task.head(tokens[:, 0]).chunk(2)  # [CLS] -> Linear + tanh
    assert not torch.allclose(z1, z2)  # dropout made two views
    ref = info_nce(F.normalize(z1, dim=1), F.normalize(z2, dim=1), 1 / 0.05)
    torch.testing.assert_close(out["loss"], ref, rtol=1e-5, atol=1e-5)
    task.eval()
    with torch.no_grad():
        h = task.pooled_views(batch)
    torch.testing.assert_close(h[:6], h[6:])  # no dropout in eval: identical views


def test_simcse_head_is_linear_tanh_at_the_backbone_width():
    task = simcse()
    linear, act = task.head
    width = task.backbone.num_features
    assert (linear.in_features, linear.out_features) == (width, width) and isinstance(act, nn.Tanh)


@pytest.mark.parametrize("make, batch", [(simclr, views), (simcse, texts)])
def test_trains_on_a_fixed_batch(make, batch):
    torch.manual_seed(0)
    task = make().train()
    losses, out = train_steps(task, batch(), steps=8, lr=1e-3)
    assert losses[-1] < losses[0], losses
    assert task.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_simcse_warns_without_dropout_and_refuses_a_causal_backbone():
    with pytest.warns(UserWarning, match="dropout 0.0, so both encodings of a text are the same"):
        simcse(dropout=0.0)
    causal = build_backbone("text_test", causal=True, **VOCAB)
    with pytest.raises(ValueError, match="task 'simcse' needs a backbone with first_token_summarises"):
        SimCSE(causal, SimCSEConfig())


def test_clear_errors():
    with pytest.raises(ValueError, match="task 'simclr' needs an image backbone"):
        build_task("simclr", build_backbone("text_test", **VOCAB), SimCLRConfig())
    with pytest.raises(ValueError, match="task 'simcse' needs a text backbone"):
        build_task("simcse", build_backbone("vit_test"), SimCSEConfig())
    with pytest.raises(ValueError, match="simclr.pooling='cls' needs a first token"):
        SimCLR(build_backbone("swin_test"), SimCLRConfig(pooling="cls"))
    with pytest.raises(ValueError, match="task.simclr.head must be one of mlp, tanh, none"):
        simclr(head="linear")
    with pytest.raises(ValueError, match="task.simcse.temperature must be > 0"):
        simcse(temperature=0.0)
    with pytest.raises(KeyError, match=r"lacks \['image2'\]"):
        simclr()({"image": torch.randn(2, 3, 32, 32)})
