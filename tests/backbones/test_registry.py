"""Generated from the registry: every registered backbone, forward + backward, with and
without the mask token; save_pretrained → from_pretrained is bit-identical.

Full-size variants keep their real widths and depths but run on a small input (short text,
small images) so the whole file stays quick on 2 CPU cores.
"""

import pytest
import torch

from convergent.backbones import backbone_config, backbone_names, build_backbone
from convergent.backbones.protocol import Backbone

SMALL_IMAGE = 64
"""Image side for full-size image variants: at least two final tokens per side for every
registered output stride (ViT/16: 4x4, /32: 2x2, four-stage Swin and ConvNeXt: 2x2)."""


def small_input(model: Backbone) -> tuple[torch.Tensor, int]:
    """An input and its number of maskable positions, from the declared protocol."""
    if model.modality == "text":
        return torch.randint(0, model.vocab_size, (2, 8)), 8
    x = torch.randn(2, model.in_chans, model.image_size, model.image_size)
    grid = model.mask_grid(x)
    return x, grid[0] * grid[1]


@pytest.mark.parametrize("name", backbone_names())
def test_forward_backward_with_and_without_mask(name):
    cfg = backbone_config(name)
    model = build_backbone(name, **({"img_size": SMALL_IMAGE} if cfg.modality == "image" else {})).train()
    assert isinstance(model, Backbone)
    x, n = small_input(model)
    tokens = model(x)
    assert tokens.ndim == 3 and tokens.shape[0] == 2 and tokens.shape[-1] == model.num_features
    pooled = model.pooled(tokens)
    assert pooled.shape == (2, model.num_features)
    assert model.supports_mask_token
    mask = torch.zeros(2, n, dtype=torch.bool)
    mask[:, ::2] = True
    masked = model(x, mask=mask)
    (pooled.square().mean() + masked.square().mean()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads[:5])
    mask_param = getattr(model, "mask_token", None)
    if isinstance(mask_param, torch.nn.Parameter):
        assert mask_param.grad is not None and mask_param.grad.abs().sum() > 0


@pytest.mark.parametrize("name", [n for n in backbone_names() if n.endswith("_test")])
def test_save_load_round_trip_bit_identical(name, tmp_path):
    model = build_backbone(name).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(tmp_path / name)
    again = type(model).from_pretrained(tmp_path / name).eval()
    assert again.config == model.config
    for (k, a), (k2, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
    x, _ = small_input(model)
    assert torch.equal(model(x), again(x))


@pytest.mark.parametrize("name", [n for n in backbone_names() if n.endswith("_test")])
def test_grad_checkpointing_gives_the_same_gradients(name):
    """Recomputing the blocks in the backward pass changes no gradient (dropout and drop path
    draw the same numbers: the RNG is seeded per pass and replayed by the checkpoint)."""
    model = build_backbone(name).train()
    x, _ = small_input(model)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(0)
        model.pooled(model(x)).square().sum().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and plain
    for n, g in plain.items():
        torch.testing.assert_close(checkpointed[n], g, atol=1e-6, rtol=1e-5, msg=n)


def test_unknown_backbone_suggests():
    with pytest.raises(KeyError, match="did you mean swinv2_tiny"):
        backbone_config("swinv2_tiy")


def test_unknown_override_is_an_error():
    with pytest.raises(ValueError, match="unknown swin config keys"):
        backbone_config("swinv2_tiny", windw_size=8)


@pytest.mark.parametrize("name", backbone_names())
@torch.no_grad()
def test_the_declared_number_of_blocks_is_what_forward_intermediates_yields(name):
    model = build_backbone(name).eval()
    x, _ = small_input(model)
    _, outs = model.forward_intermediates(x, indices=None)
    assert len(outs) == backbone_config(name).num_blocks


def test_a_family_must_declare_its_contract():
    from dataclasses import dataclass
    from typing import ClassVar

    from convergent.backbones.families import register_family

    @dataclass
    class NoBlocks:
        family: ClassVar[str] = "no_blocks"
        modality: ClassVar[str] = "image"
        builder: ClassVar[str] = "x:Y"
        converter: ClassVar[str | None] = None

    with pytest.raises(TypeError, match=r"NoBlocks does not declare \['num_blocks'\]"):
        register_family(NoBlocks)
