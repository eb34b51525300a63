"""Frozen-feature extraction: shapes per layer, pooling choices against the backbone's own
tokens, eval mode, batching independence and clear errors."""

import pytest
import torch

from convergent.backbones import build_backbone
from convergent.evaluation.features import collate_labelled, extract_features


def image_set(n: int = 10, size: int = 32, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)
    return [{"image": images[i], "label": i % 3} for i in range(n)]


def to_float(images: torch.Tensor, generator) -> torch.Tensor:
    assert generator is None, "evaluation transforms get no generator"
    assert images.dtype == torch.uint8
    return images.float() / 127.5 - 1.0


def all_images(data: list[dict]) -> torch.Tensor:
    return to_float(torch.stack([d["image"] for d in data]), None)


def test_vit_final_layer_pooling_matches_tokens():
    model = build_backbone("vit_test").eval()
    data = image_set()
    with torch.no_grad():
        tokens = model.forward_features(all_images(data))  # (10, 1 + 16, 32)
    avg, labels = extract_features(model, data, to_float, pooling="avg", batch_size=4)
    cls, _ = extract_features(model, data, to_float, pooling="cls", batch_size=4)
    default, _ = extract_features(model, data, to_float, pooling="default", batch_size=4)
    assert avg.shape == (10, 32) and avg.dtype == torch.float32
    assert torch.equal(labels, torch.tensor([i % 3 for i in range(10)]))
    torch.testing.assert_close(avg, tokens[:, 1:].mean(1))
    torch.testing.assert_close(cls, tokens[:, 0])
    torch.testing.assert_close(default, model.pooled(tokens))
    assert not torch.allclose(avg, tokens.mean(1)), "avg pooling must skip the class token"


def test_intermediate_layer_is_block_output():
    model = build_backbone("vit_test").eval()
    data = image_set()
    with torch.no_grad():
        final, outs = model.forward_intermediates(all_images(data), indices=[0])
    feats, _ = extract_features(model, data, to_float, layer=0)
    torch.testing.assert_close(feats, outs[0][:, 1:].mean(1))
    assert not torch.allclose(feats, final[:, 1:].mean(1), atol=1e-3)


def test_swin_layers_and_widths():
    model = build_backbone("swinv2_test")
    data = image_set(6)
    final, _ = extract_features(model, data, to_float)
    first, _ = extract_features(model, data, to_float, layer=0)
    assert final.shape == (6, model.num_features) == (6, 32)
    assert first.shape == (6, 16)  # stage-0 blocks are embed_dim wide
    with torch.no_grad():
        tokens = model.eval().forward_features(all_images(data))
    torch.testing.assert_close(final, tokens.mean(1))


def test_cls_pooling_on_swin_is_a_clear_error():
    with pytest.raises(ValueError, match="class token"):
        extract_features(build_backbone("swinv2_test"), image_set(2), to_float, pooling="cls")


def test_unknown_pooling_and_empty_dataset():
    model = build_backbone("vit_test")
    with pytest.raises(ValueError, match="pooling must be one of"):
        extract_features(model, image_set(2), to_float, pooling="max")
    with pytest.raises(ValueError, match="empty"):
        extract_features(model, [], to_float)


def test_eval_mode_no_grad_and_mode_restored():
    model = build_backbone("vit_test", dropout=0.5, drop_path=0.5).train()
    data = image_set(5)
    a, _ = extract_features(model, data, to_float, batch_size=2)
    b, _ = extract_features(model, data, to_float, batch_size=5)
    torch.testing.assert_close(a, b)  # deterministic (no dropout) and independent of batching
    assert model.training, "the previous mode is restored"
    assert not a.requires_grad


def test_collate_names_missing_keys():
    batch = collate_labelled(image_set(3))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["label"].dtype == torch.long
    with pytest.raises(KeyError, match="'image' and 'label'"):
        collate_labelled([{"image": torch.zeros(3, 4, 4, dtype=torch.uint8)}])
