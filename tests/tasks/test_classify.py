"""The Classify task: loss is label-smoothed cross-entropy on the head's logits of the pooled
tokens, accuracy is the batch accuracy, head init and training hooks as documented."""

import pytest
import torch
import torch.nn.functional as F

from convergent.backbones import build_backbone
from convergent.heads.classifier import ClassifierHead
from convergent.tasks.classify import Classify
from convergent.tasks.configs import ClassifyConfig
from convergent.tasks.registry import build_task


def randomize_head(task: Classify) -> None:
    with torch.no_grad():
        task.head.fc.weight.normal_(0, 0.5)
        task.head.fc.bias.normal_(0, 0.5)


def test_loss_is_label_smoothed_cross_entropy_on_avg_pooled_tokens():
    task = Classify(build_backbone("vit_test"), ClassifyConfig(num_classes=5, label_smoothing=0.1)).eval()
    randomize_head(task)
    x, y = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    out = task({"image": x, "label": y})
    tokens = task.backbone.forward_features(x)  # (6, 17, 32)
    logits = tokens[:, 1:].mean(1) @ task.head.fc.weight.T + task.head.fc.bias
    torch.testing.assert_close(task.predict(x), logits)
    torch.testing.assert_close(out["loss"], F.cross_entropy(logits, y, label_smoothing=0.1))
    assert not torch.allclose(out["loss"], F.cross_entropy(logits, y))  # smoothing is applied


def test_accuracy_is_batch_accuracy():
    task = Classify(build_backbone("swinv2_test"), ClassifyConfig(num_classes=4)).eval()
    randomize_head(task)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        preds = task.predict(x).argmax(1)
    labels = preds.clone()
    labels[:1] = (labels[:1] + 1) % 4  # one wrong of four
    assert task({"image": x, "label": labels})["acc"].item() == pytest.approx(0.75)
    assert task({"image": x, "label": preds})["acc"].item() == 1.0


def test_cls_pooling_reads_the_class_token():
    task = Classify(build_backbone("vit_test"), ClassifyConfig(num_classes=3, pooling="cls")).eval()
    randomize_head(task)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(task.predict(x), task.head(task.backbone.forward_features(x)[:, 0]))


def test_bad_pairings_are_clear_errors():
    with pytest.raises(ValueError, match="class token"):
        Classify(build_backbone("swinv2_test"), ClassifyConfig(num_classes=3, pooling="cls"))
    with pytest.raises(ValueError, match="label_smoothing"):
        Classify(build_backbone("text_test"), ClassifyConfig(num_classes=3, label_smoothing=1.0))
    with pytest.raises(ValueError, match="pooling must be one of"):
        Classify(build_backbone("vit_test"), ClassifyConfig(num_classes=3, pooling="max"))


def test_head_init_and_training_hooks():
    task = build_task("classify", build_backbone("vit_test"), ClassifyConfig(num_classes=7))
    assert isinstance(task, Classify) and task.head.fc.weight.shape == (7, 32)
    w = task.head.fc.weight
    assert 0 < w.std().item() < 1e-4 and w.abs().max().item() <= 4e-5  # MAE: trunc_normal(std=2e-5)
    assert torch.count_nonzero(task.head.fc.bias) == 0
    assert "head.fc.bias" in task.no_weight_decay() and "head.fc.weight" not in task.no_weight_decay()
    assert task.layer_id("head.fc.weight") == task.backbone.num_layers - 1
    assert task.batch_keys == ("image", "label")


def test_backward_reaches_backbone_and_head():
    task = Classify(build_backbone("swinv2_test"), ClassifyConfig(num_classes=3)).train()
    randomize_head(task)
    task({"image": torch.randn(2, 3, 32, 32), "label": torch.tensor([0, 2])})["loss"].backward()
    assert task.head.fc.weight.grad.abs().sum() > 0
    assert task.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


def test_head_dropout():
    head = ClassifierHead(8, 2, dropout=0.5).train()
    torch.nn.init.normal_(head.fc.weight)
    x = torch.ones(64, 8)
    assert not torch.allclose(head(x), head(x))
    assert torch.equal(head.eval()(x), head(x))


def test_cls_pooling_needs_a_first_token_that_sees_the_input():
    """[CLS] of a bidirectional text encoder summarises the text; under causal attention the
    first token sees only itself, so "cls" is refused there (as for Swin)."""
    Classify(build_backbone("text_test"), ClassifyConfig(num_classes=3, pooling="cls"))
    with pytest.raises(ValueError, match="cls"):
        Classify(build_backbone("text_test", causal=True), ClassifyConfig(num_classes=3, pooling="cls"))
